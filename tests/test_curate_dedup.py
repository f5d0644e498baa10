"""Dedup: exact, URL (keep latest), MinHash near-duplicates at the configured Jaccard
(signatures identical to datasketch's), BFF old-both and the naive-both regression."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from hf_ext.curate.dedup import BFFDeduplicator, BloomFilter, MinHashDeduplicator, exact_dedup, jaccard, url_dedup
from hf_ext.errors import InputError

WEB = Path(__file__).parent / "data" / "web"
C4 = [json.loads(line) for line in gzip.open(WEB / "c4_en_train_first150.jsonl.gz", "rt")]


def test_exact_and_url_dedup():
    assert exact_dedup(["Hello  World.", "hello world", "Hello world!!", "other"]) == [0, 3]
    urls = ["http://a.com/x", "https://www.a.com/x/", "http://b.com", "http://a.com/x#frag"]
    assert url_dedup(urls, timestamps=["2019-01-02", "2020-05-01", "2018", "2019-06-01"]) == [1, 2]
    assert url_dedup(urls) == [2, 3]  # without timestamps: the last occurrence
    with pytest.raises(InputError, match="row 1"):
        url_dedup(["http://a.com", None])


def test_minhash_signatures_equal_datasketch():
    from datasketch import MinHash

    mh = MinHashDeduplicator(num_perm=112)
    for row in C4[:5]:
        shingles = mh.shingles(row["text"])
        ref = MinHash(num_perm=112, seed=1, hashfunc=lambda x: x)
        ref.update_batch(shingles.tolist())
        np.testing.assert_array_equal(mh.signatures_from_shingles([shingles])[0], ref.hashvalues)


def _edit(words, k, rng):
    w = list(words)
    for i in rng.choice(len(w), k, replace=False):
        w[i] = f"edited{i}"
    return " ".join(w)


def test_minhash_finds_near_duplicates_at_the_configured_jaccard():
    rng = np.random.default_rng(0)
    docs, expected_dup = [], []
    for row in C4[:40]:
        words = row["text"].split()[:300]
        if len(words) < 200:
            continue
        base = " ".join(words)
        near = _edit(words, 2, rng)  # Jaccard ~0.94 on 5-grams
        far = _edit(words, 40, rng)  # Jaccard ~0.3
        assert jaccard(base, near) >= 0.85 and jaccard(base, far) < 0.5
        start = len(docs)
        docs += [base, near, far]
        expected_dup.append((start, start + 1, start + 2))
    mh = MinHashDeduplicator(threshold=0.8)
    roots = mh.clusters(mh.signatures(docs))
    found = sum(roots[b] == roots[n] for b, n, _ in expected_dup) / len(expected_dup)
    false = sum(roots[b] == roots[f] for b, _, f in expected_dup) / len(expected_dup)
    assert len(expected_dup) >= 10 and found >= 0.9 and false == 0
    keep = mh.dedup(docs)
    assert len(keep) <= len(docs) - int(0.9 * len(expected_dup))


def test_bff_old_both_paragraphs_and_documents():
    a = "\n".join(" ".join(f"alpha{i}_{j}" for j in range(20)) for i in range(3))
    b = "\n".join(" ".join(f"beta{i}_{j}" for j in range(20)) for i in range(3))
    new_par = " ".join(f"gamma{j}" for j in range(20))
    mixed = a.split("\n")[0] + "\n" + new_par  # one seen paragraph, one new
    bff = BFFDeduplicator(expected_ngrams=10_000, ngram=13, threshold=0.8)
    result = bff.dedup([a, b, a, mixed])
    assert result.keep == [True, True, False, True]  # exact copy of a: > 80% of its n-grams seen
    assert result.texts[3] == new_par and result.paragraphs_removed == 1 and result.documents_removed == 1


def test_bff_naive_both_over_removes_regression():
    """Inserting a document's n-grams before checking its paragraphs (naive-both) removes
    unique documents; old-both keeps every unique C4 document."""
    texts = [r["text"] for r in C4[:60]]
    old = BFFDeduplicator(expected_ngrams=200_000).dedup(texts)
    naive = BFFDeduplicator(expected_ngrams=200_000, mode="naive-both").dedup(texts)
    assert sum(old.keep) >= 0.95 * len(texts)
    assert sum(naive.keep) <= 0.1 * len(texts)  # > 90% removed, as the spec warns


def test_bloom_filter_memory_is_bounded_and_fp_rate_holds():
    bloom = BloomFilter(expected_items=10_000, fp_rate=0.01)
    size = bloom.nbytes
    rng = np.random.default_rng(0)
    bloom.add(rng.integers(0, 2**63, 10_000, dtype=np.int64).astype(np.uint64))
    assert bloom.nbytes == size == ((bloom.m + 63) // 64) * 8
    fp = bloom.contains(rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64)).mean()
    assert fp < 0.02
