"""What the registry contract tests (tests/test_contracts.py) need to build each kind of entry, PEFT's
``testing_common.py`` for hf_ext: synthetic pools for selectors, the featurizer cases, a perturbed
setting for fingerprints, and every recipe of every job (top-level files and the selection jobs nested
in ``compare`` recipes).

Entries come from the registries themselves (``SELECTORS``, ``MERGE_METHODS``, ``STEPS``, ``JOBS``,
``FEATURIZERS``), so a new entry is checked without editing this file; what a new entry may need here
is named by the failing test (a column maker for a new selector column, a featurizer case).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


# --- selectors: a pool with the columns a selector reads ------------------------------------------------------

def _sae_rows(n: int, rng: np.random.Generator, num_latents: int = 64) -> dict[str, list]:
    ids = [sorted(rng.choice(num_latents, size=int(rng.integers(2, 9)), replace=False).tolist()) for _ in range(n)]
    return {"ids": ids, "values": [rng.uniform(0.5, 5.0, size=len(i)).round(3).tolist() for i in ids],
            "count": [len(i) for i in ids], "embedding": rng.normal(size=(n, 8)).round(4).tolist()}


# Column (without a featurizer prefix) -> maker(n, rng) of that column for n rows.
COLUMN_MAKERS: dict[str, Any] = {
    "response_tokens": lambda n, rng: rng.integers(1, 400, size=n).tolist(),
    "judge_score": lambda n, rng: rng.uniform(4.5, 5.0, size=n).round(2).tolist(),  # all pass AlpaGasus' 4.5
    "less_score": lambda n, rng: rng.uniform(-1.0, 1.0, size=n).round(4).tolist(),  # weighted cosines
    **{f"sae_{part}": (lambda part: lambda n, rng: _sae_rows(n, np.random.default_rng(int(rng.integers(1 << 30))))[part])(part)
       for part in ("ids", "values", "count", "embedding")},
}


def make_pool(columns: tuple[str, ...], n: int = 40, seed: int = 0) -> dict[str, list]:
    """A dict-of-columns pool holding `columns` (plus ``instruction``/``output`` text), n rows."""
    rng = np.random.default_rng(seed)
    pool: dict[str, list] = {"instruction": [f"question {i}" for i in range(n)], "output": [f"answer {i}" for i in range(n)]}
    if any(c.startswith("sae_") for c in columns):  # the SAE columns describe the same rows: one draw
        pool.update({f"sae_{k}": v for k, v in _sae_rows(n, rng).items()})
    for column in columns:
        if column not in pool:
            if column not in COLUMN_MAKERS:
                raise KeyError(f"tests/contract_common.py has no maker for column {column!r}: add one to COLUMN_MAKERS.")
            pool[column] = COLUMN_MAKERS[column](n, rng)
    return pool


# --- a changed setting -------------------------------------------------------------------------------------

def changed(value: Any, annotation: Any = None) -> Any:
    """A different value of the same kind (for "the fingerprint changes when a setting changes")."""
    if get_origin(annotation) is Literal:
        others = [a for a in get_args(annotation) if a != value]
        if others:
            return others[0]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, tuple):
        return value[:-1] if value else ("x",)
    if value is None and annotation is not None:
        for arg in get_args(annotation):
            if arg in (int, float, str):
                return arg(1) if arg is not str else "changed"
    return None


def changed_argument(cls: type) -> tuple[str, Any] | None:
    """(name, new value) of the first constructor argument with a default that `changed` can vary."""
    hints = typing.get_type_hints(cls.__init__) if not dataclasses.is_dataclass(cls) else typing.get_type_hints(cls)
    for name, param in inspect.signature(cls).parameters.items():
        if param.default is inspect.Parameter.empty or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        new = changed(param.default, hints.get(name))
        if new is not None and new != param.default:
            return name, new
    return None


# --- featurizers --------------------------------------------------------------------------------------------

def _lora_checkpoint(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(b"")  # found by name; nothing loads at construction
    return str(folder)


def featurizer_cases(tmp: Path) -> dict[str, dict[str, Any]]:
    """Featurizer class name -> {"build": kwargs -> object, "kwargs", "change": (name, value),
    "bad": (kwargs, field the error must name), "columns": columns it adds, "batch_error": (batch, field)}."""
    from hf_ext.select.judge import JudgeScorer
    from hf_ext.select.less.gradients import GradientFeaturizer
    from hf_ext.select.sae.featurizer import SAEFeaturizer
    from hf_ext.select.scores import ResponseLengthScorer

    ckpt = _lora_checkpoint(tmp / "checkpoint-1")
    return {
        "ResponseLengthScorer": dict(build=lambda **kw: ResponseLengthScorer(**kw), kwargs={"tokenizer": None},
                                     change=("response_column", "answer"), columns=["response_tokens"],
                                     batch_error=({"answer": ["x"]}, "output")),
        "JudgeScorer": dict(build=lambda **kw: JudgeScorer(**kw), kwargs={}, change=("dimension", "helpfulness"),
                            columns=["judge_score", "judge_raw"], batch_error=({"instruction": ["x"], "input": [""]}, "output")),
        "SAEFeaturizer": dict(build=lambda **kw: SAEFeaturizer(**kw), kwargs={"model": "tiny", "sae": "org/sae", "layer": 1},
                              change=("threshold", 1.5), bad=({"max_length": 1}, "max_length"),
                              columns=SAEFeaturizer(model="tiny", sae="org/sae").output_columns()),
        "GradientFeaturizer": dict(build=lambda **kw: GradientFeaturizer(**kw), kwargs={"model": "tiny", "checkpoints": [ckpt]},
                                   change=("proj_dim", 64), bad=({"kind": "newton"}, "kind"), columns=[]),
    }


# --- jobs: every recipe of every job -------------------------------------------------------------------------

def job_recipes() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """job -> [(where, values without `job`)]: each recipes/*.yaml, and each selection job nested in a
    ``compare`` recipe's ``selections`` (what the compare job runs)."""
    from hf_ext.config import load_recipe

    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path in sorted(RECIPES.glob("*.yaml")):
        values = load_recipe(path)
        job = values.pop("job", "select")
        found.setdefault(job, []).append((path.name, values))
        for name, spec in (values.get("selections") or {}).items():
            if isinstance(spec, dict) and spec.get("job") not in (None, "existing"):
                spec = dict(spec)
                nested = spec.pop("job")
                defaults = values.get("selection_defaults") or {} if nested == "select" else {}
                found.setdefault(nested, []).append((f"{path.name}:selections.{name}", {**defaults, **spec}))
    return found


def plain(value: Any) -> Any:
    """A config value as YAML can write it (enums by value, nested dataclasses as mappings)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def as_recipe(config: Any) -> dict[str, Any]:
    """The recipe that rebuilds `config`: its init fields that differ from their defaults."""
    out = {}
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = object()  # required: always written
        value = getattr(config, f.name)
        if value != default:
            out[f.name] = plain(value)
    return out


def int_field(config_cls: type) -> str | None:
    """Name of a plain ``int`` field (for the wrong-type check)."""
    hints = typing.get_type_hints(config_cls)
    return next((f.name for f in dataclasses.fields(config_cls) if f.init and hints.get(f.name) is int), None)
