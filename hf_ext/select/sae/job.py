"""Glue between the selection job (`hf_ext.select.pipeline`) and SAE selection: the featurizer a
config asks for, the SAE's folder for the featurizer's layer (or an SAE trained on the pool when
none is given, cached), the one SAE threshold step and what it reports, and the coverage report
(every method at the budget, coverage-vs-budget curves and plot).

The functions take the job's `SelectionConfig` (``c``); they read its ``featurizer`` and
``sae_training`` settings through ``c.featurizer_settings()`` and ``c.training_config()``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .featurizer import SAEFeaturizer, resolve_layer
from .metrics import budget_grid, coverage_curves, feature_coverage, length_feature_corr, plot_coverage
from .model import CONFIG
from .selection import EMBEDDING, IDS, feature_matrix
from .train import collect_activations, train_sae

logger = logging.getLogger(__name__)
SAE_COLUMNS = ("sae_ids", "sae_values", "sae_count", "sae_embedding")


def sae_cache_dir() -> Path:
    from ...models import cache_dir

    return cache_dir().parent / "sae"


def _text_fingerprint(ds, columns: list[str]) -> str:
    """sha256 of the text the SAE trains on (the reader's columns, row by row). Unlike
    ``ds._fingerprint`` it stays the same when other columns are added (e.g. the SAE features),
    so the job finds the SAE its featurizer used instead of training a second one."""
    h = hashlib.sha256()
    present = [col for col in columns if col in ds.column_names]
    h.update(json.dumps([present, len(ds)]).encode())
    for batch in ds.select_columns(present).iter(batch_size=10_000):
        for col in present:
            for value in batch[col]:
                h.update(b"\x01" if value is None else value.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


def _layer_index(f: SAEFeaturizer) -> int:
    """The featurizer's block as a 0-based index (a negative layer counts from the model's last)."""
    if f.layer >= 0:
        return f.layer
    from transformers import AutoConfig

    from ...models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(f.model, f.revision), revision=f.revision)
    return resolve_layer(f.layer, int(config.num_hidden_layers), f.model)


def hookpoint_candidates(layer: int, sae_format: str = "auto") -> list[str]:
    """Subfolder names of block `layer`'s SAE: sparsify's ``layers.N``, sae-lens' ``blocks.N.hook_resid_post``.

    Args:
        layer (`int`):
            The block, as a 0-based index.
        sae_format (`str`, *optional*, defaults to `"auto"`):
            ``"sparsify"`` or ``"sae_lens"`` for that layout's name only; anything else (``"auto"``) gives both.
    """
    names = {"sparsify": [f"layers.{layer}"], "sae_lens": [f"blocks.{layer}.hook_resid_post"]}
    return names.get(sae_format) or names["sparsify"] + names["sae_lens"]


def sae_hookpoint(f: SAEFeaturizer) -> str | None:
    """The subfolder of ``f.sae`` holding the SAE of ``f.layer``: None when the folder or repo is one
    SAE (``cfg.json`` at its root), else the sparsify or sae-lens name of that layer. The layer is
    the one source of truth; a Hub repo is asked for its ``cfg.json`` files only.

    Args:
        f (`SAEFeaturizer`):
            The featurizer settings: its `sae` (folder or Hub repo), `layer`, `model`, `revision` and `sae_format`.
    """
    root = Path(f.sae).expanduser()
    if not root.exists():
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(str(f.sae))
        except HFValidationError:
            raise InputError(f"featurizer.sae {str(f.sae)!r} is neither an existing folder nor a Hub repo id.") from None
        from ...hub import pull

        root = Path(pull(str(f.sae), repo_type="model", allow_patterns=[CONFIG, f"*/{CONFIG}"]))
    if (root / CONFIG).is_file():  # one SAE: when its cfg.json names its layer, that must be featurizer.layer's
        from ...config import read_json_object

        cfg = read_json_object(root / CONFIG, "re-download the SAE or re-save it with TopKSAE.save_pretrained")
        meta = cfg.get("hf_ext") if isinstance(cfg.get("hf_ext"), dict) else {}
        named = meta.get("layer")
        if named is None:
            match = re.fullmatch(r"(?:blocks|layers|model\.layers)\.(\d+)(?:\.hook_resid_post)?", str(cfg.get("hook_name") or ""))
            named = int(match.group(1)) if match else None
        if isinstance(named, int) and named != _layer_index(f):
            raise InputError(f"featurizer.sae {str(f.sae)!r} was trained on block {named}, but featurizer.layer is {f.layer} "
                             f"(block {_layer_index(f)}): set featurizer.layer to {named}.")
        return None
    layer = _layer_index(f)
    candidates = hookpoint_candidates(layer, f.sae_format)
    for name in candidates:
        if (root / name / CONFIG).is_file():
            return name
    found = sorted(p.parent.name for p in root.glob(f"*/{CONFIG}"))
    raise InputError(f"featurizer.sae {str(f.sae)!r} has no SAE for featurizer.layer {f.layer} (block {layer}): no "
                     f"{' or '.join(candidates)} folder with {CONFIG}. Its SAE folders: {found or 'none'}; set featurizer.layer "
                     "to the block of one of them.")


def prepare_sae(c, ds) -> tuple[str, str | None, bool]:
    """(SAE folder or repo, subfolder, trained_here). Trains on the pool's activations when
    ``featurizer.sae`` is unset; the result is cached by model, layer, the pool's text and settings.

    Args:
        c (`SelectionConfig`):
            The selection job's config: its `featurizer` and `sae_training` settings and the pool's text columns.
        ds (`datasets.Dataset`):
            The pool whose activations an SAE is trained on when none is given.
    """
    sae = c.featurizer.get("sae")
    if sae:
        return sae, sae_hookpoint(c.featurizer_settings()), False
    reader = c.featurizer_settings(sae=None, sae_subfolder=None)
    tc = c.training_config()
    text_columns = [col for col in (c.instruction_column, c.input_column, c.response_column) if col]
    key = json.dumps({"model": reader.model, "revision": reader.revision, "layer": reader.layer,
                      "pool": _text_fingerprint(ds, text_columns),
                      "reader": {k: v for k, v in reader.__getstate__().items() if k != "_sae_stamp"}, "train": tc.__dict__},
                     sort_keys=True, default=str)
    folder = sae_cache_dir() / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / CONFIG).is_file():
        return str(folder), None, True
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / CONFIG).is_file():
            acts = collect_activations(ds, reader, max_examples=tc.max_examples, max_tokens=tc.max_tokens, seed=tc.seed)
            from ...models import hub_id_for

            # cfg.json is published with the selection: Hub ids or nothing, never local paths
            meta = {"model": hub_id_for(reader.model), "layer": reader.layer_index, "hook_name": f"layers.{reader.layer_index}",
                    "pool": _pool_id(c.dataset)}
            meta = {k: v for k, v in meta.items() if v is not None}
            trained = train_sae(acts, tc, metadata=meta)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
            try:
                trained.save_pretrained(tmp)
                os.rename(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return str(folder), None, True


def _pool_id(dataset: str) -> str | None:
    from ...data import BUNDLED
    from ...models import hub_id_for

    return dataset if dataset in BUNDLED else hub_id_for(dataset)


@dataclass
class _KeepAbove:
    """Map function: keep the ids whose max-pooled value is above `threshold` (sparse, per batch)."""

    threshold: float

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        ids, values = [], []
        for i, v in zip(batch["sae_ids"], batch["sae_values"]):
            v = np.asarray(v, dtype=np.float32)
            keep = v > self.threshold
            ids.append(np.asarray(i, dtype=np.int32)[keep])
            values.append(v[keep])
        return {"sae_ids": ids, "sae_values": values, "sae_count": [len(x) for x in ids]}


def apply_threshold_quantile(ds, quantile: float):
    """(dataset, threshold): drop activations at or below the `quantile` of all max-pooled values.

    Args:
        ds (`datasets.Dataset`):
            The featurized pool, with ``sae_ids`` and ``sae_values``.
        quantile (`float`):
            Quantile, in [0, 1], of the pool's max-pooled values (all rows and latents together) used as threshold.
    """
    from .selection import _arrow

    values = _arrow(ds["sae_values"]).flatten().to_numpy(zero_copy_only=False)
    threshold = float(np.quantile(values, quantile)) if values.size else 0.0
    return ds.map(_KeepAbove(threshold), batched=True, features=ds.features, desc="Thresholding SAE features"), threshold


def apply_threshold(ds, c) -> tuple[Any, dict[str, Any]]:
    """The job's one SAE threshold: (dataset, what metrics.json and the card report).

    With ``threshold_quantile`` the latents at or below that quantile of the pool's values are
    dropped here; else the featurizer already kept the values above ``featurizer.threshold``.

    Args:
        ds (`datasets.Dataset`):
            The featurized pool, with ``sae_ids`` and ``sae_values``.
        c (`SelectionConfig`):
            The selection job's config: its `threshold_quantile` and the featurizer's `threshold`.
    """
    if c.threshold_quantile is None:
        return ds, {"threshold": c.featurizer_settings().threshold}
    ds, threshold = apply_threshold_quantile(ds, c.threshold_quantile)
    return ds, {"threshold": round(threshold, 4), "threshold_quantile": c.threshold_quantile}


def build_featurizer(c, ds) -> SAEFeaturizer:
    """The `FEATURIZERS` entry for the SAE columns (trains an SAE first when none is given).

    Args:
        c (`SelectionConfig`):
            The selection job's config: its `featurizer` and `sae_training` settings.
        ds (`datasets.Dataset`):
            The pool (the SAE is trained on its activations when none is given).
    """
    sae, subfolder, _ = prepare_sae(c, ds)
    return c.featurizer_settings(sae=sae, sae_subfolder=subfolder)


def sae_summary(c, ds, threshold: dict[str, Any]) -> dict[str, Any]:
    """What the card and metrics.json say about the features: model, layer, SAE, the threshold
    (`threshold`, from :func:`apply_threshold`), training.

    Args:
        c (`SelectionConfig`):
            The selection job's config.
        ds (`datasets.Dataset`):
            The featurized pool (its ``sae_truncated`` column is counted).
        threshold (`dict[str, Any]`):
            What :func:`apply_threshold` reports (``threshold`` and, when used, ``threshold_quantile``).
    """
    from ...models import hub_id_for
    from .model import TopKSAE

    f = c.featurizer_settings()
    sae, subfolder, trained = prepare_sae(c, ds)
    info = TopKSAE.from_pretrained(sae, subfolder, format=f.sae_format)
    return {"model": hub_id_for(f.model) or f.model, "layer": f.layer, **threshold,
            "sae": "trained on this pool (saved in sae/)" if trained else (sae + (f"/{subfolder}" if subfolder else "")),
            "num_latents": info.num_latents, "k": info.k, "training": info.metadata.get("training"),
            "truncated_examples": int(sum(ds["sae_truncated"])) if "sae_truncated" in ds.column_names else 0,
            "_folder": sae, "_trained": trained}


def coverage_report(ds, picks: dict[str, list[int]], c, seed: int, plot_path: Path | None) -> dict[str, Any]:
    """Coverage of every method at the budget, curves over budgets (re-running each selector) and a plot.

    Args:
        ds (`datasets.Dataset`):
            The featurized pool, with ``sae_ids`` (and ``sae_embedding``, ``response_tokens`` and ``sae_count`` when
            present, for diversity and the length/feature correlation).
        picks (`dict[str, list[int]]`):
            Pool row indices selected by each method at the budget, keyed by method name.
        c (`SelectionConfig`):
            The selection job's config: its `budget` and each method's options.
        seed (`int`):
            Seed passed to every selector re-run for the curves.
        plot_path (`Path` or `None`):
            Where the coverage plot (PNG) is written; `None` draws none.
    """
    from ..selectors import get_selector

    matrix = feature_matrix(ds[IDS])
    embeddings = None
    if EMBEDDING in ds.column_names:
        from .selection import _dense

        embeddings = _dense(ds[EMBEDDING])
    at_budget = {name: feature_coverage(None, idx, embeddings=embeddings, matrix=matrix) for name, idx in picks.items()}
    budgets = budget_grid(c.budget, len(ds))

    def runner(name):
        options = c.selector_options(name)
        return lambda b: get_selector(name).select(ds, b, seed=seed, **options)

    curves = coverage_curves(matrix, {name: runner(name) for name in picks}, budgets)
    pool = at_budget[next(iter(at_budget))]["pool_coverage"]
    if plot_path is not None:
        plot_coverage(plot_path, budgets, curves, budget=c.budget, pool_coverage=pool)
    corr = length_feature_corr(ds["response_tokens"], ds["sae_count"]) if "response_tokens" in ds.column_names else None
    return {"at_budget": at_budget, "budgets": budgets, "curves": curves, "pool_coverage": pool,
            "length_feature_corr": None if corr is None else round(corr, 4)}


__all__ = ["SAE_COLUMNS", "apply_threshold", "apply_threshold_quantile", "build_featurizer", "coverage_report",
           "hookpoint_candidates", "prepare_sae", "sae_hookpoint", "sae_summary"]
