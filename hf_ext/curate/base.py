"""The two kinds of curation step and the document they act on.

A **filter** returns ``(keep, reason)`` for a document (datatrove's convention; ``reason`` is
``None`` when kept). A **modifier** returns new text (line edits, URL removal). Both see a
`Doc`, which caches the splits several rules share, and both have a ``name`` used in drop
counts. Steps that need a model load it lazily, so they pickle small for ``num_proc`` and
datatrove workers.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from .text import fasttext_word_count, fasttext_words, segments, words


class Doc:
    """A document's text and URL, with its word/line splits computed once and shared.

    Args:
        text (`str`):
            The document text.
        url (`str` or `None`, *optional*, defaults to `None`):
            The document's URL, for the URL rules (`URLBlocklistFilter`).
        meta (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Per-document values steps pass to later steps (e.g. ``words_before_edits``, ``language``); a new empty
            dict when `None`.
    """

    def __init__(self, text: str, url: str | None = None, meta: dict[str, Any] | None = None):
        self.text = text
        self.url = url
        self.meta = meta if meta is not None else {}

    @cached_property
    def words(self) -> list[str]:  # UAX #29 words starting with an alphanumeric (repetition)
        return words(self.text)

    @cached_property
    def fasttext_words(self) -> list[str]:  # fastText tokens starting with an alphanumeric (page length)
        return fasttext_words(self.text)

    @cached_property
    def fasttext_word_count(self) -> int:  # len(fasttext_words), from ws_words when they agree
        return fasttext_word_count(self.text, self.ws_words)

    @cached_property
    def ws_words(self) -> list[str]:  # str.split() words (DCLM's other rules)
        return self.text.split()

    @cached_property
    def lines(self) -> list[str]:  # stripped, non-empty (DCLM's split_paragraphs)
        return segments(self.text, "\n")

    @cached_property
    def paragraphs(self) -> list[str]:
        return segments(self.text, "\n\n")


class Filter:
    """Base of document filters: subclasses implement ``check(doc) -> (keep, reason)``."""

    name = "filter"
    needs_url = False

    def check(self, doc: Doc) -> tuple[bool, str | None]:
        raise NotImplementedError

    def __call__(self, text: str, url: str | None = None) -> tuple[bool, str | None]:
        return self.check(Doc(text, url))

    def check_batch(self, docs: list[Doc]) -> list[tuple[bool, str | None]]:
        """Override when a batch is cheaper than one document at a time (model scorers)."""
        return [self.check(d) for d in docs]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Modifier:
    """Base of text modifiers: subclasses implement ``modify(doc) -> str``."""

    name = "modifier"

    def modify(self, doc: Doc) -> str:
        raise NotImplementedError

    def __call__(self, text: str) -> str:
        return self.modify(Doc(text))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
