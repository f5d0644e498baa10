"""Named curation pipelines: an ordered list of filters and modifiers run over batches of
documents, usable with ``datasets`` (``ds.map(pipeline.map_fn(), batched=True)`` or
``ds.filter(pipeline.filter_fn(), batched=True)``; `curation_stats` counts the drops from the
mapped dataset), from Python, and (via
`hf_ext.curate.datatrove_steps`) inside datatrove executors. Every drop records one reason
(a modifier that leaves no text drops the document under the modifier's name), and the
pipeline counts drops per step.

>>> pipe = CurationPipeline.from_name("gopher_quality")
>>> pipe.process(["The quick brown fox jumps over the lazy dog. " * 10, "Buy now!"])[1]
[True, False]
>>> dict(pipe.drop_counts)
{'page_length': 1}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from .base import Doc, Filter, Modifier
from .heuristics import (
    AlphabeticWordsFilter,
    BulletLinesFilter,
    EllipsisLinesFilter,
    GopherRepetitionFilter,
    PageLengthFilter,
    StopWordsFilter,
    SymbolRatioFilter,
    WordLengthFilter,
)
from .html import HTMLExtractor, HTMLFlagFilter
from .langid import LanguageIDFilter
from .llama3 import DirtyWordsFilter, DuplicatedNgramCoverageFilter, TokenKLFilter, dedup_lines_in_bucket
from .modifiers import NewlineCollapse, RefinedWebLineEdits, URLRemoval, WordRemovalRatioFilter
from .urls import URLBlocklistFilter


class LineDedupBucket:
    """Llama 3 line-level dedup over the current batch (the bucket): drop lines occurring more
    than ``max_occurrences`` times among the batch's surviving documents.

    Args:
        max_occurrences (`int`, *optional*, defaults to `6`):
            A line seen more often than this in the batch is removed from every document (Llama 3's value).
    """

    name = "line_dedup"

    def __init__(self, max_occurrences: int = 6):
        self.max_occurrences = max_occurrences

    def apply(self, texts: list[str]) -> list[str]:
        return dedup_lines_in_bucket(texts, self.max_occurrences)[0]

    def __repr__(self) -> str:
        return f"LineDedupBucket(max_occurrences={self.max_occurrences})"


# Step name -> class. Options in recipes (`step_options`) are these classes' arguments.
STEPS: dict[str, Callable[..., Any]] = {
    "html_flag": HTMLFlagFilter,
    "html_extract": HTMLExtractor,
    "url_blocklist": URLBlocklistFilter,
    "url_removal": URLRemoval,
    "newline_collapse": NewlineCollapse,
    "language_id": LanguageIDFilter,
    "page_length": PageLengthFilter,
    "word_length": WordLengthFilter,
    "symbol_ratio": SymbolRatioFilter,
    "bullet_lines": BulletLinesFilter,
    "ellipsis_lines": EllipsisLinesFilter,
    "alphabetic_words": AlphabeticWordsFilter,
    "stop_words": StopWordsFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "refinedweb_line_edits": RefinedWebLineEdits,
    "word_removal_ratio": WordRemovalRatioFilter,
    "line_dedup": LineDedupBucket,
    "dup_ngram_coverage": DuplicatedNgramCoverageFilter,
    "dirty_words": DirtyWordsFilter,
    "token_kl": TokenKLFilter,
}

_GOPHER_QUALITY = ["page_length", "word_length", "symbol_ratio", "bullet_lines", "ellipsis_lines", "alphabetic_words", "stop_words"]

# DCLM-Baseline's heuristic sequence (SPECS §3), in order; dedup and the quality classifier
# run after it (`CurateConfig.dedup`, `CurateConfig.quality_model`).
PIPELINES: dict[str, list[str]] = {
    "dclm_baseline": [
        "url_blocklist", "url_removal", "newline_collapse", "language_id", *_GOPHER_QUALITY,
        "gopher_repetition", "refinedweb_line_edits", "word_removal_ratio",
    ],
    # The same without the URL rules, for text with no URL column.
    "dclm_heuristics": [
        "newline_collapse", "language_id", *_GOPHER_QUALITY, "gopher_repetition", "refinedweb_line_edits", "word_removal_ratio",
    ],
    "gopher_quality": _GOPHER_QUALITY,
    "llama3": ["language_id", "line_dedup", "dup_ngram_coverage", "dirty_words", "page_length"],
}


# DCLM's function names (mlfoundations/dclm baselines/mappers) -> the hf_ext step that does the
# same, for comparing drop reasons with DCLM's own output (benchmarks/dclm_reference.py).
DCLM_FUNCTIONS: dict[str, str] = {
    "url_substring_filter": "url_blocklist",
    "url_removal_modifier": "url_removal",
    "newline_removal_modifier": "newline_collapse",
    "language_filter": "language_id",
    "page_length_filter": "page_length",
    "word_length_filter": "word_length",
    "symbol_ratio_filter": "symbol_ratio",
    "bullet_count_filter": "bullet_lines",
    "ellipsis_count_filter": "ellipsis_lines",
    "alphabetic_word_ratio_filter": "alphabetic_words",
    "stop_word_filter": "stop_words",
    "massive_web_repetition_filters": "gopher_repetition",
    **dict.fromkeys(
        ["uppercase_ratio_line_modifier", "numeric_ratio_line_modifier", "counter_line_modifier",
         "line_length_modifier", "substring_line_modifier"], "refinedweb_line_edits"),
    "word_removal_ratio_filter": "word_removal_ratio",
}


def build_step(spec: str | Filter | Modifier | LineDedupBucket, options: dict[str, Any] | None = None):
    """The step object for a step name (`STEPS`), built with `options`; a step object is returned as it is.

    Args:
        spec (`str` or `Filter` or `Modifier` or `LineDedupBucket`):
            A registered step name, or an already built step.
        options (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Keyword arguments of the step's class (ignored for a built step); a wrong one raises `InputError`.
    """
    if not isinstance(spec, str):
        return spec
    if spec not in STEPS:
        raise InputError(f"Unknown curation step {spec!r}. Registered steps: {sorted(STEPS)}.")
    try:
        return STEPS[spec](**(options or {}))
    except TypeError as exc:
        raise InputError(f"Bad options {options!r} for step {spec!r}: {exc}") from None


def clean_text(value: Any, column: str, row: int) -> str:
    """Text as a valid UTF-8 str: bytes decode with U+FFFD for bad sequences, lone surrogates
    (from surrogateescape reads of non-UTF-8 files) become U+FFFD, None becomes "".

    Args:
        value (`Any`):
            The cell: `str`, `bytes`, `bytearray` or None; anything else raises `InputError`.
        column (`str`):
            Name of the column it came from (for the error message).
        row (`int`):
            Index of the row it came from (for the error message).
    """
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise InputError(f"Column {column!r} must hold text; row {row} is a {type(value).__name__} ({value!r:.60}).")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:  # surrogateescape'd bytes back to bytes, then decoded with U+FFFD
            value = value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
        except UnicodeEncodeError:
            value = value.encode("utf-16", errors="surrogatepass").decode("utf-16", errors="replace")
    return value


class CurationPipeline:
    """An ordered list of curation steps with per-step drop counts.

    Args:
        steps (`Sequence`):
            Step names (see `STEPS`) or step objects, in order.
        step_options (`dict[str, dict]` or `None`, *optional*, defaults to `None`):
            ``{step name: {argument: value}}`` for named steps.
        name (`str`, *optional*, defaults to `"custom"`):
            A label for cards and logs.
    """

    def __init__(self, steps: Sequence, step_options: dict[str, dict] | None = None, name: str = "custom"):
        step_options = step_options or {}
        unknown = set(step_options) - {s for s in steps if isinstance(s, str)}
        if unknown:
            raise InputError(f"step_options names steps that are not in the pipeline: {sorted(unknown)}. Steps: {list(steps)}.")
        self.steps = [build_step(s, step_options.get(s) if isinstance(s, str) else None) for s in steps]
        self.name = name
        self.drop_counts: Counter = Counter()
        self.seen = 0

    @classmethod
    def from_name(cls, name: str, step_options: dict[str, dict] | None = None) -> "CurationPipeline":
        if name not in PIPELINES:
            raise InputError(f"Unknown pipeline {name!r}. Named pipelines: {sorted(PIPELINES)} (or pass a list of steps).")
        return cls(PIPELINES[name], step_options=step_options, name=name)

    @property
    def needs_url(self) -> bool:
        return any(getattr(s, "needs_url", False) for s in self.steps)

    def process(self, texts: Sequence, urls: Sequence | None = None, column: str = "text"):
        """Run every step over one batch (a bucket for `line_dedup`).

        Returns:
            ``(texts, keep, reasons)``: edited texts (unchanged for dropped documents), keep
            flags, and the first drop reason of each dropped document (None when kept).
        """
        if urls is not None and len(urls) != len(texts):
            raise InputError(f"Got {len(texts)} texts but {len(urls)} URLs.")
        docs = [Doc(clean_text(t, column, i), None if urls is None else urls[i]) for i, t in enumerate(texts)]
        reasons: list[str | None] = [None] * len(docs)
        for i, d in enumerate(docs):
            if not d.text.strip():
                reasons[i] = "empty"
        for step in self.steps:
            alive = [i for i, r in enumerate(reasons) if r is None]
            if not alive:
                break
            if isinstance(step, Filter):
                for i, (keep, reason) in zip(alive, step.check_batch([docs[i] for i in alive])):
                    if not keep:
                        reasons[i] = reason or step.name
            elif isinstance(step, LineDedupBucket):
                for i, text in zip(alive, step.apply([docs[i].text for i in alive])):
                    if text != docs[i].text:
                        docs[i] = Doc(text, docs[i].url, docs[i].meta)
            else:
                for i in alive:
                    new = step.modify(docs[i])
                    if not new:  # an edit that leaves nothing removes the page (DCLM's modifiers)
                        reasons[i] = step.name
                    elif new != docs[i].text:
                        docs[i] = Doc(new, docs[i].url, docs[i].meta)
        self.seen += len(docs)
        self.drop_counts.update(r.split(":")[0] for r in reasons if r)
        return [d.text for d in docs], [r is None for r in reasons], reasons

    def map_fn(self, text_column: str = "text", url_column: str | None = None) -> Callable[[dict], dict]:
        """A ``ds.map(fn, batched=True)`` function writing the edited text and the columns
        ``keep`` and ``drop_reason``."""

        def fn(batch: dict) -> dict:
            _require(batch, text_column, url_column)
            texts, keep, reasons = self.process(batch[text_column], batch[url_column] if url_column else None, text_column)
            return {text_column: texts, "keep": keep, "drop_reason": [r or "" for r in reasons]}

        return fn

    def filter_fn(self, text_column: str = "text", url_column: str | None = None) -> Callable[[dict], list[bool]]:
        """A ``ds.filter(fn, batched=True)`` function (modifiers affect decisions, not the text)."""

        def fn(batch: dict) -> list[bool]:
            _require(batch, text_column, url_column)
            return self.process(batch[text_column], batch[url_column] if url_column else None, text_column)[1]

        return fn

    def __repr__(self) -> str:
        return f"CurationPipeline(name={self.name!r}, steps={self.steps!r})"


def curation_stats(ds, reason_column: str = "drop_reason") -> dict[str, Any]:
    """Drop statistics computed from a curated dataset's ``drop_reason`` column (what
    `CurationPipeline.map_fn` writes; ``""`` means kept), so they are right after a
    ``datasets`` cache hit and with ``num_proc > 1``, where ``pipe.drop_counts`` (counted on
    the Python object in the worker) stays empty.

    Args:
        ds (`datasets.Dataset` or `dict`):
            The mapped dataset (or a dict of columns) holding `reason_column`.
        reason_column (`str`, *optional*, defaults to `"drop_reason"`):
            Column of drop reasons; ``""`` or None marks a kept document.

    Returns:
        ``{"total", "kept", "dropped", "drop_counts"}`` with ``drop_counts`` per step (the reason
        before ":"), most frequent first, and ``"drop_reasons"`` per full reason
        (e.g. ``gopher_repetition:dup_5_gram``).
    """
    names = getattr(ds, "column_names", None) or list(ds)
    if reason_column not in names:
        raise InputError(f"The dataset has no {reason_column!r} column (columns: {names}); run the pipeline's map_fn first.")
    reasons = Counter(ds[reason_column])
    kept = reasons.pop("", 0) + reasons.pop(None, 0)
    steps: Counter = Counter()
    for reason, n in reasons.items():
        steps[reason.split(":")[0]] += n
    total = kept + sum(reasons.values())
    return {"total": total, "kept": kept, "dropped": total - kept, "drop_counts": dict(steps.most_common()),
            "drop_reasons": dict(reasons.most_common())}


def _require(batch: dict, text_column: str, url_column: str | None) -> None:
    for column, what in ((text_column, "text_column"), (url_column, "url_column")):
        if column is not None and column not in batch:
            raise InputError(
                f"The dataset has no column {column!r} ({what}); columns: {sorted(batch)}. "
                f"Set {what} to the right column" + (" or drop the URL steps." if what == "url_column" else ".")
            )
