"""The selection job: load a pool, add score columns with ``datasets.map``, select a budget
with one method (and compare others), write the dataset, a card and ``metrics.json``, and
optionally push it all to the Hub in one commit.

This is what ``hf-ext run recipes/quickstart.yaml`` runs. From Python:

>>> from hf_ext.select.pipeline import SelectionConfig, run_selection
>>> metrics = run_selection(SelectionConfig(budget=100, output_dir="outputs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..data import DatasetSource, load_pool
from ..errors import InputError
from ..jobs import HUB_FIELDS, JobOptions, job_output
from .columns import check_budget, require_columns, require_rows
from .judge import JudgeScorer
from .scores import ResponseLengthScorer
from .selectors import SELECTORS, get_selector
from .stats import category_counts, selection_stats

logger = logging.getLogger(__name__)


@dataclass
class SelectionConfig(JobOptions):
    """Settings of the selection job (`job: select` in a recipe)."""

    dataset: str = field(
        default="dolly_alpagasus_3k",
        metadata={"help": "Pool to select from: a bundled name (dolly_alpagasus_3k), a local file/folder, or a Hub dataset id."},
    )
    split: str = field(default="train", metadata={"help": "Split of the pool to use."})
    dataset_license: Optional[str] = field(
        default=None, metadata={"help": "Licence of the pool, for the card, when it is not bundled (e.g. cc-by-4.0)."}
    )
    instruction_column: str = field(default="instruction", metadata={"help": "Column with the instruction."})
    input_column: Optional[str] = field(default="input", metadata={"help": "Column with the optional input/context (null if none)."})
    response_column: str = field(default="output", metadata={"help": "Column with the response."})
    category_column: Optional[str] = field(
        default="category", metadata={"help": "Column with a category to count per selection (null if none)."}
    )
    method: str = field(
        default="longest",
        metadata={"help": f"Selection method whose picks are written and pushed. Registered: {sorted(SELECTORS)}."},
    )
    compare_methods: list[str] = field(
        default_factory=lambda: ["random"],
        metadata={"help": "Other methods to run on the same pool and report beside `method` (statistics only)."},
    )
    budget: int = field(default=300, metadata={"help": "Number of examples to select."})
    seed: int = field(default=42, metadata={"help": "Seed for random selection and any sampling."})
    tokenizer: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Tokenizer (Hub id or path) that counts response tokens for `longest` and the statistics."},
    )
    judge_backend: Literal["none", "transformers", "openai"] = field(
        default="none",
        metadata={"help": "AlpaGasus judge: 'transformers' (local model), 'openai' (OpenAI-compatible server) or 'none'."},
    )
    judge_model: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        metadata={"help": "Judge model: a Hub id/path (transformers) or the served model name (openai)."},
    )
    judge_base_url: Optional[str] = field(
        default=None, metadata={"help": "Base URL of the OpenAI-compatible server, e.g. http://localhost:8000/v1."}
    )
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the server's API key (never printed)."}
    )
    judge_max_new_tokens: int = field(default=32, metadata={"help": "Tokens the judge may generate per example."})
    judge_batch_size: int = field(default=8, metadata={"help": "Examples per judge generate call / request batch."})
    judge_threshold: float = field(default=4.5, metadata={"help": "AlpaGasus keeps examples scored at or above this (0-5)."})
    sae_model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Model whose residual stream the SAE reads (sae_* methods, kcenter): Hub id or path."},
    )
    sae_model_revision: Optional[str] = field(default=None, metadata={"help": "Revision of sae_model (None: default branch)."})
    sae_layer: int = field(default=-1, metadata={"help": "Block whose output the SAE reads (0-based; -1 = last). The forward stops there."})
    sae_path: Optional[str] = field(
        default=None,
        metadata={"help": "SAE folder or Hub repo (sparsify or sae-lens layout). None: train a TopK SAE on the pool's activations."},
    )
    sae_hookpoint: Optional[str] = field(
        default=None, metadata={"help": "Subfolder of sae_path holding the SAE, e.g. layers.15 or blocks.15.hook_resid_post."}
    )
    sae_format: Literal["auto", "sparsify", "sae_lens"] = field(default="auto", metadata={"help": "Layout of the SAE files."})
    sae_threshold: float = field(default=0.0, metadata={"help": "A latent counts as activated when above this (paper: 10 on its SAE)."})
    sae_threshold_quantile: Optional[float] = field(
        default=None,
        metadata={"help": "Instead of an absolute threshold, keep latents above this quantile (0-1) of the pool's max-pooled "
                          "values; portable across SAEs whose activation scale differs (e.g. ones trained here)."},
    )
    sae_max_length: int = field(default=512, metadata={"help": "Tokens per example at most; longer ones are truncated and counted."})
    sae_batch_tokens: int = field(default=8192, metadata={"help": "Padded tokens per forward micro-batch of the featurizer."})
    sae_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32",
        metadata={"help": "Precision of the featurizer's model and SAE: bfloat16 is ~2x faster on GPUs and AMX CPUs (the paper's)."},
    )
    sae_chat_template: bool = field(
        default=True, metadata={"help": "Format instruction + response with the model's chat template when it has one."}
    )
    sae_num_latents: int = field(default=4096, metadata={"help": "Width of the SAE trained on the pool (when sae_path is None)."})
    sae_k: int = field(default=32, metadata={"help": "k of the TopK SAE trained on the pool."})
    sae_train_examples: int = field(default=1000, metadata={"help": "Pool examples whose activations train the SAE."})
    sae_train_tokens: int = field(default=200_000, metadata={"help": "Activation tokens used for SAE training at most."})
    sae_train_epochs: int = field(default=2, metadata={"help": "Passes over the training activations."})
    simscale_similarity: Literal["jaccard", "cosine"] = field(
        default="jaccard", metadata={"help": "sae_simscale: Jaccard on feature ids or cosine on max-pooled values."}
    )
    output_dir: str = field(default="outputs/quickstart", metadata={"help": "Folder for the dataset, card and metrics."})
    map_batch_size: int = field(default=1000, metadata={"help": "Batch size of the datasets.map scoring passes."})
    num_proc: Optional[int] = field(default=None, metadata={"help": "Processes for datasets.map (None: one)."})

    def __post_init__(self) -> None:
        for name in [self.method, *self.compare_methods]:
            get_selector(name)  # fails early, naming the registered methods
        if self.budget <= 0:
            raise InputError(f"budget must be a positive integer, got {self.budget}.")
        if self.sae_threshold_quantile is not None and not 0 <= self.sae_threshold_quantile < 1:
            raise InputError(f"sae_threshold_quantile must be in [0, 1), got {self.sae_threshold_quantile}.")
        if self.judge_backend == "openai" and not self.judge_base_url:
            raise InputError("judge_backend='openai' needs judge_base_url (e.g. http://localhost:8000/v1).")
        if self.sae_hookpoint is not None:  # joined to sae_path: it must stay inside it
            from ..paths import check_relative_name

            check_relative_name(self.sae_hookpoint, field="sae_hookpoint", folder=self.sae_path or "sae_path")
        super().__post_init__()  # output folder and Hub settings

    @property
    def methods(self) -> list[str]:
        """`method` first, then the comparisons, without repeats."""
        return list(dict.fromkeys([self.method, *self.compare_methods]))


# Column -> builder of the map function that produces it. Featurizers of other methods
# (SAE features, gradients) register here so a selector's `requires` can be met.
FEATURIZERS: dict[str, Callable[[SelectionConfig], Callable]] = {
    "response_tokens": lambda c: ResponseLengthScorer(tokenizer=c.tokenizer, response_column=c.response_column),
    "judge_score": lambda c: JudgeScorer(
        backend=_judge_backend(c),
        instruction_column=c.instruction_column,
        input_column=c.input_column,
        response_column=c.response_column,
    ),
}


def _sae_featurizer(c: SelectionConfig, ds):
    from .sae.job import build_featurizer

    return build_featurizer(c, ds)


# One map pass adds all SAE columns; builders that take (config, pool) get the pool.
FEATURIZERS.update({name: _sae_featurizer for name in ("sae_ids", "sae_values", "sae_count", "sae_embedding")})

# Method -> builder of extra keyword arguments for its selector.
SELECTOR_OPTIONS: dict[str, Callable[[SelectionConfig], dict[str, Any]]] = {
    "alpagasus": lambda c: {"threshold": c.judge_threshold},
    "sae_simscale": lambda c: {"similarity": c.simscale_similarity},
}


def _judge_backend(c: SelectionConfig):
    from ..critique.backends import OpenAIBackend, TransformersBackend

    if c.judge_backend == "none":
        raise InputError("Method 'alpagasus' needs judge scores: set judge_backend to 'transformers' or 'openai'.")
    if c.judge_backend == "openai":
        return OpenAIBackend(
            base_url=c.judge_base_url, model=c.judge_model, api_key_env=c.judge_api_key_env,
            max_new_tokens=c.judge_max_new_tokens, concurrency=c.judge_batch_size,
        )
    return TransformersBackend(model=c.judge_model, max_new_tokens=c.judge_max_new_tokens, batch_size=c.judge_batch_size, seed=c.seed)


def featurize(ds, config: SelectionConfig, columns: list[str]):
    """Add each missing column in `columns` with its registered featurizer via ``ds.map``."""
    for column in columns:
        if column in ds.column_names:
            continue
        if column not in FEATURIZERS:
            raise InputError(f"No featurizer produces column {column!r}; registered: {sorted(FEATURIZERS)}.")
        builder = FEATURIZERS[column]
        fn = builder(config, ds) if len(inspect.signature(builder).parameters) == 2 else builder(config)
        if hasattr(fn, "features"):  # typed columns; sharded by rank under accelerate launch / torchrun
            from ..dist import map_features

            ds = map_features(ds, fn, batch_size=config.map_batch_size, num_proc=config.num_proc, desc=f"Featurizing {column}")
        else:
            ds = ds.map(fn, batched=True, batch_size=config.map_batch_size, num_proc=config.num_proc, desc=f"Scoring {column}")
    return ds


def _validate_pool(ds, c: SelectionConfig) -> None:
    require_rows(len(ds), what="The selection job")
    require_columns(
        ds.column_names, [c.instruction_column, c.input_column, c.response_column, c.category_column], what="The selection job"
    )
    check_budget(c.budget, len(ds))


def _plot(path: Path, tokens: list[int], picks: dict[str, list[int]], categories: list | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ncols = 2 if categories is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0][0]
    top = max(float(np.percentile(tokens, 99)), 1.0)
    bins = np.linspace(0, top, 40)
    clip = lambda values: np.minimum(np.asarray(values, dtype=float), top)  # the last bin holds the tail
    ax.hist(clip(tokens), bins=bins, alpha=0.4, density=True, label="pool")
    for name, idx in picks.items():
        if not idx:  # nothing selected (alpagasus with no example at the threshold)
            continue
        ax.hist(clip([tokens[i] for i in idx]), bins=bins, histtype="step", linewidth=2, density=True, label=name)
    ax.set_xlabel(f"response tokens (last bin: ≥ {top:.0f})")
    ax.set_ylabel("density")
    ax.set_title("Response length")
    ax.legend()
    if categories is not None:
        ax = axes[0][1]
        names = list(category_counts(categories))
        width = 0.8 / (len(picks) + 1)
        x = np.arange(len(names))
        pool_counts = category_counts(categories)
        n = len(categories)
        ax.bar(x, [pool_counts[c] / n for c in names], width, label="pool")
        for k, (name, idx) in enumerate(picks.items(), start=1):
            counts = category_counts([categories[i] for i in idx])
            ax.bar(x + k * width, [counts.get(c, 0) / max(len(idx), 1) for c in names], width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, names, rotation=40, ha="right")
        ax.set_ylabel("share of examples")
        ax.set_title("Categories")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def run_selection(config: SelectionConfig) -> dict[str, Any]:
    """Run the selection job and return its metrics (also written to ``metrics.json``)."""
    start = time.perf_counter()
    c = config
    ds, source = load_pool(c.dataset, split=c.split, license=c.dataset_license)
    _validate_pool(ds, c)

    needed = ["response_tokens"] + [col for m in c.methods for col in get_selector(m).requires]
    ds = featurize(ds, c, list(dict.fromkeys(needed)))
    effective_threshold = None
    if "sae_ids" in ds.column_names and c.sae_threshold_quantile is not None:
        from .sae.job import apply_threshold_quantile

        ds, effective_threshold = apply_threshold_quantile(ds, c.sae_threshold_quantile)

    tokens = ds["response_tokens"]
    categories = ds[c.category_column] if c.category_column else None
    picks: dict[str, list[int]] = {}
    reports: dict[str, dict] = {}
    for name in c.methods:
        options = SELECTOR_OPTIONS.get(name, lambda _: {})(c)
        idx = get_selector(name).select(ds, c.budget, seed=c.seed, **options)
        picks[name] = idx
        reports[name] = selection_stats(
            [tokens[i] for i in idx],
            tokens,
            [categories[i] for i in idx] if categories is not None else None,
            categories,
        )

    for name, idx in picks.items():
        if len(idx) < c.budget:  # alpagasus keeps only examples at or above the threshold
            logger.warning("%s selected %d of the budget of %d.", name, len(idx), c.budget)
    main = reports[c.method]
    license_id = source.license or c.dataset_license
    metrics: dict[str, Any] = {
        "method": c.method,
        "budget": c.budget,
        "seed": c.seed,
        "pool_size": len(ds),
        "selected_size": main["selected_size"],
        "mean_response_tokens": main["mean_response_tokens"],
        "category_counts": main.get("category_counts", {}),
        "pool_category_counts": category_counts(categories) if categories is not None else {},
        "response_tokens": main["response_tokens"],
        "methods": reports,
        "dataset": c.dataset,
        "source_datasets": list(source.source_datasets),
        "license": license_id,
        "tokenizer": c.tokenizer,
    }

    if "judge_score" in ds.column_names:  # what the paid-for judge calls found, even when nothing passed
        from .judge import judge_summary

        metrics["judge"] = judge_summary(ds["judge_score"], c.judge_threshold)

    sae_info = None
    if "sae_ids" in ds.column_names:  # SAE features were computed: report the coverage of every method
        from .sae.job import sae_summary

        sae_info = sae_summary(c, ds)
        metrics["sae"] = {k: v for k, v in sae_info.items() if not k.startswith("_")}
        if effective_threshold is not None:
            metrics["sae"]["threshold"] = round(effective_threshold, 4)
            metrics["sae"]["threshold_quantile"] = c.sae_threshold_quantile

    selected = ds.select(picks[c.method])
    selected = selected.add_column("pool_index", picks[c.method])
    with job_output(c, repo_type="dataset", writer="select",
                    commit_message=f"hf_ext: {c.method} selection of {c.budget} from {source.name}") as out:
        tmp = out.dir
        (tmp / "data").mkdir()
        selected.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
        _plot(tmp / "selection.png", tokens, picks, categories)
        if sae_info is not None:
            from .sae.job import coverage_report

            report = coverage_report(ds, picks, c, c.seed, tmp / "coverage.png")
            metrics["feature_coverage"] = {name: r["coverage"] for name, r in report["at_budget"].items()}
            metrics["diversity"] = report["at_budget"]
            metrics["coverage_curves"] = {"budgets": report["budgets"], **report["curves"]}
            metrics["pool_feature_coverage"] = report["pool_coverage"]
            metrics["length_feature_corr"] = report["length_feature_corr"]
            if sae_info["_trained"]:
                shutil.copytree(sae_info["_folder"], tmp / "sae")
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)
        out.metrics = metrics
        out.card = lambda m: _card(c, source, m, license_id)
    return metrics


def _card(c: SelectionConfig, source: DatasetSource, metrics: dict[str, Any], license_id: str | None):
    from ..hub.cards import render_dataset_card

    card_data = {
        "license": license_id or "other",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["hf-ext", "data-selection", f"selection-{c.method}"],
        "size_categories": [_size_category(metrics["selected_size"])],
        "pretty_name": f"{source.name} — {c.method} selection ({metrics['selected_size']})",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    if source.source_datasets:
        card_data["source_datasets"] = list(source.source_datasets)
    settings = {k: v for k, v in asdict(c).items() if k not in HUB_FIELDS}
    if "sae" not in metrics:  # SAE settings matter only when SAE features were computed
        settings = {k: v for k, v in settings.items() if not k.startswith(("sae_", "simscale_"))}
    return render_dataset_card(
        "dataset_selection.md.j2",
        card_data,
        source=source,
        method=c.method,
        method_description=get_selector(c.method).description,
        budget=c.budget,
        seed=c.seed,
        selected_size=metrics["selected_size"],
        pool_size=metrics["pool_size"],
        settings=settings,
        tokenizer=c.tokenizer,
        pool_tokens=metrics["response_tokens"]["pool"],
        methods=metrics["methods"],
        categories=list(metrics["pool_category_counts"]),
        pool_category_counts=metrics["pool_category_counts"],
        plot="selection.png",
        repo_id=c.hub_model_id,
        sae=metrics.get("sae"),
        diversity=metrics.get("diversity"),
        pool_feature_coverage=metrics.get("pool_feature_coverage"),
        length_feature_corr=metrics.get("length_feature_corr"),
        coverage_plot="coverage.png" if "diversity" in metrics else None,
    )

