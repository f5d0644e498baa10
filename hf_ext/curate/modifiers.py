"""Text edits of DCLM-Baseline: URL removal, newline collapse, and RefinedWeb's line edits
followed by the "more than 5% of words removed" rule.

>>> RefinedWebLineEdits()("HELLO WORLD\\nA normal line of text here.\\n12 likes")
'A normal line of text here.'
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import chain

import numpy as np

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
    """Collapse runs of newlines to at most ``max_consecutive`` (DCLM: 2).

    Args:
        max_consecutive (`int`, *optional*, defaults to `2`):
            Longest run of newlines kept.
    """

    name = "newline_collapse"

    def __init__(self, max_consecutive: int = 2):
        self.max_consecutive = max_consecutive
        self._re = re.compile(r"\n{%d,}" % (max_consecutive + 1))

    def modify(self, doc: Doc) -> str:
        if "\n" * (self.max_consecutive + 1) not in doc.text:  # nothing to collapse
            return doc.text
        return self._re.sub("\n" * self.max_consecutive, doc.text)


# The counter pattern without line anchors, on the whole lower-cased text: no match means no
# counter line (a match may span lines; then the lines are checked one by one).
_COUNTER_ANY_RE = re.compile(_COUNTER_RE.pattern.removeprefix("^\\W*").removesuffix("\\W*$"))


_COUNTER_WORDS = ("like", "share", "comment", "retweet", "repost", "quote", "bookmark", "upvote", "downvote", "download",
                  "view", "follower")


def _precheck(banned: str) -> tuple[str | None, set[str]]:
    """(a lower-case literal every match contains, the characters that match it
    case-insensitively although their lower case differs: ı, İ, ſ ...). No literal (the
    pattern starts with a regex operator): None, always run the pattern."""
    literal = re.split(r"[\\.^$*+?{}\[\]|()]", banned.lower())[0]
    if not literal:
        return None, set()
    return literal, {c for c in re.findall(f"(?i)[{re.escape(literal)}]", _every_char()) if c.lower() not in literal}


@lru_cache(maxsize=1)
def _every_char() -> str:
    return "".join(map(chr, chain(range(0xD800), range(0xE000, 0x110000))))


_UPPER, _DIGIT, _SPACE = 1, 2, 4  # bits of `_char_bits`


@lru_cache(maxsize=1)
def _char_bits() -> np.ndarray:
    """str.isupper() (bit 1), str.isdigit() (2) and str.isspace() (4) of every code point, as one
    uint8 lookup table (one ``take`` per document)."""
    every = range(0x110000)
    upper = np.fromiter((chr(c).isupper() for c in every), dtype=bool, count=0x110000)
    digit = np.fromiter((chr(c).isdigit() for c in every), dtype=bool, count=0x110000)
    space = np.fromiter((chr(c).isspace() for c in every), dtype=bool, count=0x110000)
    return (upper * _UPPER | digit * _DIGIT | space * _SPACE).astype(np.uint8)


def _line_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per line, the sum of `values` over its characters. `starts` are the lines' first
    positions (strictly increasing); each line's span runs to the next line's start, so it
    includes its newline, where every counted value is 0 — an empty line sums to 0."""
    return np.add.reduceat(np.append(values, values.dtype.type(0)), starts, dtype=np.int64)


def _strip_ends(current: list[int], lines: list[str], edited: dict[int, str]) -> list[int]:
    """The line-level effect of ``"\\n".join(lines).strip()``: all-whitespace lines at both ends
    go, the first line is left-stripped and the last right-stripped (kept in `edited`)."""
    line = lambda i: edited.get(i, lines[i])  # noqa: E731
    lo, hi = 0, len(current)
    while lo < hi and not line(current[lo]).strip():
        lo += 1
    while hi > lo and not line(current[hi - 1]).strip():
        hi -= 1
    current = current[lo:hi]
    if current:
        first, last = current[0], current[-1]
        if (s := line(first).lstrip()) != line(first):
            edited[first] = s
        if (s := line(last).rstrip()) != line(last):
            edited[last] = s
    return current


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
    document's ``\\n``-separated lines (DCLM's ``*_line_modifier`` steps):

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
    `WordRemovalRatioFilter`.

    Args:
        max_uppercase_ratio (`float`, *optional*, defaults to `0.5`):
            Pass 1: a line whose share of uppercase characters is above this is dropped (DCLM's default).
        max_numeric_ratio (`float`, *optional*, defaults to `0.999999`):
            Pass 2: a line whose share of digits is above this is dropped (DCLM's default: only all-digit lines).
        min_words (`int`, *optional*, defaults to `2`):
            Pass 4: a non-empty line with fewer ``str.split()`` words is dropped (DCLM's default).
        substring_max_words (`int`, *optional*, defaults to `10`):
            Pass 5 edits only lines of at most this many ``str.split()`` words (DCLM's default).
        substrings (`tuple`, *optional*, defaults to `REFINEDWEB_SUBSTRINGS`):
            Pass 5's ``(pattern, where)`` pairs: a case-insensitive regular expression and where it is removed,
            ``"prefix"`` (line start), ``"suffix"`` (line end) or ``"any"``; RefinedWeb's are "items in cart",
            "Read more..." and "Sign-in".
    """

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
        prechecks = [_precheck(b) for b, _ in self.substrings]
        self._literals = [literal for literal, _ in prechecks]
        odd = "".join(sorted({c for _, chars in prechecks for c in chars}))
        self._odd_case = re.compile(f"[{re.escape(odd)}]" if odd else "(?!)")

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
        doc.meta.setdefault("words_before_edits", doc.fasttext_word_count)
        text = doc.text
        try:
            code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:  # lone surrogates: the plain passes
            return self.modify_plain(text)
        bits = _char_bits().take(code_points)
        lines = text.split("\n")
        # per-line character counts of the original lines, in one vectorised pass: uppercase
        # characters in the low 32 bits of one sum, digits in the high 32 (lines < 2**32 chars)
        breaks = np.flatnonzero(code_points == 10)
        starts = np.concatenate(([0], breaks + 1))
        n_chars = np.append(breaks, len(code_points)) - starts
        packed = _line_sums((bits & _UPPER).astype(np.int64) | ((bits & _DIGIT).astype(np.int64) << 31), starts)
        with np.errstate(divide="ignore", invalid="ignore"):
            up_ok = (n_chars == 0) | ((packed & 0xFFFFFFFF) / n_chars <= self.max_uppercase_ratio)
            num_ok = (n_chars == 0) | ((packed >> 32) / n_chars <= self.max_numeric_ratio)
        lowered = text.lower()
        counter_ok = None if any(w in lowered for w in _COUNTER_WORDS) and _COUNTER_ANY_RE.search(lowered) else True
        current = list(range(len(lines)))
        edited: dict[int, str] = {}  # first/last lines changed by a pass's strip
        for vector, keep in ((up_ok, self._uppercase_ok), (num_ok, self._numeric_ok), (counter_ok, self._counter_ok)):
            if vector is not True and vector is not None and vector.all() and not edited:
                vector = True
            if vector is True:  # the pass removes no line
                survivors = current
            elif vector is None:  # checked line by line
                survivors = [i for i in current if keep(edited.get(i, lines[i]))]
            else:  # the vectorised verdict, except on lines a strip changed
                survivors = [i for i in current if (keep(edited[i]) if i in edited else vector[i])]
            current = _strip_ends(survivors, lines, edited)
            if not current:
                return ""
        # str.split() words per line (stripping the end lines does not change them)
        nonspace = (bits & _SPACE) == 0
        word_starts = nonspace.copy()
        word_starts[1:] &= ~nonspace[:-1]
        enough_words = (n_chars == 0) | (_line_sums(word_starts, starts) >= self.min_words)
        kept = [edited.get(i, lines[i]) for i in current if enough_words[i]]
        # a pattern can only match a line holding its literal (lower-cased), or a character that
        # matches the literal case-insensitively but lower-cases differently (checked once)
        odd_case = self._odd_case.search(text) is not None
        haystack = lowered  # lines are pieces of the original ones until a substring is removed
        settled = False  # stripped, and no all-whitespace line: a pass without a match changes nothing
        for pattern, literal in zip(self._patterns, self._literals):
            if odd_case or literal is None or literal in haystack:
                before = kept
                kept = self._strip_substrings("\n".join(kept), pattern).split("\n")
                settled = True
                if kept != before:
                    haystack = "\n".join(kept).lower()
            elif not settled:  # no line can match: only all-whitespace lines go, then the strip
                kept = "\n".join(line for line in kept if not line or not line.isspace()).strip().split("\n")
                settled = True
        return "\n".join(kept)

    def modify_plain(self, text: str) -> str:
        """The seven passes written out line by line, as DCLM runs them (the reference
        `modify` is tested against; also used for text that UTF-32 cannot encode)."""
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
    (both fastText tokens starting with an alphanumeric, DCLM's ``split_words``).

    Args:
        max_removed_ratio (`float`, *optional*, defaults to `0.05`):
            Largest share of the words the edits may remove.
    """

    name = "word_removal_ratio"

    def __init__(self, max_removed_ratio: float = 0.05):
        self.max_removed_ratio = max_removed_ratio

    def check(self, doc: Doc):
        before = doc.meta.get("words_before_edits")
        if before is None:
            return True, None  # no edits ran before this filter
        if before == 0:
            return False, self.name
        removed = (before - doc.fasttext_word_count) / before
        return (False, self.name) if removed > self.max_removed_ratio else (True, None)
