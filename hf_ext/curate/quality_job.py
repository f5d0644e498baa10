"""The ``quality_classifier`` and ``quality_judge`` jobs (``hf-ext run recipes/quality_embedding.yaml``,
``recipes/quality_fasttext.yaml``, ``recipes/quality_judge.yaml``): build page-like training
data, train a quality scorer, evaluate it on held-out pairs from *other* sources beside the
length baseline, and write the scorer, ``metrics.json``, a plot and a card.

Both classes are pages: positive sources (articles, books, long answers) are cut into spans
whose word counts copy the negatives' (`quality_data.length_matched_pages`), and pages the
heuristic pipeline drops can join the negatives. The judge job instead labels a sample of
pages with a judge LM (FineWeb-Edu's prompt) and trains the head on those labels.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..errors import InputError
from ..jobs import HUB_FIELDS, JobOptions, job_output
from .quality import QUALITY_FASTTEXT_RECIPE


@dataclass
class PageSource:
    """One source of pages in a quality recipe.

    Args:
        path (`str`):
            JSONL/Parquet file, or a .txt/.txt.gz file with one document per line (relative paths are read under
            the job's ``data_dir``).
        text_column (`str`, *optional*, defaults to `"text"`):
            Column with the text.
        name (`str` or `None`, *optional*, defaults to `None`):
            Label in metrics and cards (default: the file name).
        chunk (`bool`, *optional*, defaults to `False`):
            Cut the documents into page-like spans matched in length to the training negatives (for articles and
            books); False keeps documents whole (web pages).
        strip_gutenberg (`bool`, *optional*, defaults to `False`):
            Drop Project Gutenberg's licence header and footer first.
        max_docs (`int` or `None`, *optional*, defaults to `None`):
            Read at most this many documents (None: all).
        max_pages (`int` or `None`, *optional*, defaults to `None`):
            Keep at most this many pages (None: all), spread over the documents.
    """

    path: str
    text_column: str = "text"
    name: Optional[str] = None
    chunk: bool = False
    strip_gutenberg: bool = False
    max_docs: Optional[int] = None
    max_pages: Optional[int] = None

    @classmethod
    def parse(cls, value: Any, field_name: str) -> "PageSource":
        if isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict):
            raise InputError(f"{field_name}: each source is a file path or a mapping with `path`, got {value!r}.")
        try:
            return cls(**value)
        except TypeError as exc:
            raise InputError(f"{field_name}: {exc}; valid keys: path, text_column, name, chunk, strip_gutenberg, "
                             "max_docs, max_pages.") from None

    def label(self) -> str:
        return self.name or Path(self.path).name.split(".")[0]

    def read(self, data_dir: Optional[str], reference: Optional[list[str]] = None, seed: int = 0,
             min_words: int = 50) -> list[str]:
        from ..data import load_pool
        from .quality_data import length_matched_pages, strip_gutenberg_boilerplate

        path = self.path if os.path.isabs(self.path) or not data_dir else os.path.join(data_dir, self.path)
        if not os.path.exists(path):
            raise InputError(f"Page source {path!r} does not exist; set data_dir (e.g. --data_dir path/to/data) or fix `path`.")
        if path.endswith((".txt", ".txt.gz")):  # plain text: one document per line
            import gzip

            with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
                texts = [line.strip() for line in f if line.strip()][: self.max_docs]
        else:
            ds, _ = load_pool(path)
            if self.text_column not in ds.column_names:
                raise InputError(f"{path!r} has no column {self.text_column!r}; columns: {ds.column_names}. Set text_column.")
            texts = [t for t in ds[self.text_column][: self.max_docs] if isinstance(t, str) and t.strip()]
        if self.strip_gutenberg:
            texts = [strip_gutenberg_boilerplate(t) for t in texts]
        if self.chunk:
            if not reference:
                raise InputError(f"{self.label()}: chunk: true needs negative pages to copy lengths from.")
            return length_matched_pages(texts, reference, n=self.max_pages, seed=seed, min_words=min_words)
        return texts[: self.max_pages]


def _sources(values: list, field_name: str) -> list[PageSource]:
    return [PageSource.parse(v, f"{field_name}[{i}]") for i, v in enumerate(values)]


@dataclass
class _QualityJobBase(JobOptions):
    data_dir: Optional[str] = field(default=None, metadata={"help": "Folder that relative source paths are read under (e.g. a folder of staged datasets)."})
    negatives: list[dict] = field(default_factory=list, metadata={"help": "Negative page sources (web pages): [{path, text_column, chunk, max_pages, ...}]."})
    heldout: list[dict] = field(
        default_factory=list,
        metadata={"help": "Held-out pairs from other sources: [{name, positives: [sources], negatives: [sources]}]; "
                          "each gets the scorer's AUC beside the length baseline."},
    )
    embedder: dict = field(default_factory=dict, metadata={"help": "SentenceEmbedder settings: {model, max_length, batch_size, device, dtype}."})
    head_C: float = field(default=1.0, metadata={"help": "Inverse regularisation of the scikit-learn head (LogisticRegression C; Ridge alpha = 1/C)."})
    min_words: int = field(default=50, metadata={"help": "Pages cut from long texts have at least this many words."})
    seed: int = field(default=0, metadata={"help": "Seed of page cutting and training."})
    output_dir: str = field(default="outputs/quality", metadata={"help": "Folder for the scorer, metrics, plot and card."})

    def _check_common(self) -> None:
        from .embed_quality import SentenceEmbedder

        self._negatives = _sources(self.negatives, "negatives")
        if not self._negatives:
            raise InputError(f"{type(self).__name__} needs `negatives`: web-page sources, e.g. [{{path: web/c4.jsonl.gz}}].")
        self._heldout = []
        for i, pair in enumerate(self.heldout):
            if not isinstance(pair, dict) or not pair.get("positives") or not pair.get("negatives"):
                raise InputError(f"heldout[{i}] must be a mapping with `positives` and `negatives` source lists (and a `name`).")
            unknown = set(pair) - {"name", "positives", "negatives"}
            if unknown:
                raise InputError(f"heldout[{i}] has unknown keys {sorted(unknown)}; valid: name, positives, negatives.")
            self._heldout.append((str(pair.get("name") or f"heldout_{i}"), _sources(pair["positives"], f"heldout[{i}].positives"),
                                  _sources(pair["negatives"], f"heldout[{i}].negatives")))
        try:
            self._embedder = SentenceEmbedder(**self.embedder)
        except TypeError as exc:
            raise InputError(f"embedder: {exc}; valid keys: model, max_length, batch_size, device, dtype, revision.") from None
        if self.head_C <= 0:
            raise InputError(f"head_C must be positive, got {self.head_C}.")
        super().__post_init__()  # output folder and Hub settings

    def _read_negatives(self) -> tuple[list[str], dict[str, int]]:
        pages, counts = [], {}
        for src in self._negatives:
            got = src.read(self.data_dir, seed=self.seed, min_words=self.min_words)
            pages += got
            counts[src.label()] = len(got)
        return pages, counts

    def _read_heldout(self, reference: list[str]) -> list[tuple[str, list[str], list[str]]]:
        out = []
        for name, pos_sources, neg_sources in self._heldout:
            negs = [p for s in neg_sources for p in s.read(self.data_dir, seed=self.seed + 1, min_words=self.min_words)]
            # held-out pages copy the held-out negatives' lengths: the length baseline then measures what it should
            pos = [p for s in pos_sources for p in s.read(self.data_dir, negs or reference, seed=self.seed + 1, min_words=self.min_words)]
            if not pos or not negs:
                raise InputError(f"Held-out set {name!r} gave {len(pos)} positive and {len(negs)} negative pages; it needs both.")
            out.append((name, pos, negs))
        return out


def evaluate_heldout(scorer, heldout: list[tuple[str, list[str], list[str]]]) -> dict[str, dict[str, float]]:
    """Per held-out set: the scorer's AUC, the length baseline's (word count) and the counts.

    Args:
        scorer (`FastTextQualityScorer` or `EmbeddingQualityScorer`):
            Any object with ``score(texts)``; one with an ``embedder`` is asked to show a progress bar.
        heldout (`list[tuple[str, list[str], list[str]]]`):
            ``(name, positive pages, negative pages)`` per held-out set; results are keyed by name.
    """
    from .quality_data import auc, word_count

    results = {}
    for name, pos, neg in heldout:
        labels = [1] * len(pos) + [0] * len(neg)
        scores = scorer.score(pos + neg, **({"progress": True} if hasattr(scorer, "embedder") else {}))
        results[name] = {"auc": auc(labels, scores), "auc_length_baseline": auc(labels, word_count(pos + neg)),
                         "positives": len(pos), "negatives": len(neg)}
    return results


def plot_heldout(results: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Bar chart: the scorer's AUC beside the length baseline on every held-out set.

    Args:
        results (`dict[str, dict[str, float]]`):
            An `evaluate_heldout` result (``auc`` and ``auc_length_baseline`` per set).
        path (`Path`):
            Image file written (format from its suffix).
        title (`str`):
            Title of the chart.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names) + 2), 3.2))
    ax.bar(x - 0.2, [results[n]["auc"] for n in names], 0.4, label="scorer")
    ax.bar(x + 0.2, [results[n]["auc_length_baseline"] for n in names], 0.4, label="length (word count)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out ROC AUC")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class QualityClassifierConfig(_QualityJobBase):
    """Settings of the quality-classifier job (`job: quality_classifier` in a recipe).

    Args:
        data_dir (`str` or `None`, *optional*, defaults to `None`):
            Folder that relative source paths are read under (e.g. a folder of staged datasets).
        negatives (`list[dict]`, *optional*, defaults to `[]`):
            Negative page sources (web pages): [{path, text_column, chunk, max_pages, ...}].
        heldout (`list[dict]`, *optional*, defaults to `[]`):
            Held-out pairs from other sources: [{name, positives: [sources], negatives: [sources]}]; each gets the
            scorer's AUC beside the length baseline.
        embedder (`dict`, *optional*, defaults to `{}`):
            SentenceEmbedder settings: {model, max_length, batch_size, device, dtype}.
        head_C (`float`, *optional*, defaults to `1.0`):
            Inverse regularisation of the scikit-learn head (LogisticRegression C; Ridge alpha = 1/C).
        min_words (`int`, *optional*, defaults to `50`):
            Pages cut from long texts have at least this many words.
        seed (`int`, *optional*, defaults to `0`):
            Seed of page cutting and training.
        output_dir (`str`, *optional*, defaults to `"outputs/quality"`):
            Folder for the scorer, metrics, plot and card.
        scorer (`Literal['embedding', 'fasttext']`, *optional*, defaults to `"embedding"`):
            'embedding' (logistic head on frozen all-MiniLM-L6-v2) or 'fasttext' (DCLM's bigram classifier).
        positives (`list[dict]`, *optional*, defaults to `[]`):
            Positive sources: [{path, chunk: true, strip_gutenberg, max_pages, ...}].
        heuristic_negatives (`str` or `None`, *optional*, defaults to `None`):
            A curation pipeline (e.g. dclm_heuristics): positive pages it drops become negatives (they are not good
            pages).
        fasttext (`dict`, *optional*, defaults to `{'epoch': 25, 'lr': 0.5, 'normalize': 'punct_lower'}`):
            fastText train_supervised options over DCLM's defaults, and normalize ('dclm' or 'punct_lower').
    """

    scorer: Literal["embedding", "fasttext"] = field(
        default="embedding", metadata={"help": "'embedding' (logistic head on frozen all-MiniLM-L6-v2) or 'fasttext' (DCLM's bigram classifier)."}
    )
    positives: list[dict] = field(default_factory=list, metadata={"help": "Positive sources: [{path, chunk: true, strip_gutenberg, max_pages, ...}]."})
    heuristic_negatives: Optional[str] = field(
        default=None,
        metadata={"help": "A curation pipeline (e.g. dclm_heuristics): positive pages it drops become negatives (they are not good pages)."},
    )
    fasttext: dict = field(default_factory=lambda: dict(QUALITY_FASTTEXT_RECIPE),
                           metadata={"help": "fastText train_supervised options over DCLM's defaults, and normalize ('dclm' or 'punct_lower')."})

    def __post_init__(self) -> None:
        self._check_common()
        self._positives = _sources(self.positives, "positives")
        if not self._positives:
            raise InputError("QualityClassifierConfig needs `positives`: sources of good pages, e.g. [{path: wiki.jsonl.gz, chunk: true}].")
        if self.heuristic_negatives is not None:
            from .pipeline import PIPELINES

            if self.heuristic_negatives not in PIPELINES:
                raise InputError(f"heuristic_negatives must be a named pipeline: {sorted(PIPELINES)}; got {self.heuristic_negatives!r}.")
        from .quality import DCLM_FASTTEXT_DEFAULTS, NORMALIZATIONS

        bad = set(self.fasttext) - set(DCLM_FASTTEXT_DEFAULTS) - {"loss", "bucket", "minn", "maxn", "neg", "lrUpdateRate", "t", "normalize"}
        if bad:
            raise InputError(f"fasttext: unknown option(s) {sorted(bad)}; e.g. {sorted(DCLM_FASTTEXT_DEFAULTS)} or normalize.")
        if self.fasttext.get("normalize", "dclm") not in NORMALIZATIONS:
            raise InputError(f"fasttext.normalize must be one of {list(NORMALIZATIONS)}, got {self.fasttext['normalize']!r}.")


def build_training_pages(c: QualityClassifierConfig) -> tuple[list[str], list[str], dict[str, Any]]:
    """Positive and negative training pages, and where they came from.

    Args:
        c (`QualityClassifierConfig`):
            The job's settings: its positive and negative sources (positives are cut to the negatives' lengths),
            `heuristic_negatives`, `min_words` and `seed`.
    """
    negatives, neg_counts = c._read_negatives()
    positives, pos_counts = [], {}
    for src in c._positives:
        got = src.read(c.data_dir, negatives, seed=c.seed, min_words=c.min_words)
        positives += got
        pos_counts[src.label()] = len(got)
    moved = 0
    if c.heuristic_negatives:
        from .pipeline import CurationPipeline

        keep = CurationPipeline.from_name(c.heuristic_negatives).process(positives)[1]
        moved = sum(not k for k in keep)
        negatives += [p for p, k in zip(positives, keep) if not k]
        positives = [p for p, k in zip(positives, keep) if k]
    if not positives or not negatives:
        raise InputError(f"The sources gave {len(positives)} positive and {len(negatives)} negative pages; training needs both.")
    return positives, negatives, {"positives": pos_counts, "negatives": neg_counts, "heuristic_drops_moved_to_negatives": moved}


def run_quality_classifier(c: QualityClassifierConfig) -> dict:
    """Train the scorer, evaluate it on the held-out pairs, write the output folder.

    Args:
        c (`QualityClassifierConfig`):
            The job's settings: sources, scorer kind and its options, held-out sets and the output folder / Hub repo.
    """
    import tempfile

    from .quality_data import word_count

    start = time.perf_counter()
    positives, negatives, sources = build_training_pages(c)
    heldout = c._read_heldout(negatives)
    with tempfile.TemporaryDirectory() as scratch:
        if c.scorer == "fasttext":
            from .quality import train_fasttext_classifier

            scorer = train_fasttext_classifier(positives, negatives, Path(scratch) / "model.bin", seed=c.seed, **c.fasttext)
            scorer.fasttext_model  # load before the scratch folder goes
        else:
            from .embed_quality import train_embedding_classifier

            scorer = train_embedding_classifier(positives, negatives, c._embedder, C=c.head_C, seed=c.seed, progress=True)
        results = evaluate_heldout(scorer, heldout)
        metrics = {"scorer": c.scorer, "train_positives": len(positives), "train_negatives": len(negatives), "sources": sources,
                   "train_median_words": {"positives": _median(word_count(positives)), "negatives": _median(word_count(negatives))},
                   "heldout": results}

        with job_output(c, repo_type="model", writer=type(c).__name__, commit_message=f"hf_ext: {c.scorer} quality classifier") as out:
            if c.scorer == "fasttext":
                scorer.save(out.dir / "model.bin")
            else:
                scorer.metadata = {"trained_on": sources}
                scorer.save(out.dir)
            _plot_and_card(c, out, metrics, f"{c.scorer} quality classifier", start)
    return metrics


def _median(values: list[int]) -> float:
    import numpy as np

    return float(np.median(values)) if values else 0.0


def _plot_and_card(c, out, metrics: dict, title: str, start: float) -> None:
    metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)  # the whole run, not just the writing
    if metrics["heldout"]:
        plot_heldout(metrics["heldout"], out.dir / "heldout_auc.png", title)
    out.metrics, out.card = metrics, (lambda m: _card(c, m, title))


@dataclass
class QualityJudgeConfig(_QualityJobBase):
    """Settings of the judge-labelled quality job (`job: quality_judge` in a recipe): a judge
    LM rates `pages` (FineWeb-Edu's 0-5 prompt), a ridge head on frozen embeddings learns the
    ratings and scores `score_dataset`.

    Args:
        data_dir (`str` or `None`, *optional*, defaults to `None`):
            Folder that relative source paths are read under (e.g. a folder of staged datasets).
        negatives (`list[dict]`, *optional*, defaults to `[]`):
            Negative page sources (web pages): [{path, text_column, chunk, max_pages, ...}].
        heldout (`list[dict]`, *optional*, defaults to `[]`):
            Held-out pairs from other sources: [{name, positives: [sources], negatives: [sources]}]; each gets the
            scorer's AUC beside the length baseline.
        embedder (`dict`, *optional*, defaults to `{}`):
            SentenceEmbedder settings: {model, max_length, batch_size, device, dtype}.
        head_C (`float`, *optional*, defaults to `1.0`):
            Inverse regularisation of the scikit-learn head (LogisticRegression C; Ridge alpha = 1/C).
        min_words (`int`, *optional*, defaults to `50`):
            Pages cut from long texts have at least this many words.
        seed (`int`, *optional*, defaults to `0`):
            Seed of page cutting and training.
        output_dir (`str`, *optional*, defaults to `"outputs/quality"`):
            Folder for the scorer, metrics, plot and card.
        pages (`list[dict]`, *optional*, defaults to `[]`):
            Sources of the pages the judge labels (chunk: true cuts long texts to page lengths).
        sample_size (`int`, *optional*, defaults to `200`):
            Pages the judge labels (a seeded sample of `pages` and `negatives`).
        judge_backend (`Literal['transformers', 'openai']`, *optional*, defaults to `"transformers"`):
            Who judges: a local transformers model or an OpenAI-compatible server.
        judge (`dict`, *optional*, defaults to `{'model': 'HuggingFaceTB/SmolLM2-135M-Instruct', 'max_new_tokens': 128}`):
            The backend's settings (TransformersBackend / OpenAIBackend fields: model, base_url, max_new_tokens, ...).
        judge_max_chars (`int`, *optional*, defaults to `2000`):
            Characters of each page shown to the judge.
        judge_method (`Literal['auto', 'logprobs', 'generate']`, *optional*, defaults to `"auto"`):
            How the rating is read: logprobs (expected score from the next-token distribution over 0-5; local
            transformers judge), generate (parse the answer), auto (logprobs when the backend offers them).
        labels_file (`str` or `None`, *optional*, defaults to `None`):
            Reuse judge labels (JSONL with text, edu_score) instead of calling the judge.
        score_dataset (`str` or `None`, *optional*, defaults to `None`):
            A corpus (JSONL/Parquet) to score with the trained head; written with a quality_score column.
        score_text_column (`str`, *optional*, defaults to `"text"`):
            Text column of score_dataset.
        keep_threshold (`float`, *optional*, defaults to `3.0`):
            Scored pages at or above this predicted score are flagged keep (FineWeb-Edu: 3).
    """

    pages: list[dict] = field(default_factory=list, metadata={"help": "Sources of the pages the judge labels (chunk: true cuts long texts to page lengths)."})
    sample_size: int = field(default=200, metadata={"help": "Pages the judge labels (a seeded sample of `pages` and `negatives`)."})
    judge_backend: Literal["transformers", "openai"] = field(default="transformers", metadata={"help": "Who judges: a local transformers model or an OpenAI-compatible server."})
    judge: dict = field(
        default_factory=lambda: {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_new_tokens": 128},
        metadata={"help": "The backend's settings (TransformersBackend / OpenAIBackend fields: model, base_url, max_new_tokens, ...)."},
    )
    judge_max_chars: int = field(default=2000, metadata={"help": "Characters of each page shown to the judge."})
    judge_method: Literal["auto", "logprobs", "generate"] = field(default="auto", metadata={
        "help": "How the rating is read: logprobs (expected score from the next-token distribution over 0-5; local "
                "transformers judge), generate (parse the answer), auto (logprobs when the backend offers them)."})
    labels_file: Optional[str] = field(default=None, metadata={"help": "Reuse judge labels (JSONL with text, edu_score) instead of calling the judge."})
    score_dataset: Optional[str] = field(default=None, metadata={"help": "A corpus (JSONL/Parquet) to score with the trained head; written with a quality_score column."})
    score_text_column: str = field(default="text", metadata={"help": "Text column of score_dataset."})
    keep_threshold: float = field(default=3.0, metadata={"help": "Scored pages at or above this predicted score are flagged keep (FineWeb-Edu: 3)."})

    def __post_init__(self) -> None:
        self._check_common()
        self._pages = _sources(self.pages, "pages")
        if self.sample_size < 2:
            raise InputError(f"sample_size must be at least 2, got {self.sample_size}.")
        if self.labels_file is None:
            from ..critique.backends import make_backend
            from .judge_quality import EduJudge

            try:
                self._backend = make_backend(self.judge_backend, **self.judge)
            except TypeError as exc:
                raise InputError(f"judge: {exc}; see the fields of the {self.judge_backend} backend "
                                 "(hf_ext.critique.backends).") from None
            self._judge = EduJudge(self._backend, max_chars=self.judge_max_chars, method=self.judge_method)


def run_quality_judge(c: QualityJudgeConfig) -> dict:
    """Label a sample with the judge, train the head, evaluate, score the corpus, write.

    Args:
        c (`QualityJudgeConfig`):
            The job's settings: page sources, the judge backend and how many pages it labels, the head, held-out
            sets and the output folder / Hub repo.
    """
    import random

    from .judge_quality import train_on_judge_labels

    start = time.perf_counter()
    negatives, neg_counts = c._read_negatives()
    pages = list(negatives)
    for src in c._pages:
        pages += src.read(c.data_dir, negatives, seed=c.seed, min_words=c.min_words)
    heldout = c._read_heldout(negatives)
    if c.labels_file:
        from datasets import load_dataset

        rows = load_dataset("json", data_files=c.labels_file, split="train")
        for col in ("text", "edu_score"):
            if col not in rows.column_names:
                raise InputError(f"labels_file {c.labels_file!r} has no column {col!r}; columns: {rows.column_names}.")
        sample, scores, raw = list(rows["text"]), [float(s) for s in rows["edu_score"]], None
    else:
        sample = random.Random(c.seed).sample(pages, min(c.sample_size, len(pages)))
        scores, raw = c._judge.label(sample)
    parsed = [s for s in scores if s >= 0]
    scorer = train_on_judge_labels(sample, scores, c._embedder, C=c.head_C, progress=True)
    results = evaluate_heldout(scorer, heldout)
    hist = {str(k): sum(1 for s in parsed if round(s) == k) for k in range(6)}
    metrics = {"scorer": "judge_embedding", "judge": _judge_name(c), "labelled": len(sample), "parsed": len(parsed),
               "label_histogram": hist, "heldout": results, "negative_sources": neg_counts}
    scored = None
    if c.score_dataset:
        from ..data import load_pool

        scored, _ = load_pool(c.score_dataset)
        if c.score_text_column not in scored.column_names:
            raise InputError(f"score_dataset has no column {c.score_text_column!r}; columns: {scored.column_names}.")
        scorer.text_column = c.score_text_column
        scored = scored.map(scorer, batched=True, batch_size=256, desc="Quality scores")
        scored = scored.map(lambda s: {"keep": [x >= c.keep_threshold for x in s]}, input_columns="quality_score", batched=True)
        metrics["scored"] = {"documents": len(scored), "kept": int(sum(scored["keep"])), "threshold": c.keep_threshold}

    with job_output(c, repo_type="model", writer=type(c).__name__, commit_message="hf_ext: judge-labelled quality classifier") as out:
        scorer.metadata = {"judge": metrics["judge"], "labelled": len(sample)}
        scorer.save(out.dir)
        with open(out.dir / "judge_labels.jsonl", "w", encoding="utf-8") as f:
            for i, (text, score) in enumerate(zip(sample, scores)):
                f.write(json.dumps({"text": text, "edu_score": score, **({"edu_raw": raw[i]} if raw else {})}) + "\n")
        if scored is not None:
            (out.dir / "data").mkdir()
            scored.to_parquet(str(out.dir / "data" / "train-00000-of-00001.parquet"))
        _plot_and_card(c, out, metrics, "judge-labelled quality head", start)
    return metrics


def _judge_name(c: QualityJudgeConfig) -> str:
    if c.labels_file:
        return f"labels file {Path(c.labels_file).name}"
    return f"{c.judge_backend}: {c._backend.model} ({'next-token log-probs' if c._judge.uses_logprobs else 'parsed answers'})"


def _card(c, metrics: dict, title: str):
    from ..hub.cards import render_model_card

    eval_results = [{"task_type": "text-classification", "dataset_type": "hf-ext/heldout-pages", "dataset_name": name,
                     "metric_type": "roc_auc", "metric_value": round(r["auc"], 4)} for name, r in metrics["heldout"].items()]
    base = c._embedder.model if metrics["scorer"] != "fasttext" else None
    card_data = {"license": "apache-2.0", "library_name": "hf-ext" if base is None else "transformers",
                 "tags": ["hf-ext", "data-curation", "quality-classifier", metrics["scorer"]]}
    if base:
        card_data.update(base_model=base, base_model_relation="adapter")
    settings = {k: v for k, v in asdict(c).items() if k not in HUB_FIELDS and k != "judge"}
    return render_model_card("quality_scorer.md.j2", card_data, eval_results=eval_results, model_name=title, title=title,
                             metrics=metrics, settings=settings, plot="heldout_auc.png" if metrics["heldout"] else None)
