"""Text edits of DCLM-Baseline: URL removal, newline collapse, and RefinedWeb's line edits
followed by the "more than 5% of words removed" rule.

>>> RefinedWebLineEdits()("HELLO WORLD\\nA normal line of text here.\\n12 likes")
'A normal line of text here.'
"""

from __future__ import annotations

import re

from .base import Doc, Filter, Modifier

_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_NEWLINES_RE = re.compile(r"\n{3,}")
# "12 likes", "1.2K shares", "3 comments" ... (RefinedWeb's counter lines)
_COUNTER_RE = re.compile(
    r"^\W*\d(?:,|\.|\d)*(?:[KMB])?\s+"
    r"(?:likes?|shares?|comments?|retweets?|reposts?|quotes?|bookmarks?|upvotes?|downvotes?|downloads?|views?|followers?)\W*$",
    re.IGNORECASE,
)


class URLRemoval(Modifier):
    """Remove URLs (http(s)://… and www.…) from the text."""

    name = "url_removal"

    def modify(self, doc: Doc) -> str:
        return _URL_RE.sub("", doc.text)


class NewlineCollapse(Modifier):
    """Collapse runs of newlines to at most ``max_consecutive`` (DCLM: 2)."""

    name = "newline_collapse"

    def __init__(self, max_consecutive: int = 2):
        self.max_consecutive = max_consecutive
        self._re = re.compile(r"\n{%d,}" % (max_consecutive + 1))

    def modify(self, doc: Doc) -> str:
        return self._re.sub("\n" * self.max_consecutive, doc.text)


# (substring, where) pairs RefinedWeb strips from short lines.
REFINEDWEB_SUBSTRINGS = (("items in cart", "any"), ("Read more...", "suffix"), ("Sign-in", "prefix"))


class RefinedWebLineEdits(Modifier):
    """RefinedWeb's line-level corrections, in DCLM's order: drop lines with > 50% uppercase
    characters, all-numeric lines, counter lines ("12 likes"), lines with fewer than 2 words;
    strip "items in cart" / "Read more..." (at the end) / "Sign-in" (at the start) from lines
    of at most 10 words. The document's word count before the edits is stored in
    ``doc.meta["words_before_edits"]`` for `WordRemovalRatioFilter`."""

    name = "refinedweb_line_edits"

    def __init__(self, max_uppercase_ratio: float = 0.5, min_words: int = 2, substring_max_words: int = 10):
        self.max_uppercase_ratio, self.min_words, self.substring_max_words = max_uppercase_ratio, min_words, substring_max_words

    def edit_line(self, line: str) -> str | None:
        stripped = line.strip()
        if not stripped:
            return line
        if sum(c.isupper() for c in stripped) / len(stripped) > self.max_uppercase_ratio:
            return None
        if stripped.replace(" ", "").isnumeric():
            return None
        if _COUNTER_RE.match(stripped):
            return None
        n_words = len(stripped.split())
        if n_words < self.min_words:
            return None
        if n_words <= self.substring_max_words:
            for sub, where in REFINEDWEB_SUBSTRINGS:
                if where == "any" and sub in line:
                    line = line.replace(sub, "")
                elif where == "suffix" and line.rstrip().endswith(sub):
                    line = line.rstrip()[: -len(sub)]
                elif where == "prefix" and line.lstrip().startswith(sub):
                    line = line.lstrip()[len(sub) :]
            if not line.strip():
                return None
        return line

    def modify(self, doc: Doc) -> str:
        doc.meta.setdefault("words_before_edits", len(doc.words))
        kept = [e for e in (self.edit_line(line) for line in doc.text.split("\n")) if e is not None]
        return "\n".join(kept).strip("\n")


class WordRemovalRatioFilter(Filter):
    """Drop the document if the edits removed more than ``max_removed_ratio`` of its words
    (DCLM: 5%), comparing ``doc.meta["words_before_edits"]`` with the current word count."""

    name = "word_removal_ratio"

    def __init__(self, max_removed_ratio: float = 0.05):
        self.max_removed_ratio = max_removed_ratio

    def check(self, doc: Doc):
        before = doc.meta.get("words_before_edits")
        if before is None:
            return True, None  # no edits ran before this filter
        if before == 0:
            return False, self.name
        removed = (before - len(doc.words)) / before
        return (False, self.name) if removed > self.max_removed_ratio else (True, None)
