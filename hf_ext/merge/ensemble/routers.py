"""X-ELM's routers: per-position mixture weights ``(batch, time, experts)`` for an :class:`ExpertEnsemble`.

- :class:`BayesianRouter`: ``p(j | x_<t) ∝ p(x_<t | j) · p(j)``, from the experts' own likelihoods of
  the tokens seen so far (causal: the weights at position t use tokens up to t only);
- :class:`ClusterRouter`: ``softmax(−d²/T)`` over squared distances from the context's TF-IDF vector to
  the cluster centres (T = 0.1 in the paper; T → 0 is one-hot on the nearest cluster);
- :class:`UniformRouter`: equal weights (or fixed prior weights).

:func:`router_from_dict` rebuilds a router from its ``to_dict()`` (the state an ensemble saves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import InputError
from .clusters import TfidfClusters

__all__ = ["Router", "UniformRouter", "BayesianRouter", "ClusterRouter", "router_from_dict"]


class Router:
    """Gives per-position mixture weights; weights at position t mix the predictions of token t+1."""

    needs_token_logprobs = False

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_logprobs: torch.Tensor | None,
                 n_experts: int, tokenizer: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def add_expert(self, texts: Sequence[str] | None = None) -> None:
        """Make room for one more expert (called by :meth:`ExpertEnsemble.add_expert`).

        Args:
            texts (`Sequence[str]` or `None`, *optional*, defaults to `None`):
                The new expert's training texts (the clustering router places its centre from them; others
                ignore them).
        """

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
    """Fixed weights (uniform, or `prior` normalised): the context is ignored.

    Args:
        prior (`Sequence[float]` or `None`, *optional*, defaults to `None`):
            One non-negative weight per expert with a positive sum, normalised to sum to 1 (default uniform).
    """

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
        prior (`Sequence[float]` or `None`, *optional*, defaults to `None`):
            P(j) (default uniform).
        temperature (`float`, *optional*, defaults to `1.0`):
            Likelihoods are raised to 1/temperature (1 = the exact posterior).
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

    Args:
        clusters (`TfidfClusters`):
            The TF-IDF vectorizer and one cluster centre per expert (e.g. from :func:`balanced_tfidf_kmeans`).
        temperature (`float`, *optional*, defaults to `0.1`):
            T of ``softmax(−d²/T)``; must be >= 0, and 0 gives one-hot weights on the nearest centre.
        context_tokens (`int` or `None`, *optional*, defaults to `None`):
            Route on the first this many tokens of each sequence; None: on the whole input.
    """

    def __init__(self, clusters: TfidfClusters, temperature: float = 0.1, context_tokens: int | None = None):
        if temperature < 0:
            raise InputError(f"ClusterRouter temperature must be >= 0, got {temperature}.")
        self.clusters, self.temperature, self.context_tokens = clusters, temperature, context_tokens

    def weights_for_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``softmax(−d²/T)`` over the centres for each text (one-hot on the nearest at T = 0): shape (len(texts), k).

        Args:
            texts (`Sequence[str]`):
                The contexts to route, as text.
        """
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
    """A router rebuilt from its ``to_dict()`` state (the one an :class:`ExpertEnsemble` saves in its config).

    Args:
        data (`dict[str, Any]`):
            The state: ``"type"`` (``"uniform"``, ``"bayesian"`` or ``"cluster"``) and that router's settings.
    """
    kind = data.get("type")
    if kind == "uniform":
        return UniformRouter(data.get("prior"))
    if kind == "bayesian":
        return BayesianRouter(data.get("prior"), data.get("temperature", 1.0))
    if kind == "cluster":
        return ClusterRouter(TfidfClusters.from_dict(data["clusters"]), data["temperature"], data.get("context_tokens"))
    raise InputError(f"Unknown router type {kind!r}; expected uniform, bayesian or cluster.")
