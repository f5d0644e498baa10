"""Text edits of DCLM-Baseline: URL removal, newline collapse, and RefinedWeb's line edits
followed by the "more than 5% of words removed" rule.

>>> RefinedWebLineEdits()("HELLO WORLD\\nA normal line of text here.\\n12 likes")
'A normal line of text here.'
"""

from __future__ import annotations

import re

from ..errors import InputError
from .base import Doc, Filter, Modifier

_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_NEWLINES_RE = re.compile(r"\n{3,}")
# RefinedWeb's counter lines ("12 likes", "1.2k shares"), matched on the lower-cased line; plural
# forms only, as in DCLM's counter_line_modifier.
_COUNTER_RE = re.compile(
    r"^\W*\d(?:,|\.|\d)*(?:K|k|M|m|B|b)?\s+"
    r"(?:likes|shares|comments|retweets|reposts|quotes|bookmarks|upvotes|downvotes|downloads|views|followers)\W*$"
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


# (pattern, where) RefinedWeb strips from lines of at most 10 words. As in DCLM the text is a
# case-insensitive regular expression ("Read more..." ends in three any-character dots) and one
# whitespace character before it ("any", "suffix") or after it ("prefix") goes with it.
REFINEDWEB_SUBSTRINGS = (("items in cart", "any"), ("Read more...", "suffix"), ("Sign-in", "prefix"))


def _substring_pattern(banned: str, where: str) -> re.Pattern:
    body = f"(?:{banned.lower()})"
    wrapped = {"prefix": rf"^{body}\s?", "suffix": rf"\s?{body}$", "any": rf"\s?{body}"}
    if where not in wrapped:
        raise InputError(f"RefinedWeb substring location {where!r} must be one of {sorted(wrapped)}.")
    return re.compile(wrapped[where], re.I)


class RefinedWebLineEdits(Modifier):
    """RefinedWeb's line-level corrections with DCLM's semantics and order, each a pass over the
    document's ``\n``-separated lines (DCLM's ``*_line_modifier`` steps):

    1. drop lines whose uppercase characters are more than ``max_uppercase_ratio`` of the
       line's characters (spaces included);
    2. drop lines whose digits are more than ``max_numeric_ratio`` of its characters (DCLM:
       0.999999, i.e. all-digit lines);
    3. drop counter lines ("12 likes", "3.4k views");
    4. drop non-empty lines with fewer than ``min_words`` ``str.split()`` words (a line of
       spaces counts as non-empty);
    5. on lines of at most ``substring_max_words`` words, remove each of `substrings` (a line
       left blank is dropped).

    Passes 1-3 and 5 strip the document's leading/trailing whitespace, pass 4 does not. A pass
    that leaves nothing empties the document, and the pipeline then drops it (DCLM removes the
    page). The document's word count before the edits (fastText tokens, as DCLM's
    ``word_counter_enricher``) is stored in ``doc.meta["words_before_edits"]`` for
    `WordRemovalRatioFilter`."""

    name = "refinedweb_line_edits"

    def __init__(
        self,
        max_uppercase_ratio: float = 0.5,
        max_numeric_ratio: float = 0.999999,
        min_words: int = 2,
        substring_max_words: int = 10,
        substrings: tuple = REFINEDWEB_SUBSTRINGS,
    ):
        self.max_uppercase_ratio, self.max_numeric_ratio = max_uppercase_ratio, max_numeric_ratio
        self.min_words, self.substring_max_words = min_words, substring_max_words
        self.substrings = tuple(tuple(x) for x in substrings)
        self._patterns = [_substring_pattern(b, where) for b, where in self.substrings]

    def _strip_substrings(self, text: str, pattern: re.Pattern) -> str:
        out = []
        for line in text.split("\n"):
            if len(line.split()) <= self.substring_max_words:
                edited = pattern.sub("", line)
                if line and (not edited or edited.isspace()):
                    continue
                line = edited
            out.append(line)
        return "\n".join(out).strip()

    def modify(self, doc: Doc) -> str:
        doc.meta.setdefault("words_before_edits", len(doc.fasttext_words))
        text = doc.text
        for keep in (self._uppercase_ok, self._numeric_ok, self._counter_ok):
            text = "\n".join(line for line in text.split("\n") if keep(line)).strip()
        text = "\n".join(line for line in text.split("\n") if not line or len(line.split()) >= self.min_words)
        for pattern in self._patterns:
            text = self._strip_substrings(text, pattern)
        return text

    def _uppercase_ok(self, line: str) -> bool:
        return not line or sum(map(str.isupper, line)) / len(line) <= self.max_uppercase_ratio

    def _numeric_ok(self, line: str) -> bool:
        return not line or sum(map(str.isdigit, line)) / len(line) <= self.max_numeric_ratio

    @staticmethod
    def _counter_ok(line: str) -> bool:
        return not _COUNTER_RE.search(line.lower())


class WordRemovalRatioFilter(Filter):
    """Drop the document if the edits removed more than ``max_removed_ratio`` of its words
    (DCLM: 5%), comparing ``doc.meta["words_before_edits"]`` with the current word count
    (both fastText tokens starting with an alphanumeric, DCLM's ``split_words``)."""

    name = "word_removal_ratio"

    def __init__(self, max_removed_ratio: float = 0.05):
        self.max_removed_ratio = max_removed_ratio

    def check(self, doc: Doc):
        before = doc.meta.get("words_before_edits")
        if before is None:
            return True, None  # no edits ran before this filter
        if before == 0:
            return False, self.name
        removed = (before - len(doc.fasttext_words)) / before
        return (False, self.name) if removed > self.max_removed_ratio else (True, None)
