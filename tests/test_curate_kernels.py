"""The compiled Gopher repetition loops (hf_ext.curate.kernels) against the regex + numpy path:
same words, same first failing n-gram rule, same filter decisions."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from hf_ext.curate import kernels
from hf_ext.curate.base import Doc
from hf_ext.curate.heuristics import GOPHER_DUP_NGRAMS, GOPHER_TOP_NGRAMS, GopherRepetitionFilter
from hf_ext.curate.text import _uax29, word_ids, words

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed (the curate extra)")
WEB = Path(__file__).parent / "data" / "web"


def _texts(name, field="text"):
    with gzip.open(WEB / name, "rt", encoding="utf-8") as f:
        return [json.loads(line)[field] for line in f]


BUNDLED = _texts("c4_en_train_first150.jsonl.gz") + _texts("flores200_devtest_10per_lang.jsonl.gz") + _texts("wikipedia_demo_first6.jsonl.gz")
# Characters every branch of the segmentation treats differently: letters (ASCII, accented, Arabic-Indic
# digits), joiners, mid-letter / mid-number punctuation, other alphanumerics (½ ², CJK), a letter that is
# not alphanumeric (˂), a lone surrogate, spaces, and characters that need the full rules (combining
# mark, ZWJ, soft hyphen, Hebrew, katakana, emoji).
ALPHABET = list("aZé1٣_‿'.:,;\u2019\u00b7 \n\u00bd\u00b2\u6771\u02c2\u202fx9-\ud800") + ["\u0301", "\u200d", "\u00ad", "\u05d0", "\u30a2", "\U0001F600"]
FAST_ALPHABET = ALPHABET[: -6]


def _random_texts(alphabet, count, seed, max_len=14):
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(count)]


def _same_partition(a, b):
    """Equal entries of `a` are exactly the equal entries of `b`."""
    return len(set(zip(a, b))) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("texts", [BUNDLED, _random_texts(ALPHABET, 4000, 0), _random_texts(FAST_ALPHABET, 4000, 1, 40)],
                         ids=["bundled", "random", "random_fast_path"])
def test_word_arrays_are_words(texts):
    needs_full_rules = _uax29()[1]
    fast = 0
    for text in texts:
        arrays = kernels.word_arrays(text)
        assert (arrays is None) == bool(needs_full_rules.search(text)), repr(text)
        if arrays is None:
            continue
        fast += 1
        ids, starts, lengths = arrays
        got = [text[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist())]
        assert got == words(text), repr(text)
        assert _same_partition(got, ids.tolist()), repr(text)
    assert fast > len(texts) // 3


def _repetitive_texts(count, seed):
    """Pages from a small vocabulary with repeated lines and phrases: every n-gram rule fires on some."""
    rng = random.Random(seed)
    vocab = [f"w{i}" * rng.randint(1, 4) for i in range(rng.randint(3, 40))]
    out = []
    for _ in range(count):
        ws = [rng.choice(vocab) for _ in range(rng.randint(0, 120))]
        for _ in range(rng.randint(0, 3)):  # paste a repeated phrase
            if len(ws) > 12:
                a = rng.randrange(len(ws) - 11)
                ws[a:a] = ws[a : a + rng.randint(2, 11)]
        out.append("".join(w + rng.choice("      \n") for w in ws))  # some lines repeat
    return out


RULE_SETS = [
    (GOPHER_TOP_NGRAMS, GOPHER_DUP_NGRAMS),
    (((1, 0.3), (2, 0.2), (6, 0.1)), ((5, 0.15), (6, 0.5), (8, 0.05))),  # unigrams, n in both, gaps
    ((), ((2, 0.2), (3, 0.1))),
    (((2, -1.0),), ()),  # a negative limit: every page with two words fails
]


@pytest.mark.parametrize("rules", RULE_SETS, ids=["gopher", "mixed", "dup_only", "negative"])
def test_first_failing_rule_equals_numpy_path(rules):
    top, dup = rules
    g = GopherRepetitionFilter(top_ngrams=top, dup_ngrams=dup)
    compiled = kernels.NgramRules(g.top_ngrams, g.dup_ngrams)
    texts = BUNDLED + _repetitive_texts(1500, 2) + ["", "one", "a b", "a a a a a a a a a a a a"]
    seen = []
    for text in texts:
        doc = Doc(text)
        tokens = doc.words
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        expected = g._ngram_stats(doc, early=True)
        assert compiled.first_failure(word_ids(tokens), lengths) == expected, repr(text[:200])
        seen.append(expected)
    if rules[0] is GOPHER_TOP_NGRAMS:  # the generated pages reach every default rule and passes
        assert {None, "top_2_gram", "top_3_gram", "top_4_gram", "dup_5_gram"} <= set(seen)


def test_filter_decisions_equal_without_numba(monkeypatch):
    g = GopherRepetitionFilter()
    texts = BUNDLED + _repetitive_texts(500, 3) + _random_texts(ALPHABET, 500, 4, 60)
    compiled = [g(t) for t in texts]
    monkeypatch.setattr(kernels, "available", lambda: False)
    assert [g(t) for t in texts] == compiled
    reasons = {r for _, r in compiled}
    assert {None, "gopher_repetition:top_2_gram", "gopher_repetition:dup_line_frac"} <= reasons


def test_filter_fingerprint_unchanged_by_use():
    """The compiled rules live outside the filter: its pickle (datasets' map fingerprint) is the same after use."""
    from datasets.fingerprint import Hasher

    g = GopherRepetitionFilter(top_ngrams=((2, 0.25),))
    before = Hasher.hash(g)
    g("a b a b a b c d")
    assert Hasher.hash(g) == before
