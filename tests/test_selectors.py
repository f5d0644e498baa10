"""Selectors: longest picks the token-longest with stable ties; random is seeded; AlpaGasus
keeps judge scores >= 4.5; bad budgets and missing columns fail clearly."""

import numpy as np
import pytest
from datasets import Dataset

from hf_ext.errors import InputError
from hf_ext.select import get_selector, select
from hf_ext.select.scores import ResponseLengthScorer


def test_longest_picks_the_token_longest_in_rank_order():
    ds = Dataset.from_dict({"response_tokens": [5, 50, 7, 30, 1]})
    assert select(ds, "longest", 3) == [1, 3, 2]


def test_longest_ties_keep_pool_order():
    ds = Dataset.from_dict({"response_tokens": [4, 9, 4, 9, 4, 9, 1]})
    assert select(ds, "longest", 4) == [1, 3, 5, 0]
    # Reference: Python's sort is stable too.
    ref = sorted(range(7), key=lambda i: -ds["response_tokens"][i])[:4]
    assert select(ds, "longest", 4) == ref


def test_longest_matches_a_reference_on_random_data():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 20, size=500).tolist()  # many ties
    ds = Dataset.from_dict({"response_tokens": lengths})
    ref = sorted(range(500), key=lambda i: (-lengths[i], i))[:123]
    assert select(ds, "longest", 123) == ref


def test_random_is_seeded_without_replacement():
    ds = Dataset.from_dict({"x": list(range(1000))})
    a, b, c = select(ds, "random", 100, seed=1), select(ds, "random", 100, seed=1), select(ds, "random", 100, seed=2)
    assert a == b and a != c
    assert len(set(a)) == 100 and a == sorted(a) and 0 <= min(a) and max(a) < 1000


def test_alpagasus_keeps_scores_at_or_above_threshold_best_first():
    ds = Dataset.from_dict({"judge_score": [4.5, 3.0, 5.0, -1.0, 4.49, 4.5]})
    assert select(ds, "alpagasus", 6) == [2, 0, 5]
    assert select(ds, "alpagasus", 2) == [2, 0]
    assert select(ds, "alpagasus", 6, threshold=3.0) == [2, 0, 5, 4, 1]


@pytest.mark.parametrize("budget, fragment", [(0, "positive integer"), (-3, "positive integer"), (11, "larger than the pool (10 examples)")])
def test_bad_budgets(budget, fragment):
    ds = Dataset.from_dict({"response_tokens": list(range(10))})
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        select(ds, "longest", budget)


def test_missing_column_names_it():
    ds = Dataset.from_dict({"output": ["a"]})
    with pytest.raises(InputError, match="needs a column 'response_tokens'"):
        select(ds, "longest", 1)


def test_empty_pool_and_unknown_method():
    with pytest.raises(InputError, match="empty pool"):
        get_selector("longest").select({"response_tokens": []}, 1)
    with pytest.raises(InputError, match="Unknown selection method 'longestt'.*'longest'"):
        get_selector("longestt")


def test_response_length_scorer_counts_tokens_without_special_tokens():
    from hf_ext.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    texts = ["The cat sat on the mat.", "", "A much longer answer with many more words in it."]
    scorer = ResponseLengthScorer(tokenizer=None)
    scorer._tok = tok  # an already-built tokenizer stands in for a Hub id
    out = scorer({"output": texts})["response_tokens"]
    assert out == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert out[1] == 0 and out[2] > out[0]


def test_response_length_scorer_rejects_non_strings():
    with pytest.raises(InputError, match="Column 'output' must hold strings, but row 1 of this batch is int"):
        ResponseLengthScorer(tokenizer=None)({"output": ["fine", 3]})


def test_scorer_fingerprint_ignores_a_loaded_tokenizer():
    from datasets.fingerprint import Hasher

    from hf_ext.testing import tiny_tokenizer

    a, b = ResponseLengthScorer(tokenizer="x/y"), ResponseLengthScorer(tokenizer="x/y")
    b._tok = tiny_tokenizer()
    assert Hasher.hash(a) == Hasher.hash(b)
    assert Hasher.hash(a) != Hasher.hash(ResponseLengthScorer(tokenizer="x/z"))
