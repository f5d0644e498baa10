"""Splitting a corpus into the clusters X-ELM's experts train on (Blevins et al. 2024, arXiv 2401.10440).

- :func:`balanced_tfidf_kmeans`: TF-IDF + scikit-learn k-means, then equal-size assignment (c-BTM's balanced
  k-means), returning :class:`TfidfClusters` (the vectorizer and centres, reused by the clustering router).
- :func:`typology_clusters`: languages grouped by family (:data:`LANGUAGE_FAMILIES`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...errors import InputError

__all__ = ["TfidfClusters", "balanced_tfidf_kmeans", "typology_clusters", "LANGUAGE_FAMILIES"]


@dataclass
class TfidfClusters:
    """TF-IDF vectorizer + cluster centres; ``labels`` are the training texts' (balanced) clusters.

    Args:
        vectorizer (`Any`):
            A fitted scikit-learn ``TfidfVectorizer`` (L2-normalised rows).
        centers (`np.ndarray`):
            The cluster centres in TF-IDF space, shape (k, n_features).
        labels (`np.ndarray`):
            The cluster of each training text, shape (n_texts,).
    """

    vectorizer: Any
    centers: np.ndarray
    labels: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centers)

    def squared_distances(self, texts: Sequence[str]) -> np.ndarray:
        """``‖x − c_j‖²`` for each text's (L2-normalised) TF-IDF vector x and centre c_j: shape (len(texts), k).

        Args:
            texts (`Sequence[str]`):
                The texts to place (vectorised with the fitted vectorizer).
        """
        x = self.vectorizer.transform(list(texts))
        x_sq = np.asarray(x.multiply(x).sum(axis=1)).reshape(-1, 1)
        return np.maximum(x_sq - 2 * np.asarray(x @ self.centers.T) + (self.centers**2).sum(1)[None, :], 0.0)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The nearest centre's index for each text (plain nearest-centre, not balanced).

        Args:
            texts (`Sequence[str]`):
                The texts to assign.
        """
        return self.squared_distances(texts).argmin(1)

    def add_center(self, texts: Sequence[str]) -> int:
        """Add a cluster whose centre is the mean TF-IDF vector of `texts`; returns its index.

        Args:
            texts (`Sequence[str]`):
                The new cluster's texts (e.g. a new expert's training texts).
        """
        center = np.asarray(self.vectorizer.transform(list(texts)).mean(axis=0)).reshape(1, -1)
        self.centers = np.vstack([self.centers, center])
        return self.k - 1

    def to_dict(self) -> dict[str, Any]:
        v = self.vectorizer
        return {"params": {k: (list(x) if isinstance(x, tuple) else x) for k, x in v.get_params().items()
                           if k in ("analyzer", "ngram_range", "lowercase", "sublinear_tf", "max_features")},
                "vocabulary": {t: int(i) for t, i in v.vocabulary_.items()}, "idf": v.idf_.tolist(),
                "centers": self.centers.tolist(), "labels": self.labels.tolist()}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TfidfClusters:
        """Rebuild the clusters from :meth:`to_dict` (no refitting: vocabulary, idf and centres as saved).

        Args:
            data (`dict[str, Any]`):
                The state: vectorizer ``params``, ``vocabulary``, ``idf``, ``centers`` and ``labels``.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer

        params = dict(data["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        v = TfidfVectorizer(**params)
        v.vocabulary_ = dict(data["vocabulary"])
        v.idf_ = np.asarray(data["idf"])
        return cls(v, np.asarray(data["centers"], dtype=np.float64), np.asarray(data["labels"]))


def _balanced_assign(d2: np.ndarray, capacity: int) -> np.ndarray:
    # Greedy equal-size assignment: the globally closest (text, cluster) pairs first, clusters fill up.
    n, k = d2.shape
    labels = np.full(n, -1)
    room = np.full(k, capacity)
    for flat in np.argsort(d2, axis=None, kind="stable"):
        i, j = divmod(int(flat), k)
        if labels[i] < 0 and room[j] > 0:
            labels[i] = j
            room[j] -= 1
    return labels


def balanced_tfidf_kmeans(
    texts: Sequence[str],
    k: int,
    *,
    seed: int = 0,
    balanced: bool = True,
    analyzer: Literal["word", "char", "char_wb"] = "char_wb",
    ngram_range: tuple[int, int] = (1, 3),
    max_features: int = 50_000,
    n_iter: int = 10,
) -> TfidfClusters:
    """Cluster texts by TF-IDF k-means into `k` clusters of equal size (c-BTM / X-ELM's balanced k-means).

    scikit-learn's ``KMeans`` gives the initial centres; then, `n_iter` times, texts are assigned
    greedily to the nearest centre that still has room (capacity ⌈n/k⌉) and centres are recomputed.
    Character n-grams (``char_wb``) suit many scripts at once; ``word`` is c-BTM's setting.

    Args:
        texts (`Sequence[str]`):
            The texts to cluster.
        k (`int`):
            Number of clusters, between 1 and ``len(texts)``.
        seed (`int`, *optional*, defaults to `0`):
            ``random_state`` of scikit-learn's ``KMeans``.
        balanced (`bool`, *optional*, defaults to `True`):
            Rebalance to clusters of at most ⌈n/k⌉ texts; False: plain k-means labels.
        analyzer (`Literal['word', 'char', 'char_wb']`, *optional*, defaults to `"char_wb"`):
            ``TfidfVectorizer``'s unit of the n-grams.
        ngram_range (`tuple[int, int]`, *optional*, defaults to `(1, 3)`):
            Smallest and largest n-gram length.
        max_features (`int`, *optional*, defaults to `50000`):
            Size of the TF-IDF vocabulary (the most frequent n-grams).
        n_iter (`int`, *optional*, defaults to `10`):
            Most rounds of balanced assignment and centre update (stops early when the labels no longer change).

    Example:
        >>> texts = ["the cat sat"] * 4 + ["der Hund lief"] * 4
        >>> c = balanced_tfidf_kmeans(texts, 2)
        >>> sorted(np.bincount(c.labels).tolist())
        [4, 4]
    """
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = list(texts)
    if k < 1 or k > len(texts):
        raise InputError(f"k must be between 1 and the number of texts ({len(texts)}), got {k}.")
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=tuple(ngram_range), max_features=max_features, sublinear_tf=True)
    x = vectorizer.fit_transform(texts)
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x)
    clusters = TfidfClusters(vectorizer, km.cluster_centers_.astype(np.float64), km.labels_.copy())
    if not balanced or k == 1:
        return clusters
    capacity = math.ceil(len(texts) / k)
    for _ in range(n_iter):
        labels = _balanced_assign(clusters.squared_distances(texts), capacity)
        centers = np.vstack([np.asarray(x[labels == j].mean(axis=0)) for j in range(k)])
        done = np.array_equal(labels, clusters.labels)
        clusters.labels, clusters.centers = labels, centers
        if done:
            break
    return clusters


# Language families (Glottolog top level; Indo-European split by branch) of the FLORES-200 / WMT
# languages in ../data, for X-ELM's typological clusters. Keys: ISO 639-1/3 or FLORES codes.
LANGUAGE_FAMILIES: dict[str, str] = {
    **dict.fromkeys(["en", "eng", "de", "deu", "nl", "nld", "sv", "swe", "da", "dan", "nb", "nob", "is", "isl"], "germanic"),
    **dict.fromkeys(["fr", "fra", "es", "spa", "it", "ita", "pt", "por", "ro", "ron"], "romance"),
    **dict.fromkeys(["cs", "ces", "sk", "slk", "pl", "pol", "ru", "rus", "uk", "ukr", "bg", "bul"], "slavic"),
    **dict.fromkeys(["lt", "lit", "lv", "lav"], "baltic"),
    **dict.fromkeys(["fi", "fin", "et", "est", "hu", "hun"], "uralic"),
    **dict.fromkeys(["hi", "hin", "bn", "ben", "ur", "urd", "gu", "guj", "ps", "pus", "fa", "pes"], "indo-iranian"),
    **dict.fromkeys(["el", "ell"], "hellenic"),
    **dict.fromkeys(["tr", "tur", "kk", "kaz"], "turkic"),
    **dict.fromkeys(["ar", "arb", "he", "heb", "am", "amh", "ha", "hau"], "afro-asiatic"),
    **dict.fromkeys(["ta", "tam", "te", "tel"], "dravidian"),
    **dict.fromkeys(["zh", "zho_Hans", "zho_Hant"], "sino-tibetan"),
    **dict.fromkeys(["ja", "jpn"], "japonic"), **dict.fromkeys(["ko", "kor"], "koreanic"),
    **dict.fromkeys(["vi", "vie", "km", "khm"], "austroasiatic"), **dict.fromkeys(["th", "tha"], "kra-dai"),
    **dict.fromkeys(["id", "ind"], "austronesian"), **dict.fromkeys(["sw", "swh", "yo", "yor"], "niger-congo"),
    **dict.fromkeys(["iu", "iku"], "eskimo-aleut"),
}


def typology_clusters(languages: Sequence[str], k: int) -> dict[str, int]:
    """Group languages into `k` clusters by family (X-ELM's typological clusters).

    Languages of one family stay together; families are packed largest first into the
    currently smallest cluster, so clusters hold similar numbers of languages.

    Args:
        languages (`Sequence[str]`):
            Language codes: keys of :data:`LANGUAGE_FAMILIES` (ISO 639-1/3) or FLORES codes such as ``deu_Latn``.
        k (`int`):
            Number of clusters, between 1 and ``len(languages)``; with fewer families than `k` the largest
            families are split.

    Returns:
        `dict[str, int]`: each language's cluster, numbered in the order the languages first appear.

    Example:
        >>> typology_clusters(["deu_Latn", "eng_Latn", "fra_Latn", "spa_Latn"], 2)
        {'deu_Latn': 0, 'eng_Latn': 0, 'fra_Latn': 1, 'spa_Latn': 1}
    """
    if not 1 <= k <= len(languages):
        raise InputError(f"k must be between 1 and the number of languages ({len(languages)}), got {k}.")
    families: dict[str, list[str]] = defaultdict(list)
    for lang in languages:
        code = lang.split("_")[0] if lang not in LANGUAGE_FAMILIES else lang
        if code not in LANGUAGE_FAMILIES:
            raise InputError(f"Language {lang!r} is not in LANGUAGE_FAMILIES; add it (hf_ext.merge.ensemble.LANGUAGE_FAMILIES[{code!r}] = 'family').")
        families[LANGUAGE_FAMILIES[code]].append(lang)
    groups = sorted(families.values(), key=lambda g: (-len(g), g))
    if len(groups) < k:  # fewer families than clusters: split the largest families
        while len(groups) < k:
            groups.sort(key=lambda g: -len(g))
            big = groups.pop(0)
            groups += [big[: len(big) // 2], big[len(big) // 2 :]]
        groups = sorted(groups, key=lambda g: (-len(g), g))
    clusters: list[list[str]] = [[] for _ in range(k)]
    for group in groups:
        min(clusters, key=len).extend(group)
    order = sorted(range(k), key=lambda j: min(languages.index(x) for x in clusters[j]))
    return {lang: rank for rank, j in enumerate(order) for lang in sorted(clusters[j], key=languages.index)}
