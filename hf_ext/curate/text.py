"""Text units shared by the rules: words, lines, paragraphs, and n-gram keys.

DCLM counts words with ``split_words(text, ignore_punctuation=True)``: tokens whose first
character is alphanumeric, from one of two tokenizers.

- `fasttext_words`: fastText's ``FastText.tokenize`` (split on the ASCII whitespace bytes
  `` \\n\\r\\t\\v\\f\\0``), DCLM's default — the page-length rule and the "words removed by the
  line edits" rule.
- `words`: Unicode word segmentation (UAX #29, ``uniseg.wordbreak.words``) — the Gopher
  repetition rules. One compiled regex implements the segmentation rules over character classes
  taken from the Unicode Word_Break property; text holding the characters that rule WB4
  attaches to the previous character (combining marks, format characters, ZWJ), Hebrew
  letters, katakana or characters beyond the Basic Multilingual Plane (emoji) goes through the ``regex`` module's UAX #29 word boundaries instead. Both agree with
  uniseg 0.10 (Unicode 16) token for token (tests/test_curate_text.py).

The other DCLM rules (word length, symbols, alphabetic words, stop words) use ``str.split()``
exactly as DCLM does, and lines/paragraphs are DCLM's ``split_paragraphs``: stripped, empty ones
removed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import chain
from operator import itemgetter

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for rolling n-gram keys
_FT_SEP = " \n\r\t\v\f\x00"  # fastText's word separators (Dictionary::readWord)
_FASTTEXT_WORD_RE = re.compile(rf"(?<![^{re.escape(_FT_SEP)}])[^\W_][^{re.escape(_FT_SEP)}]*")


# Characters str.split() splits on but fastText does not, and fastText's NUL: without them the
# two tokenizations are the same.
_SPLIT_DIFFERS_RE = re.compile("[\x00" + "".join(c for c in map(chr, range(0x10000)) if c.isspace() and c not in _FT_SEP) + "]")


def fasttext_words(text: str) -> list[str]:
    """fastText whitespace tokens that start with an alphanumeric character: DCLM's
    ``split_words(text, ignore_punctuation=True)`` with its default ``model="fasttext"``.

    Args:
        text (`str`):
            The document text to tokenize.
    """
    return _FASTTEXT_WORD_RE.findall(text)


def fasttext_word_count(text: str, ws_words: list[str] | None = None) -> int:
    """``len(fasttext_words(text))``; from ``ws_words = text.split()`` (if given) when the text
    has no whitespace that only str.split() splits on (no-break spaces, U+2028...) and no NUL.

    Args:
        text (`str`):
            The document text whose fastText words are counted.
        ws_words (`list[str]` or `None`, *optional*, defaults to `None`):
            ``text.split()``, when already computed: counts its tokens that start with an alphanumeric instead of
            re-tokenizing (ignored when the text holds a separator only one of the two tokenizers splits on).
    """
    if ws_words is None or _SPLIT_DIFFERS_RE.search(text):
        return len(_FASTTEXT_WORD_RE.findall(text))
    return sum(map(str.isalnum, map(itemgetter(0), ws_words)))


def _char_class(chars) -> str:
    """A regex character class body matching exactly `chars` (ranges of consecutive code points)."""
    points = sorted(set(map(ord, chars)))
    parts, i = [], 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        a, b = chr(points[i]), chr(points[j])
        parts.append(re.escape(a) if i == j else f"{re.escape(a)}-{re.escape(b)}")
        i = j + 1
    return "".join(parts)


@lru_cache(maxsize=1)
def word_break_sets() -> dict[str, str]:
    """The Basic Multilingual Plane's characters by the role `words` gives them, from the
    ``regex`` module's Word_Break property tables: ``letters`` (ALetter), ``digits``
    (Numeric), ``joiners`` (ExtendNumLet), ``mid_letter`` / ``mid_num`` (a character that joins
    two letters / two digits), ``other_alnum`` (other alphanumerics: one-character words),
    ``full_rules`` (characters whose text takes the full UAX #29 rules)."""
    import regex

    # Basic Multilingual Plane only: classes with supplementary-plane ranges compile to slow
    # range lists in `re`; text with such characters takes the full-rules path.
    every = "".join(map(chr, chain(range(0xD800), range(0xE000, 0x10000))))

    def prop(*values):
        return "".join(regex.findall("[" + "".join(rf"\p{{Word_Break={v}}}" for v in values) + "]", every))

    letters, digits, joiners, kana = prop("ALetter"), prop("Numeric"), prop("ExtendNumLet"), set(prop("Katakana"))
    word_chars = set(letters + digits + joiners)
    return {
        "letters": letters, "digits": digits, "joiners": joiners,
        "mid_letter": prop("MidLetter", "MidNumLet", "Single_Quote"), "mid_num": prop("MidNum", "MidNumLet", "Single_Quote"),
        "other_alnum": "".join(c for c in re.findall(r"[^\W_]", every) if c not in word_chars and c not in kana),
        "full_rules": prop("Extend", "Format", "ZWJ", "Hebrew_Letter", "Katakana"),
    }


@lru_cache(maxsize=1)
def _uax29():
    """(fast pattern, characters that need the full rules, non-alphanumeric word starts, boundary
    regex), built once from `word_break_sets`."""
    import regex

    sets = word_break_sets()
    letters, digits, joiners = sets["letters"], sets["digits"], sets["joiners"]
    A, N, run = f"[{_char_class(letters)}]", f"[{_char_class(digits)}]", f"[{_char_class(letters + digits + joiners)}]++"
    # A run of letters, digits and joiners is one word (WB5, WB8-10, WB13a/b); one mid character
    # between two letters (WB6/7) or two digits (WB11/12) continues it; every other alphanumeric
    # is a word of its own (WB999). Katakana (WB13) takes the full-rules path.
    fast = re.compile(
        rf"{run}(?:(?<={A})[{_char_class(sets['mid_letter'])}](?={A}){run}|(?<={N})[{_char_class(sets['mid_num'])}](?={N}){run})*+"
        rf"|[{_char_class(sets['other_alnum'])}]"
    )
    needs_full_rules = re.compile(f"[{_char_class(sets['full_rules'])}\\U00010000-\\U0010ffff]")
    odd_start = re.compile(f"[{_char_class(c for c in letters + digits + joiners if not c.isalnum())}]")
    boundaries = regex.compile(r"\b", flags=regex.WORD | regex.V1)
    return fast, needs_full_rules, odd_start, boundaries


def words(text: str) -> list[str]:
    """UAX #29 words that start with an alphanumeric character: DCLM's
    ``split_words(text, model="uniseg", ignore_punctuation=True)`` (the repetition rules).

    Args:
        text (`str`):
            The document text to segment into words.
    """
    fast, needs_full_rules, odd_start, boundaries = _uax29()
    if needs_full_rules.search(text):
        cuts = sorted({0, len(text), *(m.start() for m in boundaries.finditer(text))})
        return [text[a:b] for a, b in zip(cuts, cuts[1:]) if text[a].isalnum()]
    tokens = fast.findall(text)
    if odd_start.search(text):  # a word may start with "_" or a non-alphanumeric letter: DCLM drops it
        tokens = [t for t in tokens if t[0].isalnum()]
    return tokens


def segments(text: str, sep: str = "\n") -> list[str]:
    """Stripped non-empty lines (``sep="\\n"``) or paragraphs (``sep="\\n\\n"``): DCLM's
    ``split_paragraphs(text, sep, remove_empty=True)``.

    Args:
        text (`str`):
            The document text to split.
        sep (`str`, *optional*, defaults to `"\\n"`):
            Separator to split on: ``"\\n"`` for lines, ``"\\n\\n"`` for paragraphs.
    """
    return [p for s in text.split(sep) if (p := s.strip())]


def word_ids(tokens: list[str]) -> np.ndarray:
    """64-bit ids of words (equal words get equal ids: Python's string hash, computed in C;
    two different words collide with probability ~2^-64).

    Args:
        tokens (`list[str]`):
            The words, in document order; the result has one id per word.
    """
    return np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens)).view(np.uint64)


def ngram_keys(ids: np.ndarray, n: int, prev: np.ndarray | None = None) -> np.ndarray:
    """64-bit keys of every n-gram of `ids` (collisions ~2^-64). Pass the (n-1)-gram keys as
    `prev` to extend them in O(len) instead of recomputing.

    Args:
        ids (`np.ndarray`):
            ``uint64`` word ids (from `word_ids`), in document order.
        n (`int`):
            N-gram length; the result has ``len(ids) - n + 1`` keys (none when `ids` is shorter than `n`).
        prev (`np.ndarray` or `None`, *optional*, defaults to `None`):
            The ``(n-1)``-gram keys of the same `ids` (this function's result for ``n - 1``), extended by one word
            each instead of hashing every n-gram from scratch.
    """
    if len(ids) < n:
        return np.zeros(0, dtype=np.uint64)
    if prev is None:
        keys = ids[: len(ids) - n + 1].copy() + np.uint64(1)
        for k in range(1, n):
            keys = keys * _MIX + ids[k : len(ids) - n + 1 + k] + np.uint64(1)
        return keys
    return prev[:-1] * _MIX + ids[n - 1 :] + np.uint64(1)
