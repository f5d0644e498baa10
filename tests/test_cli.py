"""The hf-ext command: help lists every field; bad recipes exit 2 with one clear line."""

import dataclasses
import json

import pytest

from hf_ext.cli import main
from hf_ext.select.pipeline import SelectionConfig


def test_top_level_help_is_short_and_lists_every_job(capsys):
    from hf_ext.config import JOBS

    for argv in ([], ["--help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert len(out.splitlines()) <= 40, out
        for job in JOBS:
            assert f"  {job} " in out, job
        assert "budget" not in out  # fields belong to the job's own help


def test_job_help_lists_only_that_jobs_fields(capsys):
    from hf_ext.merge.job import MergeConfig

    for argv in (["select", "--help"], ["run", "recipes/quickstart.yaml", "--help"], ["select", "--budget", "3", "-h"]):
        assert main(argv) == 0, argv
        out = capsys.readouterr().out
        for f in dataclasses.fields(SelectionConfig):
            assert f.name in out, (argv, f.name)
            assert f.metadata["help"].split()[0] in out
        assert "Fields of SelectionConfig" in out and "MergeConfig" not in out
    assert main(["merge", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Fields of MergeConfig" in out and "SelectionConfig" not in out
    assert all(f.name in out for f in dataclasses.fields(MergeConfig))


def test_every_job_is_a_subcommand_with_recipe_positional_or_flag(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("job: select\nbudget: 7\ncompare_methods: []\n")
    for i, argv in enumerate((["select", str(recipe)], ["select", "--recipe", str(recipe)])):
        out = tmp_path / f"o{i}"
        assert main([*argv, "--output_dir", str(out)]) == 0
        assert json.loads((out / "metrics.json").read_text())["budget"] == 7
    capsys.readouterr()
    assert main(["curate", str(recipe)]) == 2
    assert "is for job 'select', not 'curate'" in capsys.readouterr().err
    assert main(["sing"]) == 2
    assert "unknown command 'sing'" in capsys.readouterr().err


def test_components_never_import_the_cli():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*root.glob("hf_ext/**/*.py"), *root.glob("trainers/**/*.py")]:
        if path.name == "cli.py" and path.parent.name == "hf_ext":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "cli" and node.level > 0 or node.module in ("hf_ext.cli",)
            ):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_push_and_pull_help(capsys):
    for cmd in ("push", "pull"):
        with pytest.raises(SystemExit) as exit_info:
            main([cmd, "--help"])
        assert exit_info.value.code == 0
        assert "--hub_endpoint" in capsys.readouterr().out


def test_unknown_recipe_key_exits_2_naming_it(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("job: select\nbugdet: 3\n")
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "Unknown key 'bugdet'" in err and "Did you mean 'budget'?" in err and "Traceback" not in err


def test_missing_recipe_and_unknown_job(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    recipe = tmp_path / "r.yaml"
    recipe.write_text("job: sing\n")
    assert main(["run", str(recipe)]) == 2
    assert "Unknown job 'sing'" in capsys.readouterr().err


def test_run_with_overrides_writes_outputs(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("job: select\nbudget: 50\ncompare_methods: []\n")
    out = tmp_path / "o"
    assert main(["run", str(recipe), "--budget", "20", "--output_dir", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["budget"] == 20 and printed["selected_size"] == 20
    assert json.loads((out / "metrics.json").read_text())["budget"] == 20


def test_select_subcommand_budget_too_large(tmp_path, capsys):
    assert main(["select", "--budget", "5000", "--output_dir", str(tmp_path / "o")]) == 2
    assert "budget=5000 is larger than the pool (2996 examples)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
