"""The hf-ext command: help lists every field; bad recipes exit 2 with one clear line."""

import dataclasses
import json

import pytest

from hf_ext.cli import main
from hf_ext.select.pipeline import SelectionConfig


def test_top_level_and_subcommand_help_list_every_field(capsys):
    for argv in ([], ["--help"], ["run", "--help"], ["select", "--help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        for f in dataclasses.fields(SelectionConfig):
            assert f.name in out, (argv, f.name)
            assert f.metadata["help"].split()[0] in out


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
