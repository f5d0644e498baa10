"""X-ELM expert ensembles (Blevins et al. 2024, arXiv 2401.10440).

Experts branched from one seed, each continued on one cluster of a multilingual corpus, are mixed
at inference by weights computed from the context:

- :class:`BayesianRouter`: ``p(j | x_<t) ∝ p(x_<t | j) · p(j)``, from the experts' own likelihoods of
  the tokens seen so far (causal: the weights at position t use tokens up to t only);
- :class:`ClusterRouter`: ``softmax(−d²/T)`` over squared distances from the context's TF-IDF vector to
  the cluster centres (T = 0.1 in the paper; T → 0 is one-hot on the nearest cluster);
- :class:`UniformRouter`: equal weights (or fixed prior weights).

:class:`ExpertEnsemble` is a ``PreTrainedModel`` with ``GenerationMixin``: ``forward`` returns the
mixture's log-probabilities as ``logits`` (so ``cross_entropy`` on them is the mixture's NLL and
``generate`` samples from the mixture), optionally keeping only the top-k experts per position,
mixing in probability space (perplexity) or logit space (downstream tasks).

Corpus clustering: :func:`balanced_tfidf_kmeans` (TF-IDF + scikit-learn k-means, then equal-size
assignment) or :func:`typology_clusters` (language families).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..errors import InputError
from ..paths import check_plain_name

__all__ = ["ExpertEnsemble", "ExpertEnsembleConfig", "BayesianRouter", "ClusterRouter", "UniformRouter",
           "TfidfClusters", "balanced_tfidf_kmeans", "typology_clusters", "LANGUAGE_FAMILIES", "EnsembleOutput"]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Clustering a corpus
# --------------------------------------------------------------------------------------------


@dataclass
class TfidfClusters:
    """TF-IDF vectorizer + cluster centres; ``labels`` are the training texts' (balanced) clusters."""

    vectorizer: Any
    centers: np.ndarray
    labels: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centers)

    def squared_distances(self, texts: Sequence[str]) -> np.ndarray:
        """``‖x − c_j‖²`` for each text's (L2-normalised) TF-IDF vector x and centre c_j: shape (len(texts), k)."""
        x = self.vectorizer.transform(list(texts))
        x_sq = np.asarray(x.multiply(x).sum(axis=1)).reshape(-1, 1)
        return np.maximum(x_sq - 2 * np.asarray(x @ self.centers.T) + (self.centers**2).sum(1)[None, :], 0.0)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.squared_distances(texts).argmin(1)

    def add_center(self, texts: Sequence[str]) -> int:
        """Add a cluster whose centre is the mean TF-IDF vector of `texts`; returns its index."""
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


# --------------------------------------------------------------------------------------------
# Routers: (ensemble, input_ids, attention_mask, expert log-probs) -> weights (batch, time, experts)
# --------------------------------------------------------------------------------------------


class Router:
    """Gives per-position mixture weights; weights at position t mix the predictions of token t+1."""

    needs_token_logprobs = False

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_logprobs: torch.Tensor | None,
                 n_experts: int, tokenizer: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def add_expert(self, texts: Sequence[str] | None = None) -> None:
        """Make room for one more expert (called by :meth:`ExpertEnsemble.add_expert`)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def _prior(prior: Sequence[float] | None, n: int) -> torch.Tensor:
    if prior is None:
        return torch.full((n,), 1.0 / n)
    p = torch.tensor([float(x) for x in prior])
    if len(p) != n or (p < 0).any() or p.sum() <= 0:
        raise InputError(f"prior must be {n} non-negative numbers with a positive sum, got {list(prior)}.")
    return p / p.sum()


class UniformRouter(Router):
    """Fixed weights (uniform, or `prior` normalised): the context is ignored."""

    def __init__(self, prior: Sequence[float] | None = None):
        self.prior = list(prior) if prior is not None else None

    def __call__(self, input_ids, attention_mask, token_logprobs, n_experts, tokenizer=None):
        w = _prior(self.prior, n_experts)
        return w.expand(input_ids.shape[0], input_ids.shape[1], n_experts).clone()

    def add_expert(self, texts=None):
        if self.prior is not None:
            self.prior = self.prior + [sum(self.prior) / len(self.prior)]

    def to_dict(self):
        return {"type": "uniform", "prior": self.prior}


class BayesianRouter(Router):
    """X-ELM's posterior router: ``p(j | x_≤t) ∝ p(j) · Π_{s≤t} p_j(x_s | x_<s)``.

    The weights that mix the predictions for token t+1 use the experts' likelihoods of tokens
    1..t of the same sequence (padding masked out), so perplexity evaluation stays causal. At
    the first position only the prior is known.

    Args:
        prior: p(j) (default uniform).
        temperature: likelihoods are raised to 1/temperature (1 = the exact posterior).
    """

    needs_token_logprobs = True

    def __init__(self, prior: Sequence[float] | None = None, temperature: float = 1.0):
        if temperature <= 0:
            raise InputError(f"BayesianRouter temperature must be > 0, got {temperature}.")
        self.prior = list(prior) if prior is not None else None
        self.temperature = temperature

    def __call__(self, input_ids, attention_mask, token_logprobs, n_experts, tokenizer=None):
        # token_logprobs: (experts, batch, time) log p_j(x_t | x_<t), 0 at t = 0 and at padding.
        context = token_logprobs.cumsum(dim=-1) / self.temperature
        log_post = torch.log(_prior(self.prior, n_experts)).view(-1, 1, 1).to(context) + context
        return torch.softmax(log_post, dim=0).permute(1, 2, 0)

    def add_expert(self, texts=None):
        if self.prior is not None:
            self.prior = self.prior + [sum(self.prior) / len(self.prior)]

    def to_dict(self):
        return {"type": "bayesian", "prior": self.prior, "temperature": self.temperature}


class ClusterRouter(Router):
    """X-ELM's clustering router: ``softmax(−‖tfidf(context) − c_j‖² / T)``, T = 0.1 by default.

    The context is the decoded input of each sequence (one weight vector per sequence, the same at
    every position: document-level routing as in c-BTM); pass ``context_tokens`` to route on the
    first tokens only (e.g. a prompt). ``temperature=0`` is one-hot on the nearest centre.
    """

    def __init__(self, clusters: TfidfClusters, temperature: float = 0.1, context_tokens: int | None = None):
        if temperature < 0:
            raise InputError(f"ClusterRouter temperature must be >= 0, got {temperature}.")
        self.clusters, self.temperature, self.context_tokens = clusters, temperature, context_tokens

    def weights_for_texts(self, texts: Sequence[str]) -> torch.Tensor:
        d2 = torch.from_numpy(self.clusters.squared_distances(texts)).float()
        if self.temperature == 0:
            return F.one_hot(d2.argmin(dim=1), d2.shape[1]).float()
        return torch.softmax(-d2 / self.temperature, dim=1)

    def __call__(self, input_ids, attention_mask, token_logprobs, n_experts, tokenizer=None):
        if tokenizer is None:
            raise InputError("ClusterRouter reads the context as text: build the ExpertEnsemble with tokenizer=... .")
        if self.clusters.k != n_experts:
            raise InputError(f"ClusterRouter has {self.clusters.k} cluster centres for {n_experts} experts; they must match.")
        ids = input_ids if self.context_tokens is None else input_ids[:, : self.context_tokens]
        mask = attention_mask if self.context_tokens is None else attention_mask[:, : self.context_tokens]
        texts = [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True) for row, m in zip(ids, mask)]
        w = self.weights_for_texts(texts)
        return w[:, None, :].expand(input_ids.shape[0], input_ids.shape[1], n_experts).clone()

    def add_expert(self, texts=None):
        if texts is None:
            raise InputError("ClusterRouter.add_expert needs the new expert's texts to place its cluster centre.")
        self.clusters.add_center(texts)

    def to_dict(self):
        return {"type": "cluster", "temperature": self.temperature, "context_tokens": self.context_tokens,
                "clusters": self.clusters.to_dict()}  # fmt: skip


def router_from_dict(data: dict[str, Any]) -> Router:
    kind = data.get("type")
    if kind == "uniform":
        return UniformRouter(data.get("prior"))
    if kind == "bayesian":
        return BayesianRouter(data.get("prior"), data.get("temperature", 1.0))
    if kind == "cluster":
        return ClusterRouter(TfidfClusters.from_dict(data["clusters"]), data["temperature"], data.get("context_tokens"))
    raise InputError(f"Unknown router type {kind!r}; expected uniform, bayesian or cluster.")


# --------------------------------------------------------------------------------------------
# The ensemble model
# --------------------------------------------------------------------------------------------


class ExpertEnsembleConfig(PretrainedConfig):
    """Config of an :class:`ExpertEnsemble`: expert names, mixing space, top-k and the router's state."""

    model_type = "hf_ext_expert_ensemble"

    def __init__(self, expert_names: list[str] | None = None, mixing: str = "probability", top_k: int | None = None,
                 router: dict[str, Any] | None = None, vocab_size: int | None = None, **kwargs: Any):
        self.expert_names = list(expert_names or [])
        self.mixing, self.top_k, self.router, self.vocab_size = mixing, top_k, router or {"type": "bayesian"}, vocab_size
        super().__init__(**kwargs)


@dataclass
class EnsembleOutput(CausalLMOutputWithPast):
    """``logits`` hold the mixture's log-probabilities; ``expert_weights`` (batch, time, experts) the mix."""

    expert_weights: torch.Tensor | None = None
    expert_logprobs: torch.Tensor | None = None


class ExpertEnsemble(PreTrainedModel, GenerationMixin):
    """An ensemble of causal-LM experts that behaves like one causal LM.

    Args:
        experts: causal LMs sharing one tokenizer / vocabulary (models, folders or Hub ids).
        router: a :class:`BayesianRouter` (default), :class:`ClusterRouter` or :class:`UniformRouter`.
        mixing: ``"probability"`` — ``log Σ_j w_j p_j`` (X-ELM's perplexity setting) — or
            ``"logit"`` — ``log_softmax(Σ_j w_j log p_j)`` (its downstream setting).
        top_k: keep the k largest weights per position (renormalised); ``None`` keeps all.
        names: one name per expert (e.g. the cluster's languages).
        tokenizer: needed by the clustering router (it routes on text) and by :meth:`add_expert`.

    ``forward`` returns :class:`EnsembleOutput` whose ``logits`` are log-probabilities, so
    ``cross_entropy(logits, labels)`` is the ensemble's NLL and ``generate()`` samples from the mixture
    (no KV cache: each step re-reads the context, which the routers need anyway).

    Example:
        >>> from hf_ext.testing import tiny_llama, tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> ens = ExpertEnsemble([tiny_llama(seed=0), tiny_llama(seed=1)], BayesianRouter())
        >>> out = ens(**tok(["a tiny model"], return_tensors="pt"))
        >>> bool(torch.allclose(out.expert_weights.sum(-1), torch.ones(1)))
        True
    """

    config_class = ExpertEnsembleConfig
    base_model_prefix = "ensemble"
    main_input_name = "input_ids"
    _supports_cache_class = False

    def __init__(self, experts: Sequence[Any], router: Router | None = None, *, mixing: Literal["probability", "logit"] = "probability",
                 top_k: int | None = None, names: Sequence[str] | None = None, tokenizer: Any = None):
        experts = [e if isinstance(e, torch.nn.Module) else _load_expert(e) for e in experts]
        if not experts:
            raise InputError("ExpertEnsemble needs at least one expert.")
        vocab = {e.config.vocab_size for e in experts}
        if len(vocab) != 1:
            raise InputError(f"Experts must share one vocabulary; their vocab sizes are {sorted(vocab)}.")
        if mixing not in ("probability", "logit"):
            raise InputError(f"mixing must be 'probability' or 'logit', got {mixing!r}.")
        if top_k is not None and not 1 <= top_k <= len(experts):
            raise InputError(f"top_k must be between 1 and the number of experts ({len(experts)}), got {top_k}.")
        names = list(names) if names is not None else [f"expert_{i}" for i in range(len(experts))]
        if len(names) != len(experts):
            raise InputError(f"names has {len(names)} entries for {len(experts)} experts.")
        for name in names:  # each becomes experts/<name>/ when saved
            check_plain_name(name, field="expert name")
        router = router or BayesianRouter()
        first = experts[0].config
        config = ExpertEnsembleConfig(
            expert_names=names, mixing=mixing, top_k=top_k, router=router.to_dict(), vocab_size=first.vocab_size,
            bos_token_id=first.bos_token_id, eos_token_id=first.eos_token_id, pad_token_id=first.pad_token_id,
        )
        super().__init__(config)
        self.experts = torch.nn.ModuleList(experts)
        self.router, self.tokenizer = router, tokenizer
        self.generation_config.use_cache = False
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(self.generation_config, attr, getattr(first, attr, None))

    # PreTrainedModel would (re)initialise weights; experts arrive trained.
    def _init_weights(self, module: torch.nn.Module) -> None:
        return

    @property
    def names(self) -> list[str]:
        return self.config.expert_names

    def _mask_top_k(self, weights: torch.Tensor) -> torch.Tensor:
        k = self.config.top_k
        if k is None or k >= weights.shape[-1]:
            return weights
        idx = weights.topk(k, dim=-1).indices
        kept = torch.zeros_like(weights).scatter(-1, idx, weights.gather(-1, idx))
        return kept / kept.sum(-1, keepdim=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                return_expert_logprobs: bool = False, **kwargs: Any) -> EnsembleOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logps = torch.stack([F.log_softmax(e(input_ids=input_ids, attention_mask=attention_mask).logits.float(), dim=-1)
                             for e in self.experts])  # (experts, batch, time, vocab)  # fmt: skip
        token_lp = None
        if self.router.needs_token_logprobs:
            token_lp = torch.zeros(logps.shape[:3], dtype=logps.dtype, device=logps.device)
            seen = logps[:, :, :-1].gather(-1, input_ids[None, :, 1:, None].expand(len(self.experts), -1, -1, 1)).squeeze(-1)
            token_lp[:, :, 1:] = seen * attention_mask[None, :, 1:].to(seen)
        weights = self._mask_top_k(self.router(input_ids, attention_mask, token_lp, len(self.experts), self.tokenizer).to(logps))
        w = weights.permute(2, 0, 1).unsqueeze(-1)  # (experts, batch, time, 1)
        if self.config.mixing == "probability":
            mixed = torch.logsumexp(logps + torch.log(w), dim=0)
        else:
            mixed = F.log_softmax((w * logps).sum(0), dim=-1)
        loss = None
        if labels is not None:
            loss = F.nll_loss(mixed[:, :-1].reshape(-1, mixed.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        return EnsembleOutput(loss=loss, logits=mixed, expert_weights=weights,
                              expert_logprobs=logps if return_expert_logprobs else None)  # fmt: skip

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _supports_default_dynamic_cache(self) -> bool:  # noqa: D401 - transformers hook
        return False

    # ---- adding an expert ----------------------------------------------------------------

    def most_similar_expert(self, texts: Sequence[str], *, block_size: int = 128) -> int:
        """Index of the expert closest to `texts`: nearest cluster centre (clustering router) or the
        expert with the lowest held-out loss on them (other routers)."""
        if isinstance(self.router, ClusterRouter):
            return int(self.router.clusters.squared_distances(texts).mean(axis=0).argmin())
        from ..lm import eval_loss

        if self.tokenizer is None:
            raise InputError("most_similar_expert needs the ensemble's tokenizer=... to score texts.")
        return int(np.argmin([eval_loss(e, self.tokenizer, list(texts), block_size=block_size) for e in self.experts]))

    def add_expert(self, name: str, texts: Sequence[str], args: Any, *, block_size: int = 128) -> int:
        """X-ELM's "adding a new language": branch from the most similar expert and train only the copy.

        The other experts are not touched (their weights stay bit-identical); the router gets a
        slot for the new expert (a new cluster centre from `texts` for the clustering router).

        Args:
            name: the new expert's name.
            texts: its training texts.
            args: ``TrainingArguments`` or a dict of its fields for :func:`hf_ext.lm.train_causal_lm`.

        Returns:
            The index of the expert it was branched from.
        """
        check_plain_name(name, field="expert name")  # before training: it becomes experts/<name>/
        from ..lm import train_causal_lm

        texts = list(texts)
        source = self.most_similar_expert(texts, block_size=block_size)
        expert = copy.deepcopy(self.experts[source])
        for p in expert.parameters():
            p.requires_grad_(True)
        train_causal_lm(expert, self.tokenizer, texts, args, block_size=block_size)
        expert.eval()
        self.experts.append(expert)
        self.router.add_expert(texts)
        self.config.expert_names = [*self.config.expert_names, name]
        self.config.router = self.router.to_dict()
        return source

    # ---- saving and loading ------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:  # type: ignore[override]
        """Each expert in ``experts/<name>/`` (safetensors, via its own save_pretrained) and
        ``ensemble_config.json`` (names, mixing, top-k, router state); the tokenizer if known."""
        from ..outputs import output_folder

        folder = Path(save_directory)
        # A temporary sibling replaces `folder` when complete: a kill leaves the previous ensemble whole.
        with output_folder(folder, writer="ExpertEnsemble", field="save_directory", overwrite_field="overwrite") as tmp:
            for name, expert in zip(self.names, self.experts):
                expert.save_pretrained(tmp / "experts" / name)
            self.config.router = self.router.to_dict()
            payload = {"expert_names": self.names, "mixing": self.config.mixing, "top_k": self.config.top_k, "router": self.config.router}
            (tmp / "ensemble_config.json").write_text(json.dumps(payload, indent=1) + "\n")
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> ExpertEnsemble:  # type: ignore[override]
        """Load an ensemble saved with :meth:`save_pretrained`, from a folder or a Hub id."""
        folder = Path(path)
        if not folder.is_dir():
            from ..hub import pull

            folder = pull(str(path), repo_type="model", endpoint=kwargs.pop("hub_endpoint", None))
        spec_file = folder / "ensemble_config.json"
        if not spec_file.is_file():
            raise InputError(f"{str(path)!r} has no ensemble_config.json; save ensembles with ExpertEnsemble.save_pretrained.")
        try:
            spec = json.loads(spec_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{spec_file} is not valid JSON ({exc}); save ensembles with ExpertEnsemble.save_pretrained.") from None
        names = spec.get("expert_names") if isinstance(spec, dict) else None
        if not isinstance(names, list) or not names:
            raise InputError(f"{spec_file} must list expert_names (one folder name per expert under experts/).")
        for name in names:  # a name like '../../x' would load a model from outside the folder
            check_plain_name(name, field=f"expert name in {spec_file}", folder=folder / "experts")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        experts = [AutoModelForCausalLM.from_pretrained(folder / "experts" / n) for n in spec["expert_names"]]
        tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").is_file() else None
        return cls(experts, router_from_dict(spec["router"]), mixing=spec["mixing"], top_k=spec["top_k"],
                   names=spec["expert_names"], tokenizer=tokenizer).eval()  # fmt: skip


def _load_expert(source: str | os.PathLike):
    from transformers import AutoModelForCausalLM

    from ..models import resolve_model

    return AutoModelForCausalLM.from_pretrained(resolve_model(str(source)))
