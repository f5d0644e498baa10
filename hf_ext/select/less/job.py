"""The LESS selection job (``job: less_select``): gradient datastores for the pool (Adam
features) and the target set (plain gradients) from every warmup checkpoint, weighted cosine
matching, top-p% selection; writes the selected rows, ``metrics.json``, a plot and a card,
and optionally pushes them to the Hub in one commit.

>>> from hf_ext.select.less.job import LessSelectConfig, run_less_select
>>> run_less_select(LessSelectConfig(warmup_dir="outputs/less/warmup", dataset="pool.jsonl",
...                                  target_dataset="openai/gsm8k", target_split="test"))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...errors import InputError
from ...jobs import HUB_FIELDS, JobOptions, job_output
from ..columns import PoolTargetColumns
from .formatting import TULU_TEMPLATE
from .gradients import GradientFeaturizer
from .matching import SCORE_COLUMN, checkpoint_weights, less_scores, normalize_weights, select_top


@dataclass
class LessSelectConfig(PoolTargetColumns, JobOptions):
    """Settings of the LESS selection job (`job: less_select`); the pool and target data fields are
    :class:`~hf_ext.select.columns.PoolTargetColumns`'.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"HuggingFaceTB/SmolLM2-135M-Instruct"`):
            Base model the warmup LoRA was trained on.
        warmup_dir (`str`, *optional*, defaults to `"outputs/less/warmup"`):
            Warmup output folder holding checkpoint-* folders.
        checkpoints (`list[str]`, *optional*, defaults to `[]`):
            Checkpoint folders to use (default: every checkpoint-* in warmup_dir).
        checkpoint_weights (`list[float]`, *optional*, defaults to `[]`):
            Weights per checkpoint (default: each epoch's mean LR from trainer_state.json).
        prompt_template (`str`, *optional*, defaults to `TULU_TEMPLATE`):
            Prompt template with {prompt} (as in the warmup).
        max_length (`int`, *optional*, defaults to `512`):
            Truncate prompt + response to this many tokens (as in the warmup).
        proj_dim (`int`, *optional*, defaults to `8192`):
            Random projection dimension d (LESS: 8192).
        seed (`int`, *optional*, defaults to `0`):
            Projection seed (shared by pool and target features).
        micro_batch_size (`int`, *optional*, defaults to `8`):
            Examples per batched forward and backward of the per-example gradients.
        map_batch_size (`int`, *optional*, defaults to `64`):
            Rows per datasets.map batch (one projection pass each).
        chunk_size (`int`, *optional*, defaults to `256`):
            Rows per saved datastore chunk (resumption granularity).
        float16 (`bool`, *optional*, defaults to `True`):
            Store features as float16 (LESS stores 2 bytes per dim).
        percent (`float` or `None`, *optional*, defaults to `5.0`):
            Keep the top percent of the pool (LESS: 5). Null to use budget.
        budget (`int` or `None`, *optional*, defaults to `None`):
            Keep this many examples instead of a percent.
        output_dir (`str`, *optional*, defaults to `"outputs/less/select"`):
            Folder for the selection, card and metrics; the resumable datastores go to <output_dir>-datastores.
        overwrite (`bool`, *optional*, defaults to `False`):
            Rebuild datastores made with other settings in output_dir.
    """

    model_name_or_path: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Base model the warmup LoRA was trained on."}
    )
    warmup_dir: str = field(default="outputs/less/warmup", metadata={"help": "Warmup output folder holding checkpoint-* folders."})
    checkpoints: list[str] = field(
        default_factory=list, metadata={"help": "Checkpoint folders to use (default: every checkpoint-* in warmup_dir)."}
    )
    checkpoint_weights: list[float] = field(
        default_factory=list, metadata={"help": "Weights per checkpoint (default: each epoch's mean LR from trainer_state.json)."}
    )
    prompt_template: str = field(default=TULU_TEMPLATE, metadata={"help": "Prompt template with {prompt} (as in the warmup)."})
    max_length: int = field(default=512, metadata={"help": "Truncate prompt + response to this many tokens (as in the warmup)."})
    proj_dim: int = field(default=8192, metadata={"help": "Random projection dimension d (LESS: 8192)."})
    seed: int = field(default=0, metadata={"help": "Projection seed (shared by pool and target features)."})
    micro_batch_size: int = field(default=8, metadata={"help": "Examples per batched forward and backward of the per-example gradients."})
    map_batch_size: int = field(default=64, metadata={"help": "Rows per datasets.map batch (one projection pass each)."})
    chunk_size: int = field(default=256, metadata={"help": "Rows per saved datastore chunk (resumption granularity)."})
    float16: bool = field(default=True, metadata={"help": "Store features as float16 (LESS stores 2 bytes per dim)."})
    percent: Optional[float] = field(default=5.0, metadata={"help": "Keep the top percent of the pool (LESS: 5). Null to use budget."})
    budget: Optional[int] = field(default=None, metadata={"help": "Keep this many examples instead of a percent."})
    output_dir: str = field(default="outputs/less/select", metadata={
        "help": "Folder for the selection, card and metrics; the resumable datastores go to <output_dir>-datastores."})
    overwrite: bool = field(default=False, metadata={"help": "Rebuild datastores made with other settings in output_dir."})

    def __post_init__(self) -> None:
        if (self.percent is None) == (self.budget is None):
            raise InputError("Set exactly one of percent (e.g. 5.0) or budget (a count); set the other to null.")
        super().__post_init__()  # output folder and Hub settings

    def resolved_checkpoints(self) -> list[str]:
        if self.checkpoints:
            return list(self.checkpoints)
        found = sorted(Path(self.warmup_dir).glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
        if not found:
            raise InputError(f"No checkpoint-* folders in warmup_dir {self.warmup_dir!r}; run the less_warmup job first.")
        return [str(p) for p in found]

    def featurizer(self, kind: str) -> GradientFeaturizer:
        target = kind == "sgd"
        return GradientFeaturizer(
            self.model_name_or_path, self.resolved_checkpoints(), kind=kind,
            tokenizer=self.warmup_dir if (Path(self.warmup_dir) / "tokenizer_config.json").is_file() else None,
            proj_dim=self.proj_dim, seed=self.seed, micro_batch_size=self.micro_batch_size, float16=self.float16,
            instruction_column=self.target_instruction_column if target else self.instruction_column,
            input_column=self.target_input_column if target else self.input_column,
            response_column=self.target_response_column if target else self.response_column,
            template=self.prompt_template, max_length=self.max_length,
        )


def run_less_select(config: LessSelectConfig) -> dict[str, Any]:
    """Run the LESS selection job; returns the metrics (also written to ``metrics.json``).

    Args:
        config (`LessSelectConfig`):
            The job's settings: base model, warmup checkpoints, pool and target data, projection, `percent` or
            `budget`, output folder.
    """
    from ...data import load_pool
    from .datastore import build_datastore

    start = time.perf_counter()
    c = config
    pool, source = load_pool(c.dataset, split=c.dataset_split, license=c.dataset_license)
    target, target_source = load_pool(c.target_dataset, split=c.target_split)
    checkpoints = c.resolved_checkpoints()
    weights = normalize_weights(c.checkpoint_weights) if c.checkpoint_weights else checkpoint_weights(checkpoints)
    if len(weights) != len(checkpoints):
        raise InputError(f"checkpoint_weights has {len(weights)} values for {len(checkpoints)} checkpoints.")
    if c.target_subtask_column and c.target_subtask_column not in target.column_names:
        raise InputError(f"target_subtask_column {c.target_subtask_column!r} is not a column of the target set {target.column_names}.")

    store_dir = Path(c.output_dir).with_name(Path(c.output_dir).name + "-datastores")
    pool_store = build_datastore(pool, c.featurizer("adam"), store_dir / "pool", chunk_size=c.chunk_size,
                                 batch_size=c.map_batch_size, overwrite=c.overwrite)
    target_store = build_datastore(target, c.featurizer("sgd"), store_dir / "target", chunk_size=c.chunk_size,
                                   batch_size=c.map_batch_size, overwrite=c.overwrite)
    target_valid = target_store.valid
    if not target_valid.any():
        raise InputError("No target example has response tokens after truncation; raise max_length or check the columns.")
    subtasks = np.asarray(target[c.target_subtask_column])[target_valid] if c.target_subtask_column else None
    scores = less_scores(pool_store.features_array(), target_store.features_array()[target_valid], weights, subtasks)
    scores[~pool_store.valid] = -np.inf
    idx = select_top(scores, k=c.budget, percent=c.percent, valid=pool_store.valid)

    metrics: dict[str, Any] = {
        "method": "less",
        "pool_size": len(pool),
        "target_size": len(target),
        "selected_size": len(idx),
        "checkpoints": [Path(p).name for p in checkpoints],
        "checkpoint_weights": [round(float(w), 6) for w in weights],
        "proj_dim": c.proj_dim,
        "pool_skipped_no_response_tokens": pool_store.num_skipped,
        "target_skipped_no_response_tokens": target_store.num_skipped,
        "score_selected_mean": float(np.mean(scores[idx])) if idx else None,
        "score_pool_mean": float(np.mean(scores[np.isfinite(scores)])),
        "dataset": c.dataset,
        "target_dataset": c.target_dataset,
        "source_datasets": list(source.source_datasets),
        "target_source_datasets": list(target_source.source_datasets),
        "license": source.license or c.dataset_license,
    }
    if c.source_column:
        sources = pool[c.source_column]
        metrics["pool_source_counts"] = dict(Counter(sources).most_common())
        metrics["selected_source_counts"] = dict(Counter(sources[i] for i in idx).most_common())

    selected = pool.select(idx).add_column("pool_index", idx).add_column(SCORE_COLUMN, [float(scores[i]) for i in idx])
    with job_output(c, repo_type="dataset", writer="less_select", commit_message=f"LESS selection of {len(idx)} examples") as out:
        (out.dir / "data").mkdir()
        selected.to_parquet(str(out.dir / "data" / "train-00000-of-00001.parquet"))
        _plot(out.dir / "scores.png", scores, idx)
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)
        out.metrics, out.card = metrics, lambda m: _card(c, source, m)
    return metrics


def _plot(path: Path, scores: np.ndarray, idx: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = scores[np.isfinite(scores)]
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(finite.min(), finite.max(), 40)
    ax.hist(finite, bins=bins, alpha=0.5, label="pool")
    ax.hist(scores[idx], bins=bins, alpha=0.8, label=f"selected ({len(idx)})")
    ax.set_xlabel("LESS score (weighted cosine to the target set)")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _card(c: LessSelectConfig, source, metrics: dict[str, Any]):
    from ...hub.cards import hub_ids, render_dataset_card

    card_data = {
        "license": metrics["license"] or "other",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["hf-ext", "data-selection", "selection-less"],
        "pretty_name": f"{source.name} — LESS selection ({metrics['selected_size']})",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    if source.source_datasets:
        card_data["source_datasets"] = list(source.source_datasets)
    settings = {k: v for k, v in asdict(c).items()
                if k not in HUB_FIELDS | {"warmup_dir", "checkpoints", "overwrite"}}
    for key in ("model_name_or_path", "dataset", "target_dataset"):  # cards carry Hub ids, never local paths
        try:
            settings[key] = hub_ids([settings[key]], field=key)[0]
        except InputError:
            settings[key] = "(local file)"
    return render_dataset_card("dataset_less.md.j2", card_data, source=source, metrics=metrics, settings=settings,
                               plot="scores.png", repo_id=c.hub_model_id,
                               license=card_data["license"])
