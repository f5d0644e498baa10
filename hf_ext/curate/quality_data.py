"""Training and held-out data for quality classifiers that cannot win on style or length.

A classifier trained on instruction answers vs web pages learns "answer vs page", and one
trained on whole Wikipedia articles vs web pages learns "long vs short": both beat their own
held-out split and lose to ``len(text)`` on human quality labels. Here both classes are
*pages*: long, well-edited text (Wikipedia articles, books, long-form answers) is cut into
contiguous spans whose word counts are drawn from the negatives' own word-count distribution,
so length carries no label information, and the cuts fall on sentence or paragraph ends, so
a span reads like a page, not a fragment. Text inside a span is never edited.

>>> page_chunks("One two three. Four five six. Seven eight nine.", [4, 4])
['One two three. Four five six.', 'Seven eight nine.']
>>> strip_gutenberg_boilerplate("header\\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\\nbody\\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\\nlicence")
'body'
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import InputError

# A unit ends at a blank line (books, web pages) or after . ! ? followed by space (run-on
# Wikipedia lines without paragraph breaks).
_UNIT_END = re.compile(r"\n\s*\n|[.!?][\"'’”)\]]*\s+")
_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*?$", re.IGNORECASE | re.MULTILINE)
_GUTENBERG_END = re.compile(r"^(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg)",
                            re.IGNORECASE | re.MULTILINE)


def strip_gutenberg_boilerplate(text: str) -> str:
    """The book between Project Gutenberg's ``*** START OF`` marker and its ``End of Project
    Gutenberg`` / ``*** END OF`` line (the licence header and footer are the same on every
    book: a classifier would learn them).

    Args:
        text (`str`):
            A Project Gutenberg book; without the markers it is returned whole (stripped).
    """
    start = _GUTENBERG_START.search(text)
    body = text[start.end():] if start else text
    end = _GUTENBERG_END.search(body)
    return (body[: end.start()] if end else body).strip()


def page_chunks(text: str, lengths: Iterable[int]) -> list[str]:
    """Cut `text` into consecutive spans of at least the next word count from `lengths`, each
    ending at a sentence or paragraph end; stops when `lengths` or the text runs out (a last
    span shorter than its target is kept only when it has at least half of it).

    Args:
        text (`str`):
            The document to cut; its text is kept as it is inside each span (only the span ends are stripped).
        lengths (`Iterable[int]`):
            Target word counts (``str.split()`` words), one per span, in order.
    """
    ends = [m.end() for m in _UNIT_END.finditer(text)] + [len(text)]
    units = [text[a:b] for a, b in zip([0] + ends[:-1], ends) if text[a:b].strip()]
    out: list[str] = []
    targets = iter(lengths)
    target = next(targets, None)
    start, words = 0, 0
    for i, unit in enumerate(units):
        if target is None:
            break
        words += len(unit.split())
        if words >= target:
            out.append("".join(units[start : i + 1]).strip())
            start, words, target = i + 1, 0, next(targets, None)
    if target is not None and start < len(units) and words >= target / 2:
        out.append("".join(units[start:]).strip())
    return out


def length_matched_pages(texts: Sequence[str], reference: Sequence[str], n: int | None = None, seed: int = 0,
                         min_words: int = 50, max_words: int = 2000) -> list[str]:
    """Page-like spans of `texts` whose word counts follow those of `reference` (e.g. the web
    pages used as negatives), clipped to ``[min_words, max_words]``; at most `n` spans, taken
    evenly across the texts (one long book does not crowd out the rest).

    Args:
        texts (`Sequence[str]`):
            Long documents (articles, books, answers) in their original form.
        reference (`Sequence[str]`):
            Pages whose word-count distribution the spans copy.
        n (`int` or `None`, *optional*, defaults to `None`):
            Spans wanted (None: as many as the texts give).
        seed (`int`, *optional*, defaults to `0`):
            Seeds the sampled lengths and the choice of spans.
        min_words (`int`, *optional*, defaults to `50`):
            Reference word counts are raised to at least this, and spans with fewer words are left out.
        max_words (`int`, *optional*, defaults to `2000`):
            Reference word counts are lowered to at most this.
    """
    if not reference:
        raise InputError("length_matched_pages needs reference pages to copy the word-count distribution from.")
    rng = np.random.default_rng(seed)
    ref = np.clip([len(t.split()) for t in reference], min_words, max_words)
    per_text = []
    for text in texts:
        budget = len(text.split())
        draws = rng.choice(ref, size=max(1, int(2 * budget / max(1.0, ref.mean())) + 1))
        per_text.append(page_chunks(text, draws.tolist()))
    pages = [p for chunks in per_text for p in chunks if len(p.split()) >= min_words]
    if n is None or n >= len(pages):
        return pages
    # round-robin over the texts so every source text contributes
    order = [list(rng.permutation(len(chunks))) for chunks in per_text]
    picked: list[str] = []
    while len(picked) < n:
        progressed = False
        for chunks, idx in zip(per_text, order):
            while idx:
                page = chunks[idx.pop()]
                if len(page.split()) >= min_words:
                    picked.append(page)
                    progressed = True
                    break
            if len(picked) >= n:
                break
        if not progressed:
            break
    random.Random(seed).shuffle(picked)
    return picked


def word_count(texts: Sequence[str]) -> list[int]:
    """The length baseline: each text's number of whitespace-separated words.

    Args:
        texts (`Sequence[str]`):
            The texts (None counts as 0 words).
    """
    return [len((t or "").split()) for t in texts]


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC (ties count half), via scikit-learn.

    Args:
        labels (`Sequence[int]`):
            1 for the positive class, 0 for the other.
        scores (`Sequence[float]`):
            Higher means more likely positive.
    """
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(list(labels), list(scores)))
