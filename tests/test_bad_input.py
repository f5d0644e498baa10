"""Bad input matrix: one row per (entry point × bad input), over every job in ``JOBS`` and the
public loaders. Each row asserts the error type (``InputError``; ``RecipeError`` is one) and that
the message names the field or file, so a raw traceback or a silent exit 0 fails the row.

Job rows go through ``hf-ext run`` (``hf_ext.cli.main``), which prints an ``HfExtError`` on one line
and returns 2; any other exception propagates and fails the row. Loader rows call the public API.
Nothing here trains a model; tiny models come from ``hf_ext.testing``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from hf_ext.cli import main
from hf_ext.config import JOBS, config_fields, import_path
from hf_ext.errors import InputError

JOB_NAMES = sorted(JOBS)


def _config_cls(job: str) -> type:
    return import_path(JOBS[job].config)


def _fields_of(job: str, tp: type) -> list[str]:
    cls = _config_cls(job)
    hints = typing.get_type_hints(cls)
    return [name for name in config_fields(cls) if hints[name] is tp]


def _run(tmp_path: Path, capsys, recipe: str | bytes, *flags: str) -> str:
    """Run `hf-ext run recipe flags`; assert the one-line clear error (exit 2) and return it."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes(recipe if isinstance(recipe, bytes) else recipe.encode("utf-8"))
    rc = main(["run", str(path), *flags])
    err = capsys.readouterr().err
    assert rc == 2, f"expected a clear error (exit 2), got exit {rc}; stderr: {err[-2000:]}"
    assert "Traceback" not in err
    return err


# -- every job × recipe-level bad input ----------------------------------------------------------
def _string_field(job: str) -> str:
    preferred = {"curate": "text_column", "merge": "method"}
    return preferred.get(job) or ([n for n in _fields_of(job, str) if n != "output_dir"] or ["output_dir"])[0]


def _float_field(job: str) -> str | None:
    floats = _fields_of(job, float)
    return floats[0] if floats else None


def _int_field(job: str) -> str:
    ints = [n for n in _fields_of(job, int) if n != "seed"]
    return ints[0] if ints else "seed"


JOB_CASES = []
for _job in JOB_NAMES:
    _cases = ["unknown_key", "duplicate_key", "non_utf8", "yaml_bool_for_string", "string_for_int", "job_as_list",
              "unwritable_output_dir", "output_dir_is_file", "nan_float"]
    if "seed" in config_fields(_config_cls(_job)):
        _cases.append("negative_seed")
    JOB_CASES += [pytest.param(_job, case, id=f"{_job}-{case}") for case in _cases]


@pytest.mark.parametrize("job, case", JOB_CASES)
def test_job_recipe_bad_input(job, case, tmp_path, capsys):
    head = f"job: {job}\n"
    if case == "unknown_key":
        err = _run(tmp_path, capsys, head + "definitely_not_a_field: 1\n")
        assert "'definitely_not_a_field'" in err and "Valid keys" in err
    elif case == "duplicate_key":
        name = _string_field(job)
        err = _run(tmp_path, capsys, head + f"{name}: a\n# a comment\n{name}: b\n")
        assert f"'{name}'" in err and "lines 2 and 4" in err and "recipe.yaml" in err
    elif case == "non_utf8":
        err = _run(tmp_path, capsys, head.encode() + b"# caf\xe9\n")
        assert "recipe.yaml" in err and "UTF-8" in err and "line 2" in err
    elif case == "yaml_bool_for_string":
        name = _string_field(job)
        err = _run(tmp_path, capsys, head + f"{name}: off\n")
        assert f"'{name}'" in err and "quote it" in err
    elif case == "string_for_int":
        name = _int_field(job)
        err = _run(tmp_path, capsys, head + f"{name}: ten\n")
        assert f"'{name}'" in err and "integer" in err
    elif case == "negative_seed":
        err = _run(tmp_path, capsys, head + "seed: -1\n")
        assert "'seed'" in err and "2**32" in err
    elif case == "job_as_list":
        err = _run(tmp_path, capsys, f"job: [{job}]\n")
        assert f"[{job!r}]" in err and "`job`" in err
    elif case == "unwritable_output_dir":
        err = _run(tmp_path, capsys, head + "output_dir: /proc/hf_ext_cannot_write/out\n")
        assert "output_dir" in err and "/proc/hf_ext_cannot_write/out" in err and "not writable" in err
    elif case == "output_dir_is_file":
        (tmp_path / "a_file").write_text("mine")
        err = _run(tmp_path, capsys, head + f"output_dir: {tmp_path / 'a_file' / 'out'}\n")
        assert "output_dir" in err and "is a file" in err
        assert (tmp_path / "a_file").read_text() == "mine"
    elif case == "nan_float":
        name = _float_field(job)
        if name is None:  # no float field: a NaN where an integer goes
            name = _int_field(job)
            err = _run(tmp_path, capsys, head + f"{name}: .nan\n")
            assert f"'{name}'" in err and "integer" in err
        else:
            err = _run(tmp_path, capsys, head + f"{name}: .nan\n")
            assert f"'{name}'" in err and "NaN" in err


def test_job_matrix_covers_every_job():
    assert {p.values[0] for p in JOB_CASES} == set(JOBS)


# -- flags and single fields -----------------------------------------------------------------------
FIELD_CASES = [
    pytest.param("job: select\noutput_dir: {tmp}/out\n", ["--seed", "-1"], "'seed'", id="select-flag-seed-minus-1"),
    pytest.param("job: select\noutput_dir: {tmp}/out\n", ["--judge_threshold", "nan"], "'judge_threshold'", id="select-flag-nan"),
    pytest.param("job: merge\ndtype: float8\n", [], "'dtype'", id="merge-dtype-float8"),
    pytest.param("job: curate\nhtml: off\n", [], "html: \"off\"", id="curate-html-off"),
    pytest.param("job: select\nsae_dtype: float8\n", [], "'sae_dtype'", id="select-sae-dtype-float8"),
    pytest.param("job: select\njudge_threshold: .nan\n", [], "'judge_threshold'", id="select-nan-threshold"),
    pytest.param("job: no_such_job\n", [], "'no_such_job'", id="unknown-job"),
    pytest.param("job: select\nbudget: 0\n", [], "budget", id="select-budget-0"),
    pytest.param("- job\n- select\n", [], "mapping", id="recipe-not-a-mapping"),
    pytest.param("job: select\nbudget: [1\n", [], "not valid YAML", id="recipe-invalid-yaml"),
]


@pytest.mark.parametrize("recipe, flags, fragment", FIELD_CASES)
def test_recipe_field_bad_input(recipe, flags, fragment, tmp_path, capsys):
    err = _run(tmp_path, capsys, recipe.replace("{tmp}", str(tmp_path)), *flags)
    assert fragment in err


def test_missing_recipe_file_names_it(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
