"""LESS gradient features as a ``datasets.map(batched=True)`` callable.

For every example and every warmup checkpoint: the gradient of the response-token loss with
respect to the LoRA parameters only, turned into the Adam feature
Γ = m′ / sqrt(v′ + ε) with m′ = β1·m + (1 − β1)·g and v′ = β2·v + (1 − β2)·g² (``kind="adam"``,
train examples) or kept as is (``kind="sgd"``, target examples), projected to d dimensions by
a fixed-seed Rademacher projection and L2-normalised.

Per-example gradients come from ONE batched forward and backward per micro-batch: every LoRA
factor is an ``nn.Linear`` (y = x Wᵀ), so example b's weight gradient is Σ_t ∂L_b/∂y[b, t]ᵀ x[b, t]
(one ``bmm`` per factor) from the factor's input x and the gradient of its output, which the
backward of the summed per-example losses gives exactly (examples do not interact: right
padding under causal attention). Only the gradients of the factors' outputs are requested
from autograd, so no weight gradient of the frozen model is formed; attention runs on the
fused SDPA kernel, and the output head runs only at the positions that predict a response token
(not over the prompt or the padding; checked at load time to give the model's own logits, else
the full forward is used). (The previous ``torch.func.vmap(grad(...))`` path needed eager attention
and ran 3-4x slower here; see ``benchmarks/less.py`` for the measured profile.)

>>> from hf_ext.select.less import GradientFeaturizer
>>> featurizer = GradientFeaturizer("base-model-or-id", ["warmup/checkpoint-10", "warmup/checkpoint-20"])  # doctest: +SKIP
>>> pool = pool.map(featurizer, batched=True, batch_size=64, new_fingerprint=featurizer.fingerprint)  # doctest: +SKIP

The callable pickles to its settings only (the model loads lazily in the worker), and its
fingerprint hashes the settings plus the checkpoint files' names, sizes and mtimes, never the
weights. Adds ``less_grads`` (``[num_checkpoints, proj_dim]`` per row) and
``less_response_tokens`` (0 means the example had no response token after truncation: its
features are zeros and it is skipped by matching and counted in the datastore's stats).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from ...errors import InputError
from .formatting import IGNORE_INDEX, TULU_TEMPLATE, ExampleFormat, tokenize_example
from .optimizer_state import load_adam_state
from .projection import RademacherProjector

FEATURE_COLUMN = "less_grads"
TOKENS_COLUMN = "less_response_tokens"
ADAPTER_WEIGHTS = ("adapter_model.safetensors",)


def response_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100, per sequence.

    `logits` ``[..., T, V]`` and `labels` ``[..., T]`` (one sequence or a batch); returns one
    loss per sequence (a scalar for one). Padding carries -100; no data-dependent control flow.

    Args:
        logits (`torch.Tensor`):
            The model's logits ``[..., T, V]``; position t predicts token t + 1.
        labels (`torch.Tensor`):
            Token ids ``[..., T]`` aligned with the input, -100 where no loss is taken (prompt and padding).
    """
    logits, labels = logits[..., :-1, :].float(), labels[..., 1:]
    mask = labels != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def _response_token_loss_at_labels(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`response_token_loss` per sequence from the decoder's last hidden states ``[B, T, H]``, with
    the output head applied only at positions that predict a labelled token."""
    target = labels[:, 1:]
    b, t = (target != IGNORE_INDEX).nonzero(as_tuple=True)
    logp = torch.log_softmax(head(hidden[b, t]).float(), dim=-1).gather(-1, target[b, t].unsqueeze(-1)).squeeze(-1)
    counts = (target != IGNORE_INDEX).sum(-1).clamp(min=1)
    return torch.zeros(labels.shape[0], dtype=logp.dtype, device=logp.device).index_add_(0, b, -logp / counts[b])


def _decoder_split(model: torch.nn.Module, factors: list) -> tuple[torch.nn.Module, str, torch.nn.Module] | None:
    """(decoder, its parameter-name prefix in `model`, output head) when the causal LM's logits
    are exactly ``head(decoder(ids).last_hidden_state)`` and every LoRA factor is inside the
    decoder (checked on a probe input); else `None` (the full forward is used)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None:
        return None
    prefix = next((n + "." for n, m in model.named_modules() if m is decoder), None)
    if prefix is None or not all(n.startswith(prefix) for n, _ in factors):
        return None
    probe = torch.arange(8, device=next(model.parameters()).device)[None]  # token ids every vocabulary has
    with torch.no_grad():
        full = model(input_ids=probe, use_cache=False).logits
        split = head(decoder(input_ids=probe, use_cache=False).last_hidden_state)
    # final-logit soft-capping, logit scales and the like change the logits: keep the full forward
    return (decoder, prefix, head) if torch.equal(full, split) else None


def check_lora_targets(model: torch.nn.Module, target_modules: Sequence[str] | str) -> None:
    """Fail clearly when a LoRA target names no module of `model` (PEFT's message lists none).

    Args:
        model (`torch.nn.Module`):
            The base model the LoRA adapter goes on.
        target_modules (`Sequence[str]` or `str`):
            The LoRA target module names; a string (a regex or ``"all-linear"``) is left to PEFT and not checked.
    """
    if isinstance(target_modules, str):
        return  # a regex or "all-linear": PEFT resolves it
    leaves = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    missing = [t for t in target_modules if not any(name == t or name.endswith("." + t) for name, _ in model.named_modules())]
    if missing:
        raise InputError(
            f"LoRA target module(s) {missing} are not in {type(model).__name__}. Its linear layers are named "
            f"{sorted(leaves)}; set lora_target_modules (LESS: q_proj, k_proj, v_proj, o_proj) to names it has."
        )


def _file_stamp(folder: Path) -> list:
    return [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(folder.iterdir()) if p.is_file()]


class GradientFeaturizer:
    """Per-example LESS gradient features for ``ds.map(batched=True)``.

    Args:
        model (`str` or `os.PathLike`):
            Base model (Hub id or folder; packaged copies resolve offline) the LoRA warmup started from.
        checkpoints (`Sequence[str | os.PathLike]`):
            Warmup checkpoint folders (each with ``adapter_model.safetensors``; for ``kind="adam"`` also the
            optimizer state, found by content).
        kind (`str`, *optional*, defaults to `"adam"`):
            ``"adam"`` for train (pool) examples, ``"sgd"`` (plain gradients) for target examples.
        tokenizer (`str` or `None`, *optional*, defaults to `None`):
            Tokenizer id/folder (default: the first checkpoint's, else the model's).
        proj_dim (`int`, *optional*, defaults to `8192`):
            Projection dimension d (LESS: 8192).
        seed (`int`, *optional*, defaults to `0`):
            Projection seed; train and target features must share it.
        micro_batch_size (`int`, *optional*, defaults to `8`):
            Examples per batched forward and backward (memory: about this many copies of the LoRA gradients and
            activations).
        float16 (`bool`, *optional*, defaults to `False`):
            Store features as float16 (half the space; matching renormalises).
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction (the formatting must match the warmup's).
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input; `None` when the data has none.
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the response, the tokens whose loss is differentiated.
        template (`str`, *optional*, defaults to `TULU_TEMPLATE`):
            Prompt template with a `{prompt}` placeholder (must match the warmup's).
        max_length (`int`, *optional*, defaults to `512`):
            Tokens per example at most (must match the warmup's).
        cache_mb (`int`, *optional*, defaults to `2048`):
            Projection blocks kept in memory between batches, in MiB (see `RademacherProjector`).
        device (`str` or `None`, *optional*, defaults to `None`):
            Where the model, the LoRA weights, the Adam moments and the projection run (``"cuda"``, ``"cpu"``;
            default: CUDA when available). Features come back on the CPU either way and do not depend on it beyond
            float rounding.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        checkpoints: Sequence[str | os.PathLike],
        *,
        kind: Literal["adam", "sgd"] = "adam",
        tokenizer: Optional[str] = None,
        proj_dim: int = 8192,
        seed: int = 0,
        micro_batch_size: int = 8,
        float16: bool = False,
        instruction_column: str = "instruction",
        input_column: Optional[str] = "input",
        response_column: str = "output",
        template: str = TULU_TEMPLATE,
        max_length: int = 512,
        cache_mb: int = 2048,
        device: Optional[str] = None,
    ):
        if kind not in ("adam", "sgd"):
            raise InputError(f"kind must be 'adam' (train examples) or 'sgd' (target examples), got {kind!r}.")
        if not checkpoints:
            raise InputError("GradientFeaturizer needs at least one warmup checkpoint folder.")
        self.model_id = os.fspath(model)
        self.checkpoints = [os.fspath(c) for c in checkpoints]
        for ckpt in self.checkpoints:
            folder = Path(ckpt)
            if not any((folder / w).is_file() for w in ADAPTER_WEIGHTS):
                raise InputError(
                    f"Checkpoint {ckpt!r} has no LoRA adapter weights ({ADAPTER_WEIGHTS[0]}). Pass the "
                    "checkpoint-* folders the LESS warmup (a PEFT model under Trainer) saved."
                )
        self.kind, self.tokenizer_id, self.proj_dim, self.seed = kind, tokenizer, int(proj_dim), int(seed)
        self.micro_batch_size, self.float16, self.cache_mb = int(micro_batch_size), bool(float16), int(cache_mb)
        self.device = device
        self.format = ExampleFormat(instruction_column, input_column, response_column, template, max_length)
        self.fingerprint = self._fingerprint()
        self._state: Optional[dict[str, Any]] = None

    # -- pickling and fingerprint: settings only, never the model ------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_state"} | {"_state": None}

    def _fingerprint(self) -> str:
        settings = {
            "model": self.model_id, "kind": self.kind, "tokenizer": self.tokenizer_id, "proj_dim": self.proj_dim,
            "seed": self.seed, "float16": self.float16, "format": self.format.__dict__,
            "checkpoints": [(c, _file_stamp(Path(c))) for c in self.checkpoints],
        }
        return "less-" + hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def _device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # -- lazy state ------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if self._state is not None:
            return self._state
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        from ...models import load_model, load_tokenizer

        first = Path(self.checkpoints[0])
        tok_source = self.tokenizer_id or (str(first) if (first / "tokenizer_config.json").is_file() else self.model_id)
        tokenizer = load_tokenizer(tok_source)
        base = load_model(self.model_id, AutoModelForCausalLM, dtype=torch.float32, attn_implementation="sdpa")
        lora_config = LoraConfig.from_pretrained(str(first))
        check_lora_targets(base, lora_config.target_modules if isinstance(lora_config.target_modules, str)
                           else sorted(lora_config.target_modules))
        lora_config.inference_mode = False
        model = get_peft_model(base, lora_config).to(self._device())  # trainable LoRA params, named as in training
        model.eval()  # no LoRA dropout: features are deterministic
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not names or any("lora_" not in n for n in names):
            raise InputError(f"Only LoRA parameters may carry gradients, got trainable {names[:5]}...")
        factors = []  # (param name, its nn.Linear factor), in gradient order
        for n in names:
            module = model.get_submodule(n.rsplit(".", 1)[0])
            if not (n.endswith(".weight") and isinstance(module, torch.nn.Linear) and module.bias is None):
                raise InputError(f"LoRA parameter {n!r} is not the weight of a bias-free linear factor (lora_A / lora_B); "
                                 "LESS features support plain LoRA adapters (no DoRA, no embedding or conv LoRA).")
            factors.append((n, module))
        shapes = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
        per_ckpt = []
        for ckpt in self.checkpoints:
            weights = load_file(str(Path(ckpt) / ADAPTER_WEIGHTS[0]))
            result = set_peft_model_state_dict(model, weights)
            lora_missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
            if lora_missing:
                raise InputError(f"Checkpoint {ckpt!r} lacks LoRA weights for {lora_missing[:3]}...; it belongs to another adapter.")
            params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            entry: dict[str, Any] = {"params": params}
            if self.kind == "adam":
                adam = load_adam_state(ckpt, model)
                entry["m"], entry["v"] = (t.to(self._device()) for t in adam.flat(names))
                entry["betas"], entry["eps"] = adam.betas, adam.eps
            per_ckpt.append(entry)
        dim = sum(int(np.prod(shapes[n])) for n in names)
        projector = RademacherProjector(dim, self.proj_dim, self.seed, cache_mb=self.cache_mb)
        self._state = {"tokenizer": tokenizer, "model": model, "names": names, "factors": factors, "per_ckpt": per_ckpt,
                       "projector": projector, "split": _decoder_split(model, factors)}
        return self._state

    @property
    def num_lora_params(self) -> int:
        return self._load()["projector"].input_dim

    # -- the computation -------------------------------------------------------------------------
    def per_example_grads(self, input_ids: torch.Tensor, labels: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Flattened per-example LoRA gradients ``[batch, num_lora_params]`` for right-padded inputs.

        One forward and one backward for the whole batch (see the module docstring); `params`
        (the checkpoint's LoRA weights) are swapped in with ``functional_call``, so the model's
        own weights are left as they are.
        """
        from torch.func import functional_call

        state = self._load()
        model, factors, split = state["model"], state["factors"], state["split"]
        seen: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        hooks = [m.register_forward_hook(lambda mod, args, out: seen.__setitem__(mod, (args[0].detach(), out)))
                 for _, m in factors]
        try:
            with torch.enable_grad():
                live = {n: params[n].detach().requires_grad_() for n, _ in factors}  # outputs of the factors need a graph
                if split is not None:  # logits only where a response token is predicted (no prompt, no padding)
                    decoder, prefix, head = split
                    hidden = functional_call(decoder, {n[len(prefix):]: t for n, t in live.items()}, (input_ids,),
                                             {"use_cache": False}).last_hidden_state
                    loss = _response_token_loss_at_labels(head, hidden, labels).sum()
                else:
                    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
                    first = int(labelled[0]) if len(labelled) else input_ids.shape[1] - 1
                    keep = max(input_ids.shape[1] - first + 1, 2)  # logits from the position before the first label
                    logits = functional_call(model, live, (input_ids,), {"logits_to_keep": keep, "use_cache": False}).logits
                    loss = response_token_loss(logits, labels[:, -keep:]).sum()
                # examples do not interact: the sum keeps each one's gradient
                outputs = [seen[m][1] for _, m in factors]
                grad_outputs = torch.autograd.grad(loss, outputs)
        finally:
            for h in hooks:
                h.remove()
        # dL_b/dW = Σ_t (dL/dy[b, t])ᵀ x[b, t] for y = x Wᵀ: [batch, out, in], flattened like W.
        grads = [torch.bmm(g.transpose(1, 2), seen[m][0]).reshape(input_ids.shape[0], -1)
                 for (_, m), g in zip(factors, grad_outputs)]
        return torch.cat(grads, dim=1)

    def features(self, rows: list[dict[str, list[int]]]) -> tuple[np.ndarray, np.ndarray]:
        """Features ``[n, num_checkpoints, proj_dim]`` and response-token counts for tokenised rows."""
        state = self._load()
        pad = state["tokenizer"].pad_token_id
        pad = pad if pad is not None else (state["tokenizer"].eos_token_id or 0)
        n_tokens = np.array([sum(1 for t in r["labels"][1:] if t != IGNORE_INDEX) for r in rows], dtype=np.int64)
        out = np.zeros((len(rows), len(self.checkpoints), self.proj_dim), dtype=np.float32)
        valid = [i for i in range(len(rows)) if n_tokens[i] > 0]
        valid.sort(key=lambda i: len(rows[i]["input_ids"]))  # similar lengths share a micro-batch: less padding
        if not valid:
            return out, n_tokens
        flat = []  # [checkpoint][micro-batch] feature rows, in `valid` order
        for entry in state["per_ckpt"]:
            for s in range(0, len(valid), self.micro_batch_size):
                chunk = valid[s : s + self.micro_batch_size]
                width = max(len(rows[i]["input_ids"]) for i in chunk)
                # Right padding: with causal attention, pads after the text change nothing before them.
                ids = torch.tensor([rows[i]["input_ids"] + [pad] * (width - len(rows[i]["input_ids"])) for i in chunk])
                lab = torch.tensor([rows[i]["labels"] + [IGNORE_INDEX] * (width - len(rows[i]["labels"])) for i in chunk])
                g = self.per_example_grads(ids.to(self._device()), lab.to(self._device()), entry["params"])
                if self.kind == "adam":
                    g = adam_feature(g, entry["m"], entry["v"], entry["betas"], entry["eps"])
                flat.append(g)
        # One projection pass per map batch for all checkpoints: each block of R is visited once.
        projected = torch.nn.functional.normalize(state["projector"](torch.cat(flat)), dim=1).cpu().numpy()
        for c in range(len(state["per_ckpt"])):
            out[valid, c] = projected[c * len(valid) : (c + 1) * len(valid)]
        return out, n_tokens

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        state = self._load()
        self.format.check_columns(list(batch.keys()), "GradientFeaturizer")
        n = len(batch[self.format.response_column])
        rows = [tokenize_example(state["tokenizer"], self.format, {k: v[i] for k, v in batch.items()}) for i in range(n)]
        feats, n_tokens = self.features(rows)
        if self.float16:
            feats = feats.astype(np.float16)
        return {FEATURE_COLUMN: list(feats), TOKENS_COLUMN: n_tokens.tolist()}


def adam_feature(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> torch.Tensor:
    """LESS's Adam feature Γ = m′ / sqrt(v′ + ε) of gradients `g` (rows) given the moments m, v.

    Args:
        g (`torch.Tensor`):
            Flattened per-example gradients ``[batch, num_params]``.
        m (`torch.Tensor`):
            Adam's first moment at the checkpoint ``[num_params]``.
        v (`torch.Tensor`):
            Adam's second moment at the checkpoint ``[num_params]``.
        betas (`tuple[float, float]`, *optional*, defaults to `(0.9, 0.999)`):
            Adam's β1 and β2, for one more moment update with `g`.
        eps (`float`, *optional*, defaults to `1e-8`):
            ε added to v′ under the square root.
    """
    b1, b2 = betas
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g * g
    return m2 / torch.sqrt(v2 + eps)
