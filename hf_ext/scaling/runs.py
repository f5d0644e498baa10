"""Training runs as data: a small column table, its loaders, and rules that pick fit points.

A `Runs` table has one row per finished training run with at least ``N`` (parameters) and
``D`` (training tokens) or ``M`` (tokens per parameter, M = D/N), usually ``loss`` and any
number of other columns (error averages, names). It loads from a CSV/JSON Lines file, a
`datasets.Dataset`, a pandas DataFrame, a list of dicts, Trainer ``trainer_state.json``
logs, or the over-training paper's released files (`hf_ext.scaling.paper`).

>>> runs = Runs([{"model": "s", "N": 1e7, "D": 2e8, "loss": 3.9}, {"model": "m", "N": 8e7, "D": 1.6e9, "loss": 3.3}])
>>> runs["M"].tolist()
[20.0, 20.0]
>>> FitRule.parse(["10M@20"]).select(runs)["model"]
['s']
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

NUMERIC = ("N", "D", "M", "loss")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kKmMbBtT]?)\s*$")
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_size(value: str | float) -> float:
    """'11M' -> 1.1e7, '1.4B' -> 1.4e9, 3e8 -> 3e8.

    Args:
        value (`str` or `float`):
            A number, or a number with a suffix K, M, B or T (any case).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _SIZE.match(str(value))
    if not match:
        raise InputError(f"Cannot read {value!r} as a size; use a number or a label such as '11M', '1.4B'.")
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


def size_label(n: float) -> str:
    """1.4398e9 -> '1.4B', 1.0569e7 -> '11M' (two significant figures, the paper's style).

    Args:
        n (`float`):
            A parameter count.
    """
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.2g}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return f"{n:.2g}"


def _to_float(value: Any) -> float:
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN", "null", "None")):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"Expected a number, got {value!r}.") from None


class Runs:
    """A table of training runs (rows are dicts; numeric columns come back as float arrays).

    Args:
        records (`Iterable[Mapping[str, Any]]`):
            One mapping per run. `N`, `D`, `M` and `loss` are read as floats (empty, `None` or `"nan"` become
            NaN); a missing `M` is computed as D / N and a missing `D` as M·N. Counts and losses must be
            positive.
        source (`str`, *optional*, defaults to `""`):
            Where the runs came from (a file path, `"trainer_state"`), kept by `select` and `filter`.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]], *, source: str = ""):
        self.records: list[dict[str, Any]] = []
        self.source = source
        for i, rec in enumerate(records):
            rec = dict(rec)
            for key in NUMERIC:
                if key in rec:
                    rec[key] = _to_float(rec[key])
            if "M" not in rec and "N" in rec and "D" in rec:
                rec["M"] = rec["D"] / rec["N"]
            if "D" not in rec and "N" in rec and "M" in rec:
                rec["D"] = rec["M"] * rec["N"]
            for key in ("N", "D", "M"):
                if key in rec and not math.isnan(rec[key]) and rec[key] <= 0:
                    raise InputError(
                        f"Run {i}{_name(rec)} has {key} = {rec[key]!r}; parameter and token counts must be positive. "
                        "Fix or drop that run."
                    )
            if "loss" in rec and not math.isnan(rec["loss"]) and rec["loss"] <= 0:
                raise InputError(f"Run {i}{_name(rec)} has loss = {rec['loss']!r}; a cross-entropy loss must be positive.")
            self.records.append(rec)

    # ---- table access ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def column_names(self) -> list[str]:
        names: dict[str, None] = {}
        for rec in self.records:
            names.update(dict.fromkeys(rec))
        return list(names)

    def __getitem__(self, key: str | int):
        if isinstance(key, int):
            return self.records[key]
        if key not in self.column_names:
            raise KeyError(key)
        values = [rec.get(key) for rec in self.records]
        if all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return np.array([math.nan if v is None else v for v in values], dtype=float)
        return values

    def select(self, indices: Iterable[int]) -> Runs:
        return Runs([self.records[i] for i in indices], source=self.source)

    def filter(self, fn: Callable[[dict[str, Any]], bool]) -> Runs:
        return Runs([r for r in self.records if fn(r)], source=self.source)

    def where(self, **equals: Any) -> Runs:
        """Rows whose columns equal the given values, e.g. ``runs.where(dataset="rpj")``."""
        return self.filter(lambda r: all(r.get(k) == v for k, v in equals.items()))

    def concat(self, other: Runs) -> Runs:
        return Runs(self.records + other.records, source=self.source)

    def to_records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records]

    def to_dataset(self):
        """As a `datasets.Dataset` (for `push_to_hub`, `map`, ...)."""
        import datasets

        return datasets.Dataset.from_list(self.to_records())

    def to_jsonl(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, default=float) + "\n" for r in self.records), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        return f"Runs({len(self)} runs, columns={self.column_names})"


def _name(rec: Mapping[str, Any]) -> str:
    name = rec.get("name") or rec.get("model")
    return f" ({name})" if name else ""


# ---- loaders ---------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read()


def load_runs(source: Any, *, columns: Mapping[str, str] | None = None) -> Runs:
    """Runs from a table: a CSV / JSON Lines / JSON file (optionally .gz), a
    `datasets.Dataset`, a pandas DataFrame, or a list of dicts.

    Args:
        source (`Any`):
            The table.
        columns (`Mapping[str, str]` or `None`, *optional*, defaults to `None`):
            Rename map from the table's names to ours, e.g. ``{"params": "N", "tokens": "D", "eval_loss":
            "loss"}``.
    """
    columns = dict(columns or {})
    label = ""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"Runs file {str(path)!r} does not exist.")
        label = str(path)
        text = _read_text(path)
        stem = path.name[:-3] if path.name.endswith(".gz") else path.name
        if stem.endswith(".csv"):
            records = list(csv.DictReader(io.StringIO(text)))
        elif stem.endswith(".jsonl"):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif stem.endswith(".json"):
            data = json.loads(text)
            records = data if isinstance(data, list) else data.get("runs", [])
        else:
            raise InputError(f"Unknown runs file type {path.name!r}; use .csv, .jsonl or .json (optionally .gz).")
    elif hasattr(source, "to_dict") and hasattr(source, "columns") and not hasattr(source, "column_names"):  # pandas
        records = source.to_dict("records")
    elif hasattr(source, "column_names") and hasattr(source, "to_list"):  # datasets.Dataset
        records = source.to_list()
    elif isinstance(source, Runs):
        records = source.to_records()
    else:
        records = list(source)
    records = [{columns.get(k, k): v for k, v in dict(r).items()} for r in records]
    unknown = [k for k in columns if records and all(k not in r and columns[k] not in r for r in records)]
    if unknown:
        raise InputError(f"columns= renames {unknown}, which the table does not have.")
    runs = Runs(records, source=label)
    if len(runs) and "N" not in runs.column_names:
        raise InputError(
            f"The runs table has no 'N' (parameter count) column; columns: {runs.column_names}. "
            "Rename yours with columns={'your_name': 'N'}."
        )
    return runs


def count_parameters(folder: str | os.PathLike) -> int:
    """Parameters in a saved model folder, read from safetensors headers (no weights loaded).

    Args:
        folder (`str` or `os.PathLike`):
            Folder holding the model's `*.safetensors` files (every one of them is counted).
    """
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise InputError(f"No *.safetensors in {str(folder)!r} to count parameters from; pass n_params=.")
    total = 0
    for file in files:
        with safe_open(str(file), framework="np") as f:
            for name in f.keys():
                total += int(np.prod(f.get_slice(name).get_shape()))
    return total


def runs_from_trainer_state(
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    n_params: int | Mapping[str, int] | None = None,
    tokens_per_step: int | None = None,
    loss_key: str = "eval_loss",
    extra: Mapping[str, Any] | None = None,
) -> Runs:
    """One run per Trainer output: the last logged `loss_key` and the tokens seen.

    Each path is a ``trainer_state.json`` or a folder holding one (a checkpoint or an output
    dir). Tokens come from ``num_input_tokens_seen`` (Trainer's ``include_num_input_tokens_seen``)
    when logged, else ``global_step × tokens_per_step``. Parameters come from `n_params`
    (an int, or a dict by path) or from the folder's safetensors.

    Args:
        paths (`Sequence[str | os.PathLike]`, `str` or `os.PathLike`):
            One or more `trainer_state.json` files or folders holding one; each gives one run.
        n_params (`int`, `Mapping[str, int]` or `None`, *optional*, defaults to `None`):
            Parameter count of every run, or a dict from path (as passed) to count; a run without one is counted
            from the `*.safetensors` next to its `trainer_state.json`.
        tokens_per_step (`int` or `None`, *optional*, defaults to `None`):
            Tokens per optimizer step (batch size × block size × gradient accumulation × processes), used when
            `num_input_tokens_seen` was not logged.
        loss_key (`str`, *optional*, defaults to `"eval_loss"`):
            Log-history key whose last value becomes the run's `loss`.
        extra (`Mapping[str, Any]` or `None`, *optional*, defaults to `None`):
            Columns added to every run (e.g. `{"dataset": "fineweb"}`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records = []
    for p in paths:
        p = Path(p)
        state_file = p / "trainer_state.json" if p.is_dir() else p
        if not state_file.is_file():
            raise InputError(f"No trainer_state.json at {str(p)!r}; save it with trainer.save_state() or point at a checkpoint folder.")
        state = json.loads(state_file.read_text(encoding="utf-8"))
        history = state.get("log_history", [])
        losses = [h for h in history if loss_key in h]
        if not losses:
            keys = sorted({k for h in history for k in h})
            raise InputError(f"{state_file} logs no {loss_key!r} (keys: {keys}); pass loss_key= or evaluate before saving.")
        last = losses[-1]
        tokens = last.get("num_input_tokens_seen") or state.get("num_input_tokens_seen")
        if not tokens:
            if tokens_per_step is None:
                raise InputError(
                    f"{state_file} does not log num_input_tokens_seen; pass tokens_per_step= (batch size × block size × "
                    "gradient accumulation × processes) or train with include_num_input_tokens_seen=True."
                )
            tokens = state.get("global_step", last.get("step", 0)) * tokens_per_step
        if isinstance(n_params, Mapping):
            n = n_params.get(str(p))
        else:
            n = n_params
        if n is None:
            n = count_parameters(state_file.parent)
        records.append({"name": state_file.parent.name, "N": n, "D": tokens, "loss": last[loss_key], "path": str(p), **(extra or {})})
    return Runs(records, source="trainer_state")


# ---- fit-point rules -------------------------------------------------------------------
def _match_size(runs: Runs, size: str | float) -> float:
    """The run size (N) that `size` names: a model name, a number, or a label like '11M'."""
    models = runs["model"] if "model" in runs.column_names else [None] * len(runs)
    named = {runs.records[i]["N"] for i, m in enumerate(models) if m == size}
    if named:
        return named.pop()
    target = parse_size(size)
    sizes = sorted(set(runs["N"].tolist()))
    best = min(sizes, key=lambda n: abs(math.log(n / target)))
    if abs(math.log(best / target)) > math.log(1.15):
        raise InputError(f"No run size matches {size!r}; sizes present: {[size_label(n) for n in sizes]}.")
    return best


@dataclass(frozen=True)
class FitRule:
    """Which runs are fit points: (size, tokens-per-parameter) pairs, e.g. ``"11M@20"``.

    A size is a model name, a parameter count, or a label such as ``"1.4B"`` matched to the
    nearest run size (within 15%). Each pair must match exactly one run.

    Args:
        points (`tuple[tuple[str | float, float], ...]`):
            (size, tokens per parameter M) pairs; `FitRule.parse` builds them from `"SIZE@M"` strings.
    """

    points: tuple[tuple[str | float, float], ...]

    @classmethod
    def parse(cls, specs: Sequence[str | tuple[str | float, float]]) -> FitRule:
        points = []
        for spec in specs:
            if isinstance(spec, str):
                size, sep, mult = spec.partition("@")
                if not sep:
                    raise InputError(f"Fit point {spec!r} must look like 'SIZE@M', e.g. '11M@20'.")
                points.append((size.strip(), float(mult)))
            else:
                size, mult = spec
                points.append((size, float(mult)))
        return cls(tuple(points))

    def __add__(self, other: FitRule) -> FitRule:
        return FitRule(self.points + other.points)

    def select(self, runs: Runs) -> Runs:
        if not len(runs):
            raise InputError("No runs to select fit points from.")
        chosen = []
        for size, mult in self.points:
            n = _match_size(runs, size)
            hits = [i for i, r in enumerate(runs.records) if r["N"] == n and math.isclose(r["M"], mult, rel_tol=1e-3)]
            if not hits:
                present = sorted({r["M"] for r in runs.records if r["N"] == n})
                raise InputError(f"No run at size {size!r} with M = {mult:g}; that size has M in {present}.")
            if len(hits) > 1:
                raise InputError(
                    f"{len(hits)} runs match {size!r}@{mult:g}; filter the runs first (e.g. runs.where(dataset=...))."
                )
            chosen.append(hits[0])
        return runs.select(chosen)

    def specs(self) -> list[str]:
        return [f"{s if isinstance(s, str) else size_label(s)}@{m:g}" for s, m in self.points]


def split_largest(runs: Runs) -> tuple[Runs, Runs]:
    """(runs below the largest size, runs at the largest size): fit small, predict large.

    Args:
        runs (`Runs`):
            Runs with an `N` column.
    """
    largest = max(runs["N"])
    return runs.filter(lambda r: r["N"] < largest), runs.filter(lambda r: r["N"] == largest)
