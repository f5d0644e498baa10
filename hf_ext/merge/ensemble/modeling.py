"""X-ELM's ensemble model (Blevins et al. 2024, arXiv 2401.10440).

:class:`ExpertEnsemble` is a ``PreTrainedModel`` with ``GenerationMixin``: ``forward`` returns the
mixture's log-probabilities as ``logits`` (so ``cross_entropy`` on them is the mixture's NLL and
``generate`` samples from the mixture), optionally keeping only the top-k experts per position,
mixing in probability space (perplexity) or logit space (downstream tasks). The mixture weights come
from a router (:mod:`hf_ext.merge.ensemble.routers`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ...errors import InputError
from ...models import load_causal_lm
from ...paths import check_plain_name
from .routers import BayesianRouter, ClusterRouter, Router, router_from_dict

__all__ = ["ExpertEnsemble", "ExpertEnsembleConfig", "EnsembleOutput"]


class ExpertEnsembleConfig(PretrainedConfig):
    """Config of an :class:`ExpertEnsemble`: expert names, mixing space, top-k and the router's state.

    Args:
        expert_names (`list[str]` or `None`, *optional*, defaults to `None`):
            One name per expert, in order; each expert is saved under ``experts/<name>/``. None: no experts.
        mixing (`str`, *optional*, defaults to `"probability"`):
            ``"probability"`` (mix the experts' probabilities) or ``"logit"`` (mix their log-probabilities).
        top_k (`int` or `None`, *optional*, defaults to `None`):
            Keep the k largest mixture weights per position (renormalised); None keeps all.
        router (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            The router's ``to_dict()`` state, rebuilt by :func:`~hf_ext.merge.ensemble.routers.router_from_dict`;
            None: ``{"type": "bayesian"}``.
        vocab_size (`int` or `None`, *optional*, defaults to `None`):
            The experts' shared vocabulary size.
        **kwargs:
            Passed to ``PretrainedConfig`` (``bos_token_id``, ``eos_token_id``, ``pad_token_id``, ...).
    """

    model_type = "hf_ext_expert_ensemble"

    def __init__(self, expert_names: list[str] | None = None, mixing: str = "probability", top_k: int | None = None,
                 router: dict[str, Any] | None = None, vocab_size: int | None = None, **kwargs: Any):
        self.expert_names = list(expert_names or [])
        self.mixing, self.top_k, self.router, self.vocab_size = mixing, top_k, router or {"type": "bayesian"}, vocab_size
        super().__init__(**kwargs)


@dataclass
class EnsembleOutput(CausalLMOutputWithPast):
    """``logits`` hold the mixture's log-probabilities; ``expert_weights`` (batch, time, experts) the mix.

    Besides ``CausalLMOutputWithPast``'s fields (``loss``: the mixture's NLL when labels were given):

    Args:
        expert_weights (`torch.Tensor` or `None`, *optional*, defaults to `None`):
            The router's mixture weights, shape (batch, time, experts), after the top-k mask.
        expert_logprobs (`torch.Tensor` or `None`, *optional*, defaults to `None`):
            Each expert's log-probabilities, shape (experts, batch, time, vocab); set only when ``forward`` was
            called with ``return_expert_logprobs=True``.
    """

    expert_weights: torch.Tensor | None = None
    expert_logprobs: torch.Tensor | None = None


class ExpertEnsemble(PreTrainedModel, GenerationMixin):
    """An ensemble of causal-LM experts that behaves like one causal LM.

    Args:
        experts (`Sequence[Any]`):
            Causal LMs sharing one tokenizer / vocabulary (models, folders or Hub ids).
        router (`Router` or `None`, *optional*, defaults to `None`):
            A :class:`BayesianRouter` (default), :class:`ClusterRouter` or :class:`UniformRouter`.
        mixing (`Literal['probability', 'logit']`, *optional*, defaults to `"probability"`):
            ``"probability"`` — ``log Σ_j w_j p_j`` (X-ELM's perplexity setting) — or ``"logit"`` —
            ``log_softmax(Σ_j w_j log p_j)`` (its downstream setting).
        top_k (`int` or `None`, *optional*, defaults to `None`):
            Keep the k largest weights per position (renormalised); ``None`` keeps all.
        names (`Sequence[str]` or `None`, *optional*, defaults to `None`):
            One name per expert (e.g. the cluster's languages).
        tokenizer (`Any`, *optional*, defaults to `None`):
            Needed by the clustering router (it routes on text) and by :meth:`add_expert`.

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
        experts = [load_causal_lm(e, role=f"expert {i}") for i, e in enumerate(experts)]
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
        """The mixture's log-probabilities (as ``logits``), the router's weights and, with labels, the mixture's NLL.

        Args:
            input_ids (`torch.Tensor`):
                Token ids, shape (batch, time); every expert reads them.
            attention_mask (`torch.Tensor` or `None`, *optional*, defaults to `None`):
                1 for real tokens, 0 for padding (default all ones).
            labels (`torch.Tensor` or `None`, *optional*, defaults to `None`):
                Targets shifted inside, as for ``AutoModelForCausalLM``; -100 is ignored.
            return_expert_logprobs (`bool`, *optional*, defaults to `False`):
                Also return each expert's log-probabilities (``expert_logprobs``).
        """
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
        expert with the lowest held-out loss on them (other routers).

        Args:
            texts (`Sequence[str]`):
                Texts of the new domain or language.
            block_size (`int`, *optional*, defaults to `128`):
                Tokens per block when the experts' losses are measured (other routers than clustering).
        """
        if isinstance(self.router, ClusterRouter):
            return int(self.router.clusters.squared_distances(texts).mean(axis=0).argmin())
        from ...lm import eval_loss

        if self.tokenizer is None:
            raise InputError("most_similar_expert needs the ensemble's tokenizer=... to score texts.")
        return int(np.argmin([eval_loss(e, self.tokenizer, list(texts), block_size=block_size) for e in self.experts]))

    def add_expert(self, name: str, texts: Sequence[str], args: Any, *, block_size: int = 128) -> int:
        """X-ELM's "adding a new language": branch from the most similar expert and train only the copy.

        The other experts are not touched (their weights stay bit-identical); the router gets a
        slot for the new expert (a new cluster centre from `texts` for the clustering router).

        Args:
            name (`str`):
                The new expert's name.
            texts (`Sequence[str]`):
                Its training texts.
            args (`Any`):
                ``TrainingArguments`` or a dict of its fields for :func:`hf_ext.lm.train_causal_lm`.
            block_size (`int`, *optional*, defaults to `128`):
                Tokens per training block (texts are packed), also used to pick the most similar expert.

        Returns:
            The index of the expert it was branched from.
        """
        check_plain_name(name, field="expert name")  # before training: it becomes experts/<name>/
        from ...lm import train_causal_lm

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
        ``ensemble_config.json`` (names, mixing, top-k, router state); the tokenizer if known.

        Args:
            save_directory (`str` or `os.PathLike`):
                The folder to write (replaced only once complete).
        """
        from ...outputs import output_folder

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
        """Load an ensemble saved with :meth:`save_pretrained`, from a folder or a Hub id.

        Args:
            path (`str` or `os.PathLike`):
                The saved folder, or a Hub id (downloaded).
            **kwargs:
                Only ``hub_endpoint`` (Hub URL of the download) is read; other keys are ignored.
        """
        folder = Path(path)
        if not folder.is_dir():
            from ...hub import pull

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
        from transformers import AutoTokenizer

        experts = [load_causal_lm(folder / "experts" / n, role=f"expert {n!r}") for n in spec["expert_names"]]
        tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").is_file() else None
        return cls(experts, router_from_dict(spec["router"]), mixing=spec["mixing"], top_k=spec["top_k"],
                   names=spec["expert_names"], tokenizer=tokenizer).eval()  # fmt: skip
