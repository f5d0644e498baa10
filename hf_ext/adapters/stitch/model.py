"""The stitched model: a frozen seed (the hub) and frozen experts run layer by layer together,
with trainable stitch layers between them (Branch-Train-Stitch, arXiv 2502.00075).

Only the stitch layers are saved (``stitch_model.safetensors`` + ``stitch_config.json``), so a
checkpoint is a few percent of one model. Loading checks that the experts are the ones the
stitch layers were trained with (a hash of each expert's config and a weight sample).

>>> from hf_ext.testing import tiny_llama, tiny_tokenizer
>>> tok = tiny_tokenizer()
>>> seed = tiny_llama(tokenizer=tok, num_layers=4)
>>> model = StitchedModel(seed, {"math": tiny_llama(tokenizer=tok, num_layers=4, seed=1)}, StitchConfig(num_stitch_layers=2))
>>> [layer.kind for layer in model.stitch], model.stitch_after
(['h2e', 'e2h'], [2, 4])
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast

from ...errors import InputError
from ...hub.mixin import PushToHubMixin
from ...models import load_causal_lm
from .config import CONFIG_NAME, WEIGHTS_NAME, StitchConfig
from .layer import StitchLayer

__all__ = ["StitchedModel", "StitchCache", "expert_hash", "count_stitch_parameters"]

_VOLATILE_KEYS = {"transformers_version", "dtype", "torch_dtype", "architectures", "use_cache", "return_dict",
                  "output_hidden_states", "output_attentions", "name_or_path"}


def expert_hash(model: nn.Module) -> str:
    """``<config digest>:<weights fingerprint>`` of a model (an expert or the seed).

    The config digest tells architectures apart; two experts branched from one seed share a
    config, so the weights tell them apart: :func:`hf_ext.fingerprint.state_fingerprint` over
    every parameter (a strided sample of each, so a tensor changed anywhere counts), on values
    rounded to bfloat16 so the same weights loaded in float32 or bfloat16 match.

    Args:
        model (`nn.Module`):
            A loaded model with a ``config`` (a transformers model).
    """
    from ...fingerprint import state_fingerprint

    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k not in _VOLATILE_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    with torch.no_grad():
        weights = state_fingerprint(dict(model.named_parameters()), exact=False)
    return f"{digest}:{weights}"


def _same_hash(saved: str, current: str) -> bool:
    """Equal config digests and weight fingerprints; a hash of the older 12-value scheme never matches."""
    return isinstance(saved, str) and saved == current


def _legacy(saved: str | None) -> bool:
    from ...fingerprint import VERSION

    return not (isinstance(saved, str) and saved.partition(":")[2].startswith(VERSION + "-"))


def count_stitch_parameters(hub_dim: int, expert_dims: list[int], num_layers: int) -> int:
    """Trainable parameters of K stitch layers: K·(2n+1)·d² when every width is d (SPECS §7).

    Per layer: the hub's gate (d×d) and, per expert of width d_i, its projection (d·d_i) and
    gate rows — hub-sized (d×d) in E2H layers, expert-sized (d×d_i) in H2E layers.

    Args:
        hub_dim (`int`):
            Hidden size d of the hub (the seed).
        expert_dims (`list[int]`):
            Hidden size d_i of every expert.
        num_layers (`int`):
            K, the number of stitch layers.
    """
    total = 0
    for kind in StitchConfig.layer_types(num_layers):
        gate_rows = [hub_dim if kind == "e2h" else d for d in expert_dims]
        total += hub_dim * hub_dim + sum(hub_dim * d + hub_dim * g for d, g in zip(expert_dims, gate_rows))
    return total


def _trunk(model: nn.Module, role: str) -> nn.Module:
    trunk = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if trunk is None or not all(hasattr(trunk, a) for a in needed) or not hasattr(model, "lm_head"):
        raise InputError(
            f"The {role} ({type(model).__name__}) is not a decoder-only causal LM with the Llama layout "
            f"(model.{{{', '.join(needed)}}} and lm_head). Stitching supports Llama, Mistral, Qwen2 and similar models."
        )
    return trunk


def _hub_id(given: Any, model: nn.Module) -> str | None:
    """The Hub id of a model given by id or path (mapped back through the resolver), else of the
    folder it was loaded from; ``None`` when unknown (a model built in memory, an unknown folder)."""
    from ...models import hub_id_for

    source = given if isinstance(given, (str, os.PathLike)) else getattr(model, "name_or_path", None)
    return hub_id_for(source) if source else None


class StitchCache(DynamicCache):
    """The hub's KV cache, carrying one cache per expert for generation.

    Args:
        config (`Any`, *optional*, defaults to `None`):
            The seed's model config (passed to `DynamicCache`).
        experts (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Expert name -> that expert's model config; every expert gets a `DynamicCache` of its own.
    """

    def __init__(self, config: Any = None, experts: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self.experts = {name: DynamicCache(config=cfg) for name, cfg in (experts or {}).items()}


class StitchedModel(PushToHubMixin, nn.Module, GenerationMixin):
    """A frozen seed and frozen experts joined by trainable stitch layers.

    Args:
        seed (`Any`):
            The hub model: a causal LM instance, or a Hub id / path (loaded by `hf_ext.models.load_causal_lm`).
        experts (`dict[str, Any]`):
            ``{name: model or id/path}``; every expert must share the seed's vocabulary and depth.
        config (`StitchConfig` or `None`, *optional*, defaults to `None`):
            The stitch layers (``None``: ``StitchConfig()``); the model keeps a copy whose derived fields (widths,
            depth, expert hashes) are filled in here, and the Hub ids of models given by id (or by a path the
            resolver `hf_ext.models` knows) where ``seed_model`` / ``expert_models`` are unset.
        tokenizer (`Any`, *optional*, defaults to `None`):
            The seed's tokenizer; when given with `expert_tokenizers`, their vocabularies must be identical.
        expert_tokenizers (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Expert name -> that expert's tokenizer, checked against `tokenizer`.
        force (`bool`, *optional*, defaults to `False`):
            Build even if the config's stored expert or seed hashes do not match the given models.
    """

    main_input_name = "input_ids"
    _is_stateful = False

    def __init__(self, seed: Any, experts: dict[str, Any], config: StitchConfig | None = None, *,
                 tokenizer: Any = None, expert_tokenizers: dict[str, Any] | None = None, force: bool = False) -> None:
        super().__init__()
        config = copy.deepcopy(config) if config is not None else StitchConfig()  # the caller's config is never changed
        if not isinstance(experts, dict) or not experts:
            raise InputError("`experts` must be a non-empty dict {name: model}; BTS needs at least one expert.")
        if config.expert_names and list(experts) != list(config.expert_names):
            missing = [n for n in config.expert_names if n not in experts]
            if missing:
                raise InputError(
                    f"Expert(s) {missing} named in the stitch config are missing; pass them in `experts` "
                    f"(expected names: {config.expert_names})."
                )
            extra = [n for n in experts if n not in config.expert_names]
            if extra:
                raise InputError(
                    f"Expert(s) {extra} are not in the stitch config {config.expert_names}; "
                    "load without them and call add_expert() to stitch a new expert in."
                )
            experts = {n: experts[n] for n in config.expert_names}
        self.seed = load_causal_lm(seed, role="seed")
        self.experts = nn.ModuleDict({name: load_causal_lm(m, role=f"expert {name!r}") for name, m in experts.items()})
        for model in (self.seed, *self.experts.values()):
            model.requires_grad_(False)
            model.eval()
        self._hub_trunk = _trunk(self.seed, "seed")
        for name, expert in self.experts.items():
            self._check_expert(name, expert, tokenizer, (expert_tokenizers or {}).get(name), config)
        self._check_hashes(config, force)
        seed_hash = expert_hash(self.seed)
        self._check_seed(config, seed_hash, force)
        if config.seed_model is None:
            config.seed_model = _hub_id(seed, self.seed)
        if config.expert_models is None:
            ids = [_hub_id(experts[n], e) for n, e in self.experts.items()]
            config.expert_models = ids if all(ids) else None  # all or none: the list lines up with expert_names

        self.stitch_config = config
        config.seed_hash = seed_hash
        seed_cfg = self.seed.config
        config.num_hidden_layers = seed_cfg.num_hidden_layers
        config.hub_hidden_size = seed_cfg.hidden_size
        config.expert_names = list(self.experts)
        config.expert_hidden_sizes = {n: e.config.hidden_size for n, e in self.experts.items()}
        config.expert_hashes = {n: expert_hash(e) for n, e in self.experts.items()}
        self.stitch_after = config.placements(seed_cfg.num_hidden_layers)
        self.stitch = nn.ModuleList(
            StitchLayer(kind, seed_cfg.hidden_size, config.expert_hidden_sizes, dropout=config.dropout, init=config.init,
                        gate_offset=config.gate_offset, init_std=config.init_std)
            for kind in StitchConfig.layer_types(len(self.stitch_after))
        ).to(self.seed.device)
        # GenerationMixin reads these from the model it drives: the stitched model speaks for the seed.
        self.config = seed_cfg
        self.generation_config = self.seed.generation_config

    # -- checks -------------------------------------------------------------------------------
    def _check_expert(self, name: str, expert: nn.Module, tokenizer: Any, expert_tokenizer: Any, config: StitchConfig) -> None:
        _trunk(expert, f"expert {name!r}")
        seed_cfg, cfg = self.seed.config, expert.config
        if cfg.hidden_size != seed_cfg.hidden_size and not config.width_projections:
            raise InputError(
                f"Expert {name!r} has hidden_size={cfg.hidden_size} but the seed has {seed_cfg.hidden_size}, and no "
                "projections between the widths are configured. Set StitchConfig.width_projections=True to give it "
                "rectangular projections (pass stitch_config=StitchConfig(..., width_projections=True) to StitchTrainer), "
                "or branch the expert from the seed so the widths match."
            )
        if cfg.vocab_size != seed_cfg.vocab_size:
            raise InputError(
                f"Expert {name!r} has vocab_size={cfg.vocab_size} but the seed has {seed_cfg.vocab_size}. "
                "Experts must be branched from the seed with its tokenizer; stitching mixes hidden states token by token."
            )
        if tokenizer is not None and expert_tokenizer is not None and tokenizer.get_vocab() != expert_tokenizer.get_vocab():
            raise InputError(
                f"Expert {name!r} uses a different tokenizer from the seed (the vocabularies differ). "
                "Branch experts from the seed with the seed's tokenizer."
            )
        if cfg.num_hidden_layers != seed_cfg.num_hidden_layers:
            raise InputError(
                f"Expert {name!r} has {cfg.num_hidden_layers} layers but the seed has {seed_cfg.num_hidden_layers}; "
                "the models run layer by layer together, so they need the same depth (widths may differ)."
            )

    def _check_hashes(self, config: StitchConfig, force: bool) -> None:
        changed = [n for n, saved in config.expert_hashes.items()
                   if n in self.experts and not _same_hash(saved, expert_hash(self.experts[n]))]
        if changed and not force:
            old = [n for n in changed if _legacy(config.expert_hashes[n])]
            note = (f" The stored hashes of {old} come from an older hf_ext that sampled 12 values and cannot vouch "
                    "for the experts; re-save the stitch layers with this version.") if old else ""
            raise InputError(
                f"The stitch layers were trained with other expert(s) than the ones given for {changed} "
                "(their config or weights differ from the stored hash). Pass the original experts, or force=True "
                f"to load anyway (the stitch layers will likely be wrong for these experts).{note}"
            )

    def _check_seed(self, config: StitchConfig, seed_hash: str, force: bool) -> None:
        """Stitch layers saved with a seed (a config that has expert hashes) load onto that seed only."""
        if force or not config.expert_hashes:  # a fresh config: nothing was trained against a seed yet
            return
        if config.seed_hash is None or _legacy(config.seed_hash):
            raise InputError(
                "The stitch config records no seed hash (saved by an older hf_ext), so nothing shows the given seed "
                "is the one the stitch layers were trained with. Pass force=True to load anyway, then re-save."
            )
        if not _same_hash(config.seed_hash, seed_hash):
            raise InputError(
                "The stitch layers were trained with another seed model than the one given (its config or weights "
                "differ from the stored seed_hash). Pass the original seed, or force=True to load anyway "
                "(the stitch layers will likely be wrong for this seed)."
            )

    # -- adding and removing experts -------------------------------------------------------------
    def add_expert(self, name: str, expert: Any, *, tokenizer: Any = None, expert_tokenizer: Any = None) -> None:
        """Stitch in a new expert: only its projections and gate rows are new; nothing else changes.

        The new expert starts closed (its gate logits are the hub's minus β, whatever training did
        to the gates), so outputs move by ~e^(−β) until the stitch layers are retrained.
        """
        if name in self.experts:
            raise InputError(f"An expert named {name!r} is already stitched in; remove_expert({name!r}) first.")
        expert = load_causal_lm(expert, role=f"expert {name!r}").to(self.seed.device)
        expert.requires_grad_(False)
        expert.eval()
        self._check_expert(name, expert, tokenizer, expert_tokenizer, self.stitch_config)
        self.experts[name] = expert
        for layer in self.stitch:
            layer.add_expert(name, expert.config.hidden_size, closed=True)
        cfg = self.stitch_config
        cfg.expert_names.append(name)
        cfg.expert_hidden_sizes[name] = expert.config.hidden_size
        cfg.expert_hashes[name] = expert_hash(expert)
        if cfg.expert_models is not None:
            cfg.expert_models = None  # the Hub ids no longer line up; set them again before pushing

    def remove_expert(self, name: str) -> None:
        """Drop an expert and its stitch parameters; the other experts' parameters are kept as they are."""
        if name not in self.experts:
            raise InputError(f"No expert named {name!r}; stitched experts: {list(self.experts)}.")
        if len(self.experts) == 1:
            raise InputError("Cannot remove the last expert; a stitched model needs at least one.")
        index = list(self.experts).index(name)
        del self.experts[name]
        for layer in self.stitch:
            layer.remove_expert(name)
        cfg = self.stitch_config
        cfg.expert_names.remove(name)
        cfg.expert_hidden_sizes.pop(name)
        cfg.expert_hashes.pop(name)
        if cfg.expert_models is not None:
            cfg.expert_models = [m for i, m in enumerate(cfg.expert_models) if i != index]

    # -- modes and parameters -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "StitchedModel":
        # The frozen models stay in eval mode (no dropout): only stitch layers ever train.
        self.training = mode
        self.stitch.train(mode)
        return self

    @property
    def gate_offset(self) -> float:
        """The hub's gate-logit offset β the stitch layers use now (the config holds the one they started with)."""
        return self.stitch[0].gate_offset

    def set_gate_offset(self, value: float) -> None:
        """Set the hub's fixed gate-logit offset β in every stitch layer (runtime state: the config is not
        changed; `save_pretrained` writes the β in use, so a saved model loads with the β it was saved with)."""
        for layer in self.stitch:
            layer.gate_offset = float(value)

    def gate_means(self) -> dict[str, torch.Tensor]:
        """Mean gate values of the last forward, per stitch layer: ``stitch/{k}/e2h_hub`` and
        ``stitch/{k}/e2h_{expert}`` (the E2H softmax weights, summing to 1) and ``stitch/{k}/h2e_{expert}``
        (the H2E sigmoid gates: the hub's share in that expert's state)."""
        return {f"stitch/{k}/{layer.kind}_{name}": value for k, layer in enumerate(self.stitch) for name, value in layer.gate_means.items()}

    def stitch_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"stitch.{k}": v.detach().contiguous() for k, v in self.stitch.state_dict().items()}

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def expected_trainable_parameters(self) -> int:
        cfg = self.stitch_config
        return count_stitch_parameters(cfg.hub_hidden_size, list(cfg.expert_hidden_sizes.values()), len(self.stitch))

    @property
    def device(self) -> torch.device:
        return self.seed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.seed.dtype

    def can_generate(self) -> bool:
        return True

    def is_remote_code(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        # generate() calls PreTrainedModel helpers (attention/experts implementation switches...):
        # the stitched model answers them with the seed's.
        try:
            return super().__getattr__(name)
        except AttributeError:
            seed = self.__dict__.get("_modules", {}).get("seed")
            if name.startswith("__") or name in ("seed", "experts", "stitch") or seed is None:
                raise
            return getattr(seed, name)

    def get_input_embeddings(self) -> nn.Module:
        return self._hub_trunk.embed_tokens

    # -- forward --------------------------------------------------------------------------------
    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        if model_kwargs.get("cache") is None and generation_config.use_cache is not False:
            model_kwargs["cache"] = StitchCache(self.seed.config, {n: e.config for n, e in self.experts.items()})

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: StitchCache | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, **kwargs: Any) -> CausalLMOutputWithPast:
        """Causal-LM forward of the stitched model; the logits are the seed's head on the hub state."""
        if use_cache and cache is None:
            cache = StitchCache(self.seed.config, {n: e.config for n, e in self.experts.items()})
        if cache is not None and not isinstance(cache, StitchCache):
            raise InputError("StitchedModel needs a StitchCache (one KV cache per model); let generate() create it.")
        models = {"hub": self.seed, **self.experts}
        trunks = {"hub": self._hub_trunk, **{n: getattr(e, e.base_model_prefix) for n, e in self.experts.items()}}
        caches = {"hub": cache, **(cache.experts if cache is not None else dict.fromkeys(self.experts))}
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(input_ids.shape[1], device=input_ids.device) + past).unsqueeze(0)

        first, last = self.stitch_after[0], self.stitch_after[-1]
        states, masks, rotary = {}, {}, {}
        # Nothing before the first stitch layer depends on trainable weights: run it without a graph.
        with torch.no_grad() if torch.is_grad_enabled() else nullcontext():
            for key, trunk in trunks.items():
                states[key] = trunk.embed_tokens(input_ids)
                masks[key] = create_causal_mask(config=models[key].config, inputs_embeds=states[key],
                                                attention_mask=attention_mask, cache=caches[key], position_ids=position_ids)
                rotary[key] = trunk.rotary_emb(states[key], position_ids=position_ids)
                states[key] = self._run_layers(trunk, states[key], 0, first, masks[key], rotary[key], position_ids,
                                               caches[key], use_cache)
        stitch_at = {after: layer for after, layer in zip(self.stitch_after, self.stitch)}
        for index in range(first, self._hub_trunk.config.num_hidden_layers + 1):
            if index > first:
                for key, trunk in trunks.items():
                    if key != "hub" and index > last:
                        continue  # experts past the last (E2H) stitch layer cannot reach the output
                    states[key] = self._run_layers(trunk, states[key], index - 1, index, masks[key], rotary[key],
                                                   position_ids, caches[key], use_cache)
            if index in stitch_at:
                hub, experts = stitch_at[index](states["hub"], {n: states[n] for n in self.experts})
                states = {"hub": hub, **experts}

        hidden = self._hub_trunk.norm(states["hub"])
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) and logits_to_keep else slice(None)
        logits = self.seed.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.seed.loss_function(logits=logits, labels=labels, vocab_size=self.seed.config.vocab_size,
                                           num_items_in_batch=kwargs.get("num_items_in_batch"))
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)

    @staticmethod
    def _run_layers(trunk, hidden, start, stop, mask, rotary, position_ids, cache, use_cache):
        for layer in trunk.layers[start:stop]:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids,
                           cache=cache, use_cache=use_cache)
        return hidden

    # -- save / load / push -----------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> Path:
        """Write only the stitch weights (safetensors) and the stitch config (JSON)."""
        from safetensors.torch import save_file

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        from ...outputs import atomic_file

        with atomic_file(folder / WEIGHTS_NAME) as tmp:  # a kill leaves the previous weights whole, never half a file
            save_file({k: v.cpu() for k, v in self.stitch_state_dict().items()}, str(tmp), metadata={"format": "pt", "hf_ext": "stitch"})
        dataclasses.replace(self.stitch_config, gate_offset=self.gate_offset).save_pretrained(folder)
        return folder

    def load_stitch_weights(self, folder: str | os.PathLike) -> None:
        from safetensors.torch import load_file

        path = Path(folder) / WEIGHTS_NAME
        if not path.is_file():
            raise InputError(f"No {WEIGHTS_NAME} in {str(folder)!r}; is this a folder written by StitchedModel.save_pretrained?")
        state = load_file(str(path), device=str(self.device))
        prefix = "stitch."
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            self.stitch.load_state_dict(stripped, strict=True)
        except RuntimeError as exc:
            raise InputError(f"Stitch weights in {str(folder)!r} do not fit these models: {exc}") from None

    @classmethod
    def from_pretrained(cls, seed: Any, experts: dict[str, Any] | None, path_or_hub_id: str | os.PathLike, *,
                        force: bool = False, revision: str | None = None, tokenizer: Any = None,
                        expert_tokenizers: dict[str, Any] | None = None) -> "StitchedModel":
        """Load stitch layers onto a seed and experts (``experts=None``: the Hub ids stored in the config)."""
        folder = Path(path_or_hub_id)
        if not folder.is_dir():
            from ...hub import pull

            folder = pull(str(path_or_hub_id), repo_type="model", revision=revision)
        config = StitchConfig.from_pretrained(folder)
        if experts is None:
            if not config.expert_models:
                raise InputError("The stitch config stores no expert Hub ids; pass `experts` as {name: model or id}.")
            experts = dict(zip(config.expert_names, config.expert_models))
        model = cls(seed, dict(experts), config, tokenizer=tokenizer, expert_tokenizers=expert_tokenizers, force=force)
        model.load_stitch_weights(folder)
        return model

    def model_card(self, *, summary: str = "", eval_results: list[dict] | None = None, datasets: list[str] | None = None,
                   training: dict | None = None, plots: list[tuple[str, str]] | None = None, require_hub_ids: bool = True):
        """A Hub model card: base_model = the seed and the experts, relation adapter.

        `plots` are (file name beside README.md, caption) pairs shown in the card. Without the
        Hub ids of the seed and every expert the card has no base_model: that fails when
        `require_hub_ids` (pushing), and gives a local card that says what to set otherwise.
        """
        from ...hub.cards import render_model_card

        cfg = self.stitch_config
        known = bool(cfg.seed_model and cfg.expert_models and len(cfg.expert_models) == len(cfg.expert_names))
        if require_hub_ids and not known:
            raise InputError(
                "Set stitch_config.seed_model and stitch_config.expert_models (Hub ids, one per expert, in the order "
                f"{cfg.expert_names}) before pushing: the card's base_model lists them. They are set for you when the "
                "models are given by Hub id (or by a path the resolver hf_ext.models knows)."
            )
        card_data = {"base_model": [cfg.seed_model, *cfg.expert_models] if known else None, "base_model_relation": "adapter",
                     "library_name": "hf-ext", "tags": ["hf-ext", "branch-train-stitch", "stitch", "arxiv:2502.00075"]}
        if datasets:
            card_data["datasets"] = datasets
        experts = dict(zip(cfg.expert_names, cfg.expert_models)) if known else dict.fromkeys(cfg.expert_names)
        name = f"{cfg.seed_model} + stitched experts" if known else "stitched experts"
        return render_model_card(
            "stitch_model.md.j2", card_data, eval_results=eval_results or [], model_name=name, title="Stitch layers (Branch-Train-Stitch)",
            summary=summary, seed_model=cfg.seed_model if known else None, experts=experts,
            stitch_after=self.stitch_after, kinds=[layer.kind for layer in self.stitch], gate_offset=self.gate_offset,
            trainable=self.num_trainable_parameters(), stitch_config=cfg.to_dict(), training=training or {},
            plots=plots or [], held_out=eval_results or [],
        )

    def _hub_commit_message(self) -> str:
        return "Upload stitch layers"


__all__ += ["StitchConfig", "CONFIG_NAME", "WEIGHTS_NAME"]
