"""Deduplication: exact (normalised hash), URL-level (keep the latest), MinHash near-duplicate
documents (datasketch's permutations, signatures computed for a whole batch at once with
numpy), and BFF "old-both" paragraph + document dedup with a Bloom filter (DCLM).

Dedup is a global choice, so each function returns the indices to keep, for ``ds.select``.

>>> exact_dedup(["Hello  world", "hello world!", "other"])
[0, 2]
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import InputError
from .text import words as split_words

_NORM_RE = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Lower-case, punctuation and whitespace runs collapsed to one space.

    Args:
        text (`str`):
            The text to normalise (underscores count as punctuation; leading and trailing spaces are stripped).
    """
    return _NORM_RE.sub(" ", text.lower()).strip()


def exact_dedup(texts: Iterable[str]) -> list[int]:
    """Indices of the first occurrence of each normalised text.

    Args:
        texts (`Iterable[str]`):
            The documents.
    """
    seen, keep = set(), []
    for i, text in enumerate(texts):
        digest = hashlib.blake2b(normalise(text or "").encode("utf-8"), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            keep.append(i)
    return keep


def normalise_url(url: str) -> str:
    """The key `url_dedup` compares: lower-cased, without scheme, fragment, leading ``www.`` or trailing slashes.

    Args:
        url (`str`):
            The URL (`None` or empty gives ``""``).
    """
    url = (url or "").strip().lower()
    url = re.sub(r"^[a-z]+://", "", url)
    url = url.split("#", 1)[0]
    return url.removeprefix("www.").rstrip("/")


def url_dedup(urls: Sequence[str], timestamps: Sequence | None = None) -> list[int]:
    """Llama 3's URL-level dedup: keep one document per normalised URL, the latest by
    `timestamps` (any sortable values) or, without them, the last occurrence.

    Args:
        urls (`Sequence[str]`):
            One URL per document.
        timestamps (`Sequence` or `None`, *optional*, defaults to `None`):
            One sortable value per document; the latest copy is kept.
    """
    best: dict[str, int] = {}
    for i, url in enumerate(urls):
        if not url:
            raise InputError(f"url_dedup needs a URL for every document; row {i} has {url!r}.")
        key = normalise_url(url)
        j = best.get(key)
        if j is None or timestamps is None or timestamps[i] >= timestamps[j]:
            best[key] = i
    return sorted(best.values())


# -- word hashing shared by MinHash and BFF -------------------------------------------------

class _WordHasher:
    """64-bit word hashes (xxhash), cached per word with a bounded cache (streaming-safe)."""

    def __init__(self, max_cache: int = 2_000_000, seed: int = 0):
        import xxhash

        self._h = xxhash.xxh64_intdigest
        self.seed, self.max_cache = seed, max_cache
        self.cache: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        cache, h, seed = self.cache, self._h, self.seed
        if len(cache) > self.max_cache:
            cache.clear()
        out = np.empty(len(tokens), dtype=np.uint64)
        for i, w in enumerate(tokens):
            v = cache.get(w)
            if v is None:
                v = cache[w] = h(w, seed)
            out[i] = v
        return out


_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def shingle_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every word n-gram (a document shorter than n is one shingle).

    Args:
        word_hashes (`np.ndarray`):
            ``uint64`` hashes of the document's words, in order; an empty array is returned as it is.
        n (`int`):
            Words per shingle.
    """
    if len(word_hashes) == 0:
        return word_hashes
    n = min(n, len(word_hashes))
    out = word_hashes[: len(word_hashes) - n + 1].copy()
    for k in range(1, n):
        out = (out ^ (out >> np.uint64(29))) * _M1 + word_hashes[k : len(word_hashes) - n + 1 + k]
    return (out ^ (out >> np.uint64(32))) * _M2


# -- MinHash ------------------------------------------------------------------------------

@dataclass
class MinHashDeduplicator:
    """MinHash + LSH near-duplicate removal over word n-grams.

    Signatures use datasketch's affine32 permutations and MurmurHash3 pre-mix, so for the same
    32-bit shingle hashes they equal ``datasketch.MinHash`` signatures exactly; the difference
    is speed: all shingles of a batch of documents are permuted in one numpy operation.
    Bands/rows come from datasketch's optimiser for ``threshold``; a candidate pair is merged
    only when its estimated Jaccard similarity is ``>= threshold``.

    Args:
        num_perm (`int`, *optional*, defaults to `112`):
            Permutations per signature.
        ngram (`int`, *optional*, defaults to `5`):
            Word n-gram size of the shingles.
        threshold (`float`, *optional*, defaults to `0.8`):
            Jaccard similarity that counts as a near duplicate (sets the LSH bands and rows).
        seed (`int`, *optional*, defaults to `1`):
            Seed of the permutations (datasketch's default).
        batch_size (`int`, *optional*, defaults to `1024`):
            Documents hashed per numpy operation.
        chunk_shingles (`int`, *optional*, defaults to `16384`):
            Shingles per block of the permutation product (kept in cache).
    """

    num_perm: int = 112
    ngram: int = 5
    threshold: float = 0.8
    seed: int = 1
    batch_size: int = 1024
    chunk_shingles: int = 16384
    _hasher: _WordHasher = field(default_factory=_WordHasher, repr=False, init=False)

    def __post_init__(self):
        from datasketch import MinHash
        from datasketch.lsh import _optimal_param
        from datasketch.minhash import _fmix

        if not 0 < self.threshold <= 1:
            raise InputError(f"threshold must be in (0, 1], got {self.threshold}.")
        self._a, self._b = (p.astype(np.uint32) for p in MinHash(num_perm=self.num_perm, seed=self.seed).permutations)
        self._fmix = _fmix
        self.bands, self.rows = _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)

    def shingles(self, text: str) -> np.ndarray:
        """32-bit hashes of the document's word n-grams."""
        return (shingle_hashes(self._hasher(split_words(text)), self.ngram) >> np.uint64(32)).astype(np.uint32)

    def signatures_from_shingles(self, shingle_lists: list[np.ndarray]) -> np.ndarray:
        """(documents, num_perm) uint32 signatures; an empty document gets all 2^32-1."""
        sig = np.full((len(shingle_lists), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        lengths = np.array([len(s) for s in shingle_lists])
        nonempty = np.flatnonzero(lengths)
        if len(nonempty) == 0:
            return sig
        hv = self._fmix(np.concatenate([shingle_lists[i] for i in nonempty]).astype(np.uint32), 32)
        starts = np.concatenate([[0], np.cumsum(lengths[nonempty])[:-1]])
        ends = np.append(starts[1:], len(hv))
        rows = []
        i = 0
        # Chunks of whole documents, ~16k shingles each: the (shingles, num_perm) block stays in
        # cache, which is ~7x faster than one big temporary.
        with np.errstate(over="ignore"):
            while i < len(starts):
                j = int(np.searchsorted(ends, starts[i] + self.chunk_shingles, side="right"))
                j = max(j, i + 1)
                block = np.multiply.outer(hv[starts[i] : ends[j - 1]], self._a)  # wraps mod 2^32
                block += self._b
                rows.append(np.minimum.reduceat(block, starts[i:j] - starts[i], axis=0))
                i = j
        sig[nonempty] = np.concatenate(rows)
        return sig

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            out.append(self.signatures_from_shingles([self.shingles(t or "") for t in chunk]))
        return np.concatenate(out) if out else np.zeros((0, self.num_perm), dtype=np.uint32)

    def clusters(self, signatures: np.ndarray) -> np.ndarray:
        """Cluster id (the index of the cluster's first document) of every document.

        Each band's rows are hashed to one 64-bit key and grouped with ``np.unique``; only
        documents that share a bucket with an earlier one reach the union-find, and a pair is
        merged only when its estimated Jaccard similarity is ``>= threshold``.
        """
        n = len(signatures)
        parent = np.arange(n)

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        mult = (np.arange(1, self.rows + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
        for band in range(self.bands):
            block = signatures[:, band * self.rows : (band + 1) * self.rows].astype(np.uint64)
            with np.errstate(over="ignore"):
                keys = (block * mult).sum(axis=1) ^ block[:, 0]
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            heads = first[inverse]  # the earliest document in each document's bucket
            for i in np.flatnonzero(heads != np.arange(n)):
                j = heads[i]
                ri, rj = find(i), find(j)
                if ri != rj and np.mean(signatures[i] == signatures[j]) >= self.threshold:
                    parent[max(ri, rj)] = min(ri, rj)
        return np.array([find(i) for i in range(n)])

    def dedup(self, texts: Sequence[str]) -> list[int]:
        """Indices to keep: the first document of each near-duplicate cluster."""
        roots = self.clusters(self.signatures(list(texts)))
        return [i for i, r in enumerate(roots) if r == i]


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    """Exact Jaccard similarity of two texts' word n-gram sets (for tests and audits).

    Args:
        a (`str`):
            One text.
        b (`str`):
            The other.
        ngram (`int`, *optional*, defaults to `5`):
            Word n-gram size.
    """
    def grams(t):
        w = split_words(t)
        return {tuple(w[i : i + ngram]) for i in range(max(1, len(w) - ngram + 1))}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y) if x | y else 1.0


# -- BFF ----------------------------------------------------------------------------------

class BloomFilter:
    """A bit array of ``m`` bits and ``k`` hash functions sized for ``expected_items`` at
    false-positive rate ``fp_rate``; memory is m/8 bytes whatever the stream's length.

    Args:
        expected_items (`int`):
            Number of items the filter is sized for (> 0); more items raise the false-positive rate.
        fp_rate (`float`, *optional*, defaults to `0.01`):
            False-positive rate at `expected_items` items, in (0, 1).
    """

    def __init__(self, expected_items: int, fp_rate: float = 0.01):
        if expected_items <= 0 or not 0 < fp_rate < 1:
            raise InputError(f"Bloom filter needs expected_items > 0 and 0 < fp_rate < 1, got {expected_items}, {fp_rate}.")
        self.m = max(64, int(math.ceil(-expected_items * math.log(fp_rate) / math.log(2) ** 2)))
        self.k = max(1, int(round(self.m / expected_items * math.log(2))))
        self.bits = np.zeros((self.m + 63) // 64, dtype=np.uint64)

    def _indices(self, hashes: np.ndarray) -> np.ndarray:
        h1 = hashes
        h2 = (hashes >> np.uint64(32)) | np.uint64(1)
        i = np.arange(self.k, dtype=np.uint64)
        return (h1[:, None] + i[None, :] * h2[:, None]) % np.uint64(self.m)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        idx = self._indices(hashes)
        words = self.bits[(idx >> np.uint64(6)).astype(np.int64)]
        return ((words >> (idx & np.uint64(63))) & np.uint64(1)).astype(bool).all(axis=1)

    def add(self, hashes: np.ndarray) -> None:
        idx = self._indices(hashes).ravel()
        np.bitwise_or.at(self.bits, (idx >> np.uint64(6)).astype(np.int64), np.uint64(1) << (idx & np.uint64(63)))

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes


@dataclass
class BFFResult:
    """What `BFFDeduplicator.dedup` returns.

    Args:
        texts (`list[str]`):
            Each document's deduplicated text (its kept paragraphs; ``""`` for a dropped document).
        keep (`list[bool]`):
            Per document: False when it was dropped as a duplicate or its paragraph removals left only whitespace.
        paragraphs_removed (`int`, *optional*, defaults to `0`):
            Paragraphs the deduplicator has removed, over every document it has processed so far.
        documents_removed (`int`, *optional*, defaults to `0`):
            Whole documents the deduplicator has dropped, over every document it has processed so far.
    """

    texts: list[str]
    keep: list[bool]
    paragraphs_removed: int = 0
    documents_removed: int = 0


@dataclass
class BFFDeduplicator:
    """DCLM's BFF dedup, "old-both" mode: for each document (streaming), look up all of its
    13-grams in the Bloom filter as it was *before* this document; drop the document if more
    than ``threshold`` of its n-grams were seen; otherwise drop each paragraph with more than
    ``threshold`` seen n-grams and insert the n-grams of the kept paragraphs, once.

    ``mode="naive-both"`` is the mistake the spec warns about (insert the document's n-grams,
    then check its paragraphs against a filter that already holds them): it over-removes,
    and exists for the regression test.

    Args:
        expected_ngrams (`int`, *optional*, defaults to `10000000`):
            N-grams the Bloom filter is sized for (memory bound).
        fp_rate (`float`, *optional*, defaults to `0.01`):
            The Bloom filter's false-positive rate.
        ngram (`int`, *optional*, defaults to `13`):
            Word n-gram size.
        threshold (`float`, *optional*, defaults to `0.8`):
            Drop a paragraph or document when more than this share of its n-grams was seen.
        min_ngram (`int`, *optional*, defaults to `1`):
            Paragraphs with fewer words are neither checked nor inserted.
        mode (`Literal["old-both", "naive-both"]`, *optional*, defaults to `"old-both"`):
            ``"old-both"`` (DCLM's) or the over-removing ``"naive-both"`` kept for the regression test.
    """

    expected_ngrams: int = 10_000_000
    fp_rate: float = 0.01
    ngram: int = 13
    threshold: float = 0.8
    min_ngram: int = 1
    mode: Literal["old-both", "naive-both"] = "old-both"
    paragraphs_removed: int = field(default=0, init=False)
    documents_removed: int = field(default=0, init=False)

    def __post_init__(self):
        if self.mode not in ("old-both", "naive-both"):
            raise InputError(f"mode must be 'old-both' or 'naive-both', got {self.mode!r}.")
        if self.expected_ngrams <= 0 or not 0 < self.fp_rate < 1:
            raise InputError(f"expected_ngrams must be positive and fp_rate in (0, 1), got {self.expected_ngrams} and {self.fp_rate}.")
        if not 0 <= self.threshold <= 1:
            raise InputError(f"threshold must be in [0, 1], got {self.threshold}.")
        self.bloom = BloomFilter(self.expected_ngrams, self.fp_rate)
        self._hasher = _WordHasher()

    def _paragraph_hashes(self, paragraph: str) -> np.ndarray:
        tokens = split_words(paragraph)
        if len(tokens) < self.min_ngram:
            return np.zeros(0, dtype=np.uint64)
        return shingle_hashes(self._hasher(tokens), self.ngram)

    def process(self, text: str) -> tuple[str, bool]:
        """(deduplicated text, keep) for the next document of the stream."""
        paragraphs = text.split("\n")
        hashes = [self._paragraph_hashes(p) for p in paragraphs]
        total = sum(len(h) for h in hashes)
        if total == 0:
            return text, True
        if self.mode == "naive-both":
            self.bloom.add(np.concatenate(hashes))
        seen = [self.bloom.contains(h) if len(h) else np.zeros(0, dtype=bool) for h in hashes]
        if sum(int(s.sum()) for s in seen) / total > self.threshold:
            self.documents_removed += 1
            return "", False
        kept, new = [], []
        for paragraph, h, s in zip(paragraphs, hashes, seen):
            if len(h) and s.mean() > self.threshold:
                self.paragraphs_removed += 1
                continue
            kept.append(paragraph)
            new.append(h)
        if self.mode == "old-both" and new:
            self.bloom.add(np.concatenate(new))
        out = "\n".join(kept)
        return out, bool(out.strip())

    def dedup(self, texts: Iterable[str]) -> BFFResult:
        out, keep = [], []
        for text in texts:
            t, k = self.process(text or "")
            out.append(t)
            keep.append(k)
        return BFFResult(out, keep, self.paragraphs_removed, self.documents_removed)
