"""Glue between the selection job (`hf_ext.select.pipeline`) and SAE selection: the featurizer a
config asks for, an SAE trained on the pool when none is given (cached), and the coverage
report (every method at the budget, coverage-vs-budget curves and plot)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .featurizer import SAEFeaturizer
from .metrics import budget_grid, coverage_curves, feature_coverage, length_feature_corr, plot_coverage
from .selection import EMBEDDING, IDS, feature_matrix
from .train import SAETrainingConfig, collect_activations, train_sae

logger = logging.getLogger(__name__)
SAE_COLUMNS = ("sae_ids", "sae_values", "sae_count", "sae_embedding")


def sae_cache_dir() -> Path:
    from ...models import cache_dir

    return cache_dir().parent / "sae"


def _featurizer(c, sae: str | None, subfolder: str | None) -> SAEFeaturizer:
    return SAEFeaturizer(
        model=c.sae_model, sae=sae, layer=c.sae_layer, sae_subfolder=subfolder, sae_format=c.sae_format,
        threshold=c.sae_threshold, revision=c.sae_model_revision, instruction_column=c.instruction_column,
        input_column=c.input_column, response_column=c.response_column, use_chat_template=c.sae_chat_template,
        max_length=c.sae_max_length, max_batch_tokens=c.sae_batch_tokens, dtype=c.sae_dtype,
    )


def training_config(c) -> SAETrainingConfig:
    return SAETrainingConfig(num_latents=c.sae_num_latents, k=c.sae_k, max_examples=c.sae_train_examples,
                             max_tokens=c.sae_train_tokens, epochs=c.sae_train_epochs, seed=c.seed)


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


def prepare_sae(c, ds) -> tuple[str, str | None, bool]:
    """(SAE folder or repo, subfolder, trained_here). Trains on the pool's activations when
    ``sae_path`` is unset; the result is cached by model, layer, the pool's text and settings."""
    if c.sae_path:
        if c.sae_hookpoint is not None:
            from ...paths import check_relative_name

            check_relative_name(c.sae_hookpoint, field="sae_hookpoint", folder=c.sae_path)
        return c.sae_path, c.sae_hookpoint, False
    reader = _featurizer(c, None, None)
    tc = training_config(c)
    text_columns = [col for col in (c.instruction_column, c.input_column, c.response_column) if col]
    key = json.dumps({"model": c.sae_model, "revision": c.sae_model_revision, "layer": c.sae_layer,
                      "pool": _text_fingerprint(ds, text_columns),
                      "reader": {k: v for k, v in reader.__getstate__().items() if k != "_sae_stamp"}, "train": tc.__dict__},
                     sort_keys=True, default=str)
    folder = sae_cache_dir() / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / "cfg.json").is_file():
        return str(folder), None, True
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "cfg.json").is_file():
            acts = collect_activations(ds, reader, max_examples=tc.max_examples, max_tokens=tc.max_tokens, seed=tc.seed)
            from ...models import hub_id_for

            # cfg.json is published with the selection: Hub ids or nothing, never local paths
            meta = {"model": hub_id_for(c.sae_model), "layer": reader.layer_index, "hook_name": f"layers.{reader.layer_index}",
                    "pool": _pool_id(c.dataset)}
            meta = {k: v for k, v in meta.items() if v is not None}
            sae = train_sae(acts, tc, metadata=meta)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
            try:
                sae.save_pretrained(tmp)
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
    """(dataset, threshold): drop activations at or below the `quantile` of all max-pooled values."""
    from .selection import _arrow

    values = _arrow(ds["sae_values"]).flatten().to_numpy(zero_copy_only=False)
    threshold = float(np.quantile(values, quantile)) if values.size else 0.0
    return ds.map(_KeepAbove(threshold), batched=True, features=ds.features, desc="Thresholding SAE features"), threshold


def build_featurizer(c, ds) -> SAEFeaturizer:
    """The `FEATURIZERS` entry for the SAE columns (trains an SAE first when none is given)."""
    sae, subfolder, _ = prepare_sae(c, ds)
    return _featurizer(c, sae, subfolder)


def sae_summary(c, ds) -> dict[str, Any]:
    """What the card and metrics.json say about the features: model, layer, SAE, threshold, training."""
    from ...models import hub_id_for
    from .model import TopKSAE

    sae, subfolder, trained = prepare_sae(c, ds)
    info = TopKSAE.from_pretrained(sae, subfolder, format=c.sae_format)
    return {"model": hub_id_for(c.sae_model) or c.sae_model, "layer": c.sae_layer, "threshold": c.sae_threshold,
            "sae": "trained on this pool (saved in sae/)" if trained else (c.sae_path + (f"/{subfolder}" if subfolder else "")),
            "num_latents": info.num_latents, "k": info.k, "training": info.metadata.get("training"),
            "truncated_examples": int(sum(ds["sae_truncated"])) if "sae_truncated" in ds.column_names else 0,
            "_folder": sae, "_trained": trained}


def coverage_report(ds, picks: dict[str, list[int]], c, seed: int, plot_path: Path | None) -> dict[str, Any]:
    """Coverage of every method at the budget, curves over budgets (re-running each selector) and a plot."""
    from ..pipeline import SELECTOR_OPTIONS
    from ..selectors import get_selector

    matrix = feature_matrix(ds[IDS])
    embeddings = None
    if EMBEDDING in ds.column_names:
        from .selection import _dense

        embeddings = _dense(ds[EMBEDDING])
    at_budget = {name: feature_coverage(None, idx, embeddings=embeddings, matrix=matrix) for name, idx in picks.items()}
    budgets = budget_grid(c.budget, len(ds))

    def runner(name):
        options = SELECTOR_OPTIONS.get(name, lambda _: {})(c)
        return lambda b: get_selector(name).select(ds, b, seed=seed, **options)

    curves = coverage_curves(matrix, {name: runner(name) for name in picks}, budgets)
    pool = at_budget[next(iter(at_budget))]["pool_coverage"]
    if plot_path is not None:
        plot_coverage(plot_path, budgets, curves, budget=c.budget, pool_coverage=pool)
    corr = length_feature_corr(ds["response_tokens"], ds["sae_count"]) if "response_tokens" in ds.column_names else None
    return {"at_budget": at_budget, "budgets": budgets, "curves": curves, "pool_coverage": pool,
            "length_feature_corr": None if corr is None else round(corr, 4)}


__all__ = ["SAE_COLUMNS", "apply_threshold_quantile", "build_featurizer", "coverage_report", "prepare_sae", "sae_summary", "training_config"]
