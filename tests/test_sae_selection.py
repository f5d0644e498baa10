"""SAE selectors: lazy greedy == naive greedy, the (1 − 1/e) guarantee against brute force,
SimScale's exact budget and τ invariant, the paper-style variant, k-center, metrics."""

import itertools
import math

import numpy as np
import pytest
from datasets import Dataset

from hf_ext.errors import InputError
from hf_ext.select import get_selector
from hf_ext.select.sae import (
    coverage,
    embedding_diversity,
    feature_matrix,
    greedy_max_coverage,
    greedy_max_coverage_naive,
    kcenter,
    simscale,
    sorted_new_features,
)
from hf_ext.select.sae.selection import threshold_walk


def random_ids(n, num_features, mean_size, seed, zipf=False):
    rng = np.random.default_rng(seed)
    p = None
    if zipf:  # real SAE features are heavy-tailed: a few fire everywhere, most are rare
        p = 1 / np.arange(1, num_features + 1) ** 1.1
        p /= p.sum()
    rows = []
    for _ in range(n):
        size = int(rng.integers(0, 2 * mean_size + 1))
        rows.append(sorted(set(rng.choice(num_features, size=size, p=p).tolist())))
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_lazy_greedy_picks_exactly_what_naive_greedy_picks(seed):
    # Small feature spaces force many ties and many zero-gain steps (budget near the pool size).
    rows = random_ids(300, 60 if seed % 2 else 2000, 8, seed, zipf=seed % 3 == 0)
    m = feature_matrix(rows)
    for budget in (1, 25, 150, 300):
        naive = greedy_max_coverage_naive(m, budget)
        assert greedy_max_coverage(m, budget) == naive
        assert greedy_max_coverage(m, budget, strategy="lazy") == naive


def test_greedy_is_within_one_minus_one_over_e_of_the_brute_force_optimum():
    worst = 1.0
    for seed in range(40):
        rows = random_ids(10, 30, 4, seed)
        m = feature_matrix(rows, num_features=30)
        for budget in (2, 3, 4):
            best = max(coverage(m, c) for c in itertools.combinations(range(10), budget))
            got = coverage(m, greedy_max_coverage(m, budget))
            assert got >= (1 - 1 / math.e) * best
            worst = min(worst, got / best)
    assert worst < 1.0  # the instances are hard enough that greedy is sometimes suboptimal


def _jaccard(a, b):
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 0.0


@pytest.mark.parametrize("similarity", ["jaccard", "cosine"])
def test_simscale_keeps_exactly_the_budget_with_all_pairs_below_tau(similarity):
    rows = random_ids(400, 300, 10, seed=3, zipf=True)
    rng = np.random.default_rng(0)
    values = [rng.uniform(0.5, 5, size=len(r)).tolist() for r in rows]
    m = feature_matrix(rows, values if similarity == "cosine" else None)
    for budget in (5, 60, 200):
        picks, tau = simscale(m, budget, similarity=similarity)
        assert len(picks) == budget == len(set(picks))
        for i, j in itertools.combinations(picks, 2):
            if similarity == "jaccard":
                sim = _jaccard(rows[i], rows[j])
            else:
                u, v = dict(zip(rows[i], values[i])), dict(zip(rows[j], values[j]))
                dot = sum(u[f] * v.get(f, 0) for f in u)
                nu, nv = math.sqrt(sum(x * x for x in u.values())), math.sqrt(sum(x * x for x in v.values()))
                sim = dot / (nu * nv) if nu and nv else 0.0
            assert sim < tau + 1e-9
        # τ is (to tolerance) the smallest that reaches the budget: a clearly lower τ keeps fewer.
        if tau > 0.01:
            order = np.argsort(-np.diff(m.indptr), kind="stable")
            mm = m.astype(np.float64)
            if similarity == "cosine":
                norms = np.sqrt(np.asarray(mm.multiply(mm).sum(axis=1)).ravel())
                mm = mm.multiply(1 / np.where(norms > 0, norms, 1)[:, None]).tocsr()
            assert len(threshold_walk(mm, order, tau - 0.01, budget, similarity)) < budget


def test_paper_style_variant_adds_new_features_in_richness_order():
    rows = [[1, 2, 3], [1, 2], [4, 5, 6, 7], [7], [8]]
    m = feature_matrix(rows)
    # Richness order: 2 (4), 0 (3), 1 (2), 3 (1), 4 (1); 1 and 3 add nothing new.
    assert sorted_new_features(m, 3) == [2, 0, 4]
    assert sorted_new_features(m, 5) == [2, 0, 4, 1, 3]  # the budget is filled with the richest rest
    assert get_selector("sae_greedy_sorted").select({"sae_ids": rows}, 3) == [2, 0, 4]


def test_kcenter_is_farthest_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    picks = kcenter(x, 12, seed=5)
    assert picks[0] == int(np.random.default_rng(5).integers(200)) and len(set(picks)) == 12
    for t in range(1, 12):
        d = np.linalg.norm(x[:, None, :] - x[picks[:t]][None], axis=-1).min(1)
        assert d[picks[t]] == pytest.approx(d.max(), rel=1e-4)


def test_selectors_read_arrow_columns_of_a_selected_dataset():
    rows = random_ids(500, 400, 12, seed=1, zipf=True)
    ds = Dataset.from_dict({"sae_ids": rows, "sae_values": [[1.0] * len(r) for r in rows],
                            "sae_embedding": np.random.default_rng(0).normal(size=(500, 4)).tolist()})
    sub = ds.select(range(499, -1, -2))  # an indices mapping: Arrow rows differ from dataset rows
    sub_rows = [rows[i] for i in range(499, -1, -2)]
    expected = greedy_max_coverage(feature_matrix(sub_rows), 40)
    assert get_selector("sae_greedy").select(sub, 40) == expected
    assert (feature_matrix(sub["sae_ids"]) != feature_matrix(sub_rows)).nnz == 0
    for name in ("sae_simscale", "kcenter", "sae_greedy_sorted"):
        assert len(set(get_selector(name).select(sub, 30))) == 30
    with pytest.raises(InputError, match="budget=300 is larger than the pool"):
        get_selector("sae_greedy").select(sub, 300)


def test_greedy_covers_more_than_random_and_longest_on_heavy_tailed_features():
    rows = random_ids(3000, 20000, 40, seed=7, zipf=True)
    m = feature_matrix(rows)
    cols = {"sae_ids": rows, "response_tokens": [len(r) for r in rows]}
    greedy = coverage(m, get_selector("sae_greedy").select(cols, 100))
    assert greedy > coverage(m, get_selector("longest").select(cols, 100))
    assert greedy >= 1.3 * coverage(m, get_selector("random").select(cols, 100, seed=0))


def test_embedding_diversity_and_feature_coverage_metric():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u @ u.T
    brute = 1 - (sims.sum() - np.trace(sims)) / (30 * 29)
    assert embedding_diversity(x) == pytest.approx(brute, rel=1e-9)

    from hf_ext.metrics import load_metric

    metric = load_metric("feature_coverage")
    out = metric.compute(feature_ids=[[1, 2], [2, 3]], pool_feature_ids=[[1, 2], [2, 3], [7, 8]])
    assert out == {"coverage": 3, "pool_coverage": 5, "coverage_fraction": 0.6, "mean_features": 2.0}
