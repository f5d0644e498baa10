"""The ``curate`` and ``audit`` jobs (``hf-ext run recipes/dclm_baseline.yaml``,
``hf-ext run recipes/filter_audit.yaml``): load documents, run a curation pipeline with
``datasets.map``, dedup, score quality, write the kept data, per-step drop counts, a card,
and optionally push to the Hub."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from ..data import load_pool
from ..errors import InputError
from ..jobs import HUB_FIELDS, JobOptions, job_output
from .pipeline import PIPELINES, STEPS, CurationPipeline, curation_stats

DEDUP_CLASSES = {"minhash": "MinHashDeduplicator", "bff": "BFFDeduplicator"}  # in hf_ext.curate.dedup

# Keys of earlier recipes that mirrored the dedup classes' fields -> their place in dedup_options.
_MOVED_TO_DEDUP_OPTIONS = {
    "minhash_threshold": "minhash: {threshold: ...}", "minhash_num_perm": "minhash: {num_perm: ...}",
    "minhash_ngram": "minhash: {ngram: ...}", "bff_expected_ngrams": "bff: {expected_ngrams: ...}",
    "bff_fp_rate": "bff: {fp_rate: ...}", "bff_ngram": "bff: {ngram: ...}", "bff_threshold": "bff: {threshold: ...}",
}


def build_deduplicator(method: str, options: dict[str, Any] | None = None):
    """The dedup class of `method` built from recipe settings, each checked by the class's own dataclass.

    Args:
        method (`str`):
            ``"minhash"`` (`MinHashDeduplicator`) or ``"bff"`` (`BFFDeduplicator`).
        options (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            The class's fields (``dedup_options[method]`` of a recipe); unknown keys and bad values are refused,
            the error naming ``dedup_options.<method>``.
    """
    from ..config import parse_config
    from . import dedup

    cls = getattr(dedup, DEDUP_CLASSES[method])
    if not isinstance(options or {}, dict):
        raise InputError(f"dedup_options.{method} must be a mapping of {cls.__name__}'s fields, got {options!r}.")
    try:
        return parse_config(cls, dict(options or {}))
    except InputError as exc:
        raise type(exc)(f"In dedup_options.{method} ({cls.__name__}'s fields): {exc}") from None


def _refuse_moved_dedup_keys(values: dict[str, Any], argv: list[str] | None = None) -> None:
    from ..errors import RecipeError
    from ..jobs import refuse_old_hub_keys

    refuse_old_hub_keys(values, argv)
    from ..config import given_keys

    moved = [k for k in _MOVED_TO_DEDUP_OPTIONS if k in given_keys(values, argv)]
    if moved:
        raise RecipeError("The dedup settings moved into dedup_options, checked by each dedup class: "
                          + "; ".join(f"`{k}` -> dedup_options: {{{_MOVED_TO_DEDUP_OPTIONS[k]}}}" for k in moved) + ".")


@dataclass
class CurateConfig(JobOptions):
    """Settings of the curation job (`job: curate` in a recipe).

    Args:
        dataset (`str` or `None`, *optional*, defaults to `None`):
            Documents (required): a local JSONL/Parquet file or folder, or a Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            Split to curate.
        dataset_license (`str` or `None`, *optional*, defaults to `None`):
            Licence of the data, for the card (e.g. odc-by).
        text_column (`str`, *optional*, defaults to `"text"`):
            Column with the document text.
        url_column (`str` or `None`, *optional*, defaults to `"url"`):
            Column with document URLs (null if none; URL steps need it).
        timestamp_column (`str` or `None`, *optional*, defaults to `None`):
            Column used by URL dedup to keep the latest copy.
        pipeline (`str`, *optional*, defaults to `"dclm_baseline"`):
            Named pipeline: ['dclm_baseline', 'dclm_heuristics', 'gopher_quality', 'llama3'].
        steps (`list[str]`, *optional*, defaults to `[]`):
            Explicit step list (overrides `pipeline`); steps: ['alphabetic_words', 'bullet_lines', 'dirty_words',
            'dup_ngram_coverage', 'ellipsis_lines', 'gopher_repetition', 'html_extract', 'html_flag', 'language_id',
            'line_dedup', 'newline_collapse', 'page_length', 'refinedweb_line_edits', 'stop_words', 'symbol_ratio',
            'token_kl', 'url_blocklist', 'url_removal', 'word_length', 'word_removal_ratio'].
        step_options (`dict`, *optional*, defaults to `{}`):
            Arguments per step, e.g. {language_id: {min_score: 0.65}}.
        html (`Literal['flag', 'extract', 'off']`, *optional*, defaults to `"flag"`):
            HTML documents: 'flag' (drop as html), 'extract' (trafilatura) or 'off'.
        dedup (`list[str]`, *optional*, defaults to `[]`):
            Dedup after the heuristics, in order: exact, url, minhash, bff.
        dedup_options (`dict[str, dict]`, *optional*, defaults to `{}`):
            Settings per dedup method, the fields of its class in hf_ext.curate.dedup, checked by it: minhash ->
            MinHashDeduplicator (threshold, num_perm, ngram, seed, ...), bff -> BFFDeduplicator (expected_ngrams,
            fp_rate, ngram, threshold, min_ngram); e.g. {bff: {expected_ngrams: 2000000}}.
        quality_model (`str` or `None`, *optional*, defaults to `None`):
            Quality scorer: a folder written by the quality_classifier/quality_judge job (embedding head, the
            shipped default), or a fastText .bin path or Hub repo id (with quality_model_filename).
        quality_model_filename (`str` or `None`, *optional*, defaults to `None`):
            File of the fastText model in its Hub repo.
        quality_positive_label (`str`, *optional*, defaults to `"hq"`):
            fastText: label whose probability is the quality score.
        quality_top_fraction (`float` or `None`, *optional*, defaults to `0.1`):
            Keep this top share by quality score (DCLM: 0.1).
        quality_threshold (`float` or `None`, *optional*, defaults to `None`):
            Or keep scores >= this (released DCLM model: 0.018112).
        batch_size (`int`, *optional*, defaults to `1000`):
            Documents per datasets.map batch (also the line-dedup bucket).
        num_proc (`int` or `None`, *optional*, defaults to `None`):
            Processes for datasets.map (None: one).
        max_docs (`int` or `None`, *optional*, defaults to `None`):
            Curate only the first N documents (quick runs).
        output_dir (`str`, *optional*, defaults to `"outputs/curate"`):
            Folder for the kept data, drop counts and card.
    """

    dataset: Optional[str] = field(default=None, metadata={"help": "Documents (required): a local JSONL/Parquet file or folder, or a Hub dataset id."})
    split: str = field(default="train", metadata={"help": "Split to curate."})
    dataset_license: Optional[str] = field(default=None, metadata={"help": "Licence of the data, for the card (e.g. odc-by)."})
    text_column: str = field(default="text", metadata={"help": "Column with the document text."})
    url_column: Optional[str] = field(default="url", metadata={"help": "Column with document URLs (null if none; URL steps need it)."})
    timestamp_column: Optional[str] = field(default=None, metadata={"help": "Column used by URL dedup to keep the latest copy."})
    pipeline: str = field(default="dclm_baseline", metadata={"help": f"Named pipeline: {sorted(PIPELINES)}."})
    steps: list[str] = field(default_factory=list, metadata={"help": f"Explicit step list (overrides `pipeline`); steps: {sorted(STEPS)}."})
    step_options: dict = field(default_factory=dict, metadata={"help": "Arguments per step, e.g. {language_id: {min_score: 0.65}}."})
    html: Literal["flag", "extract", "off"] = field(
        default="flag", metadata={"help": "HTML documents: 'flag' (drop as html), 'extract' (trafilatura) or 'off'."}
    )
    dedup: list[str] = field(default_factory=list, metadata={"help": "Dedup after the heuristics, in order: exact, url, minhash, bff."})
    dedup_options: dict[str, dict] = field(default_factory=dict, metadata={"help": "Settings per dedup method, the fields of its class in hf_ext.curate.dedup, checked by it: minhash -> MinHashDeduplicator (threshold, num_perm, ngram, seed, ...), bff -> BFFDeduplicator (expected_ngrams, fp_rate, ngram, threshold, min_ngram); e.g. {bff: {expected_ngrams: 2000000}}."})
    quality_model: Optional[str] = field(default=None, metadata={"help": "Quality scorer: a folder written by the quality_classifier/quality_judge job (embedding head, the shipped default), or a fastText .bin path or Hub repo id (with quality_model_filename)."})
    quality_model_filename: Optional[str] = field(default=None, metadata={"help": "File of the fastText model in its Hub repo."})
    quality_positive_label: str = field(default="hq", metadata={"help": "fastText: label whose probability is the quality score."})
    quality_top_fraction: Optional[float] = field(default=0.1, metadata={"help": "Keep this top share by quality score (DCLM: 0.1)."})
    quality_threshold: Optional[float] = field(default=None, metadata={"help": "Or keep scores >= this (released DCLM model: 0.018112)."})
    batch_size: int = field(default=1000, metadata={"help": "Documents per datasets.map batch (also the line-dedup bucket)."})
    num_proc: Optional[int] = field(default=None, metadata={"help": "Processes for datasets.map (None: one)."})
    max_docs: Optional[int] = field(default=None, metadata={"help": "Curate only the first N documents (quick runs)."})
    output_dir: str = field(default="outputs/curate", metadata={"help": "Folder for the kept data, drop counts and card."})

    check_recipe: ClassVar = staticmethod(_refuse_moved_dedup_keys)

    def __post_init__(self):
        _require_dataset(self)
        bad = [d for d in self.dedup if d not in ("exact", "url", "minhash", "bff")]
        if bad:
            raise InputError(f"Unknown dedup method(s) {bad}; choose from exact, url, minhash, bff.")
        for method in self.dedup_options:
            if method not in DEDUP_CLASSES:
                raise InputError(f"dedup_options.{method}: only {sorted(DEDUP_CLASSES)} take settings.")
            if method not in self.dedup:
                raise InputError(f"dedup_options.{method} is set but {method!r} is not in dedup {self.dedup}; add it there or remove its options.")
            build_deduplicator(method, self.dedup_options[method])  # checked once, by the class itself
        if self.quality_model and (self.quality_top_fraction is None) == (self.quality_threshold is None):
            raise InputError("With quality_model set exactly one of quality_top_fraction or quality_threshold must be set (null the other).")
        if self.batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {self.batch_size}.")
        super().__post_init__()  # output folder and Hub settings

    def build_pipeline(self) -> CurationPipeline:
        steps = list(self.steps) or list(PIPELINES.get(self.pipeline, []))
        if not steps:
            CurationPipeline.from_name(self.pipeline)  # raises, naming the pipelines
        if self.html != "off":
            steps.insert(0, "html_extract" if self.html == "extract" else "html_flag")
        return CurationPipeline(steps, step_options=self.step_options, name=self.pipeline if not self.steps else "custom")


def _require_dataset(c) -> None:
    if not c.dataset:
        raise InputError(f"{type(c).__name__} needs `dataset`: a JSONL/Parquet file or folder of documents, or a Hub dataset id.")


def _load(c) -> tuple[Any, Any]:
    ds, source = load_pool(c.dataset, split=c.split, license=c.dataset_license)
    if c.max_docs is not None:
        ds = ds.select(range(min(c.max_docs, len(ds))))
    if len(ds) == 0:
        raise InputError(f"Dataset {c.dataset!r} has no documents.")
    return ds, source


def _fingerprint(*parts) -> str:
    """A stable datasets fingerprint from the step configuration (never the model weights)."""
    import hashlib

    return "hf_ext-" + hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:16]


def _require(ds, column: str | None, what: str) -> None:
    if column is not None and column not in ds.column_names:
        raise InputError(f"The dataset has no column {column!r} ({what}); columns: {ds.column_names}. Set {what} to the right column.")


def _write_and_push(c, tmp_writer, commit_message: str, metrics: dict, card) -> Optional[str]:
    """Write the job's folder safely (``tmp_writer(folder)``, metrics.json, card), then push it."""
    with job_output(c, repo_type="dataset", writer=type(c).__name__, commit_message=commit_message) as out:
        tmp_writer(out.dir)
        out.metrics, out.card = metrics, card
    return out.hub_commit


def run_curate(c: CurateConfig) -> dict:
    """Run the curation job; returns the metrics written to ``metrics.json``.

    Args:
        c (`CurateConfig`):
            The job's settings: the dataset, the pipeline and its step options, dedup, quality selection and the
            output folder / Hub repo.
    """
    start = time.perf_counter()
    pipe = c.build_pipeline()  # step names and step_options are checked by the steps' classes before the data loads
    ds, source = _load(c)
    _require(ds, c.text_column, "text_column")
    url_column = c.url_column if c.url_column in ds.column_names else None
    if pipe.needs_url or "url" in c.dedup:
        _require(ds, c.url_column, "url_column")
        url_column = c.url_column
    total = len(ds)
    ds = ds.map(pipe.map_fn(c.text_column, url_column), batched=True, batch_size=c.batch_size, num_proc=c.num_proc,
                desc=f"Curating ({pipe.name})", new_fingerprint=_fingerprint(ds._fingerprint, repr(pipe), c.text_column, url_column))
    drop_counts = curation_stats(ds)["drop_counts"]  # from the column: right after a cache hit / num_proc
    kept_ds = ds.filter(lambda k: k, input_columns="keep").remove_columns(["keep", "drop_reason"])
    dedup_stats: dict[str, int] = {}
    for method in c.dedup:
        before = len(kept_ds)
        kept_ds = _dedup(kept_ds, method, c, url_column)
        dedup_stats[method] = before - len(kept_ds)
    quality = None
    if c.quality_model and len(kept_ds):
        from .quality import load_quality_scorer, select_by_score

        scorer, kind, scorer_fp = load_quality_scorer(c.quality_model, c.quality_model_filename, c.quality_positive_label,
                                                      c.text_column)
        kept_ds = kept_ds.map(scorer, batched=True, batch_size=c.batch_size, desc="Quality scores",
                              new_fingerprint=_fingerprint(kept_ds._fingerprint, scorer_fp, c.text_column))
        picks = select_by_score(kept_ds["quality_score"], c.quality_top_fraction, c.quality_threshold)
        quality = {"scorer": kind, "scored": len(kept_ds), "kept": len(picks),
                   **({"positive_label": c.quality_positive_label} if kind == "fasttext" else {}),
                   "top_fraction": c.quality_top_fraction, "threshold": c.quality_threshold}
        kept_ds = kept_ds.select(picks)
    metrics = {
        "pipeline": pipe.name, "steps": [s.name for s in pipe.steps], "total": total, "kept": len(kept_ds),
        "drop_counts": drop_counts, "dedup": dedup_stats, "quality": quality,
    }
    lid = [s for s in pipe.steps if hasattr(s, "model_description")]
    if lid:
        metrics["language_id_model"] = lid[0].model_description

    def write(tmp: Path):
        (tmp / "data").mkdir()
        kept_ds.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)

    _write_and_push(c, write, f"hf_ext: {pipe.name} curation of {source.name}", metrics, lambda m: _curate_card(c, source, m))
    return metrics


def _dedup(ds, method: str, c: CurateConfig, url_column: str | None):
    from .dedup import exact_dedup, url_dedup

    if method == "exact":
        return ds.select(exact_dedup(ds[c.text_column]))
    if method == "url":
        stamps = ds[c.timestamp_column] if c.timestamp_column else None
        return ds.select(url_dedup(ds[url_column], stamps))
    if method == "minhash":
        mh = build_deduplicator("minhash", c.dedup_options.get("minhash"))
        return ds.select(mh.dedup(ds[c.text_column]))
    bff = build_deduplicator("bff", c.dedup_options.get("bff"))
    result = bff.dedup(ds[c.text_column])
    ds = ds.remove_columns([c.text_column]).add_column(c.text_column, result.texts)
    return ds.select([i for i, k in enumerate(result.keep) if k])


def _curate_card(c: CurateConfig, source, metrics: dict):
    from ..hub.cards import render_dataset_card, size_category

    card_data = {
        "license": c.dataset_license or source.license or "other",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["hf-ext", "pretraining-data", "data-curation", f"curation-{metrics['pipeline']}"],
        "size_categories": [size_category(metrics["kept"])],
        "pretty_name": f"{source.name} — {metrics['pipeline']} curation",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    if source.source_datasets:
        card_data["source_datasets"] = list(source.source_datasets)
    settings = {k: v for k, v in asdict(c).items() if k not in HUB_FIELDS}
    return render_dataset_card(
        "curate_dataset.md.j2", card_data, source=source, pretty_name=card_data["pretty_name"], kept=metrics["kept"],
        total=metrics["total"], pipeline=metrics["pipeline"], steps=metrics["steps"], drop_counts=metrics["drop_counts"],
        dedup=c.dedup, dedup_stats=metrics["dedup"], quality_model=c.quality_model, quality=metrics["quality"], settings=settings,
        language_model=metrics.get("language_id_model"),
    )


# -- audit --------------------------------------------------------------------------------

@dataclass
class AuditConfig(JobOptions):
    """Settings of the filter-audit job (`job: audit` in a recipe).

    Args:
        dataset (`str` or `None`, *optional*, defaults to `None`):
            Documents (required): a local JSONL/Parquet file or folder, or a Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            Split to audit.
        dataset_license (`str` or `None`, *optional*, defaults to `None`):
            Licence of the data, for the card.
        text_column (`str`, *optional*, defaults to `"text"`):
            Column with the document text.
        url_column (`str` or `None`, *optional*, defaults to `None`):
            Column with URLs (needed for url_tld / url_site_type groups).
        group_columns (`list[str]`, *optional*, defaults to `[]`):
            Existing columns to group by (topic, role, region, lang...).
        derived_groups (`list[str]`, *optional*, defaults to `[]`):
            Groups derived from the URL: url_tld, url_site_type.
        filters (`list[str]`, *optional*, defaults to `['gopher_quality']`):
            Filters to audit, each applied on its own: a named pipeline or a single step name.
        keep_columns (`list[str]`, *optional*, defaults to `[]`):
            Existing boolean columns with any filter's decisions to audit too.
        step_options (`dict`, *optional*, defaults to `{}`):
            Arguments per step, e.g. {language_id: {min_score: 0.65}}.
        n_boot (`int`, *optional*, defaults to `2000`):
            Bootstrap resamples for the confidence intervals.
        confidence (`float`, *optional*, defaults to `0.95`):
            Confidence level of the intervals.
        min_group_size (`int`, *optional*, defaults to `5`):
            Leave out groups with fewer documents.
        top_words (`int`, *optional*, defaults to `15`):
            Words per side in the log-odds lexical contrast.
        max_docs (`int` or `None`, *optional*, defaults to `None`):
            Audit only the first N documents.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the bootstrap.
        output_dir (`str`, *optional*, defaults to `"outputs/audit"`):
            Folder for the report, plots and card.
    """

    dataset: Optional[str] = field(default=None, metadata={"help": "Documents (required): a local JSONL/Parquet file or folder, or a Hub dataset id."})
    split: str = field(default="train", metadata={"help": "Split to audit."})
    dataset_license: Optional[str] = field(default=None, metadata={"help": "Licence of the data, for the card."})
    text_column: str = field(default="text", metadata={"help": "Column with the document text."})
    url_column: Optional[str] = field(default=None, metadata={"help": "Column with URLs (needed for url_tld / url_site_type groups)."})
    group_columns: list[str] = field(default_factory=list, metadata={"help": "Existing columns to group by (topic, role, region, lang...)."})
    derived_groups: list[str] = field(default_factory=list, metadata={"help": "Groups derived from the URL: url_tld, url_site_type."})
    filters: list[str] = field(
        default_factory=lambda: ["gopher_quality"],
        metadata={"help": "Filters to audit, each applied on its own: a named pipeline or a single step name."},
    )
    keep_columns: list[str] = field(default_factory=list, metadata={"help": "Existing boolean columns with any filter's decisions to audit too."})
    step_options: dict = field(default_factory=dict, metadata={"help": "Arguments per step, e.g. {language_id: {min_score: 0.65}}."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap resamples for the confidence intervals."})
    confidence: float = field(default=0.95, metadata={"help": "Confidence level of the intervals."})
    min_group_size: int = field(default=5, metadata={"help": "Leave out groups with fewer documents."})
    top_words: int = field(default=15, metadata={"help": "Words per side in the log-odds lexical contrast."})
    max_docs: Optional[int] = field(default=None, metadata={"help": "Audit only the first N documents."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    output_dir: str = field(default="outputs/audit", metadata={"help": "Folder for the report, plots and card."})

    def __post_init__(self):
        from .audit import GROUP_DERIVERS

        _require_dataset(self)
        bad = [g for g in self.derived_groups if g not in GROUP_DERIVERS]
        if bad:
            raise InputError(f"Unknown derived group(s) {bad}; available: {sorted(GROUP_DERIVERS)}.")
        if not self.group_columns and not self.derived_groups:
            raise InputError("Set group_columns (existing columns) and/or derived_groups (url_tld, url_site_type) to audit by.")
        if not self.filters and not self.keep_columns:
            raise InputError("Nothing to audit: set filters and/or keep_columns.")
        super().__post_init__()  # output folder and Hub settings


def run_audit(c: AuditConfig) -> dict:
    """Run the audit job; returns the metrics written to ``metrics.json``.

    Args:
        c (`AuditConfig`):
            The job's settings: the dataset, the filters or keep columns audited, the groupings, the bootstrap
            settings and the output folder / Hub repo.
    """
    from .audit import GROUP_DERIVERS, card_section, plot_retention, retention_by_group, weighted_log_odds

    start = time.perf_counter()
    # step names and step_options are checked by the steps' classes before the data loads
    pipes = {name: CurationPipeline(PIPELINES.get(name, [name]), name=name,
                                    step_options={k: v for k, v in c.step_options.items() if k in PIPELINES.get(name, [name])})
             for name in c.filters}
    ds, source = _load(c)
    _require(ds, c.text_column, "text_column")
    for col in [*c.group_columns, *c.keep_columns]:
        _require(ds, col, "group_columns/keep_columns")
    if c.derived_groups:
        _require(ds, c.url_column or "url_column", "url_column")
    texts = ds[c.text_column]
    groups = {col: [str(v) for v in ds[col]] for col in c.group_columns}
    for name in c.derived_groups:
        groups[name] = [GROUP_DERIVERS[name](u or "") for u in ds[c.url_column]]
    decisions: dict[str, list[bool]] = {col: [bool(v) for v in ds[col]] for col in c.keep_columns}
    for name, pipe in pipes.items():
        urls = ds[c.url_column] if pipe.needs_url else None
        keep = []
        for s in range(0, len(texts), 1000):
            keep += pipe.process(texts[s : s + 1000], urls[s : s + 1000] if urls else None, c.text_column)[1]
        decisions[name] = keep
    reports, sections, plots = {}, [], {}
    for fname, keep in decisions.items():
        contrasts = weighted_log_odds([t for t, k in zip(texts, keep) if k], [t for t, k in zip(texts, keep) if not k], c.top_words)
        for gname, labels in groups.items():
            rep = retention_by_group(keep, labels, c.n_boot, c.confidence, c.seed, c.min_group_size)
            rep["lexical_contrast"] = contrasts
            reports[f"{fname}/{gname}"] = rep
            plots[f"{fname}/{gname}"] = f"retention_{fname}_{gname}.png"
            sections.append(card_section(fname, gname, rep, contrasts, plots[f"{fname}/{gname}"]))
    metrics = {"n": len(ds), "filters": list(decisions), "groups": list(groups), "reports": reports}

    def write(tmp: Path):
        for key, rep in reports.items():
            fname, gname = key.split("/")
            plot_retention(rep, tmp / plots[key], title=f"{fname}: retention by {gname}")
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)

    _write_and_push(c, write, f"hf_ext: filter audit of {source.name}", metrics, lambda m: _audit_card(c, source, m, sections))
    return metrics


def _audit_card(c: AuditConfig, source, metrics: dict, sections: list[dict]):
    from ..hub.cards import render_dataset_card

    card_data = {
        "license": c.dataset_license or source.license or "other",
        "tags": ["hf-ext", "data-curation", "filter-audit"],
        "pretty_name": f"Filter audit of {source.name}",
    }
    if source.source_datasets:
        card_data["source_datasets"] = list(source.source_datasets)
    settings = {k: v for k, v in asdict(c).items() if k not in HUB_FIELDS}
    return render_dataset_card(
        "curate_audit.md.j2", card_data, source=source, pretty_name=card_data["pretty_name"], sections=sections, n=metrics["n"],
        n_boot=c.n_boot, confidence_percent=int(round(100 * c.confidence)), settings=settings,
    )
