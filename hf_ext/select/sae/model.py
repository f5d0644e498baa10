"""A sparse autoencoder over a model's residual stream, with the two public weight formats.

Encode (SPECS §1, Gao et al. 2024 TopK SAEs): ``z = TopK_k(ReLU(W_enc (h − b_dec) + b_enc))``.
With ``k=None`` it is a plain ReLU SAE, and a per-latent ``threshold`` makes it a JumpReLU SAE,
so the usual public SAEs load into this one module:

- **sparsify** (EleutherAI): a folder (one per hookpoint, e.g. ``layers.15/``) with ``cfg.json``
  (``d_in``, ``num_latents`` or ``expansion_factor``, ``k``) and ``sae.safetensors``
  (``encoder.weight`` [latents, d_in], ``encoder.bias``, ``W_dec`` [latents, d_in], ``b_dec``).
  This is also the format :meth:`TopKSAE.save_pretrained` writes (plus a card).
- **sae-lens**: a folder (e.g. ``blocks.15.hook_resid_post/``) with ``cfg.json`` (``d_in``,
  ``d_sae``, ``architecture`` topk / standard / jumprelu, ``k`` or ``activation_fn_kwargs.k``,
  ``apply_b_dec_to_input``) and ``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae], ``b_enc``,
  ``W_dec`` [d_sae, d_in], ``b_dec``, optional ``threshold``).

Weights load with safetensors only. A Hub repo id is fetched with ``snapshot_download`` of
just the subfolder asked for.

>>> import torch
>>> sae = TopKSAE(d_in=8, num_latents=32, k=4, seed=0)
>>> ids, values = sae.encode_topk(torch.randn(3, 8))
>>> tuple(ids.shape), bool((values >= 0).all())
((3, 4), True)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ...config import read_json_object
from ...errors import InputError
from ...hub.mixin import PushToHubMixin

SPARSIFY_WEIGHTS, SAE_LENS_WEIGHTS, CONFIG = "sae.safetensors", "sae_weights.safetensors", "cfg.json"
SAEFormat = Literal["auto", "sparsify", "sae_lens"]


class TopKSAE(PushToHubMixin, nn.Module):
    """TopK (or ReLU / JumpReLU) sparse autoencoder.

    Args:
        d_in (`int`):
            Width of the residual stream it reads (the model's hidden size).
        num_latents (`int`):
            Dictionary size (paper: 131,072 on Llama-3.1-8B).
        k (`int` or `None`, *optional*, defaults to `32`):
            Active latents per token (paper: 128), in [1, num_latents]; ``None`` for a plain ReLU SAE.
        threshold (`torch.Tensor` or `None`, *optional*, defaults to `None`):
            Optional per-latent JumpReLU thresholds (sae-lens ``jumprelu``).
        apply_b_dec_to_input (`bool`, *optional*, defaults to `True`):
            Subtract ``b_dec`` from the input before encoding (both formats do).
        metadata (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Free-form facts saved in ``cfg.json`` (model id, layer, training statistics).
        seed (`int`, *optional*, defaults to `0`):
            Initialises weights deterministically (decoder = encoderᵀ with unit-norm rows).
    """

    def __init__(self, d_in: int, num_latents: int, k: int | None = 32, *, threshold: torch.Tensor | None = None,
                 apply_b_dec_to_input: bool = True, metadata: dict[str, Any] | None = None, seed: int = 0):
        super().__init__()
        if k is not None and not 0 < k <= num_latents:
            raise InputError(f"k must be in [1, num_latents={num_latents}], got k={k}.")
        self.d_in, self.num_latents, self.k = int(d_in), int(num_latents), k
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.metadata = dict(metadata or {})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            w = torch.randn(num_latents, d_in) / d_in**0.5
        w = w / w.norm(dim=1, keepdim=True)
        self.encoder = nn.Linear(d_in, num_latents)
        self.encoder.weight.data.copy_(w)
        self.encoder.bias.data.zero_()
        self.W_dec = nn.Parameter(w.clone())
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("threshold", threshold.float() if threshold is not None else None)

    # -- encoding --------------------------------------------------------------------------
    def pre_acts(self, h: torch.Tensor) -> torch.Tensor:
        """ReLU(W_enc (h − b_dec) + b_enc), the dense pre-TopK activations (use in chunks)."""
        x = h - self.b_dec if self.apply_b_dec_to_input else h
        z = torch.relu(self.encoder(x))
        if self.threshold is not None:
            z = z * (z > self.threshold)
        return z

    def encode_topk(self, h: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ids and values of the top-k latents per row (values ≥ 0; zeros are inactive)."""
        k = k or self.k
        if k is None:
            raise InputError("encode_topk needs k for a ReLU/JumpReLU SAE; pass k= or use pre_acts().")
        if self.threshold is not None:  # per-latent thresholds can reorder latents: activate densely first
            values, ids = self.pre_acts(h).topk(k, dim=-1, sorted=False)
            return ids, values
        # ReLU is monotone, so the top k of ReLU(z) are the top k of z: activate only those k
        # values instead of the dense row (one pass less over [tokens, latents]).
        x = h - self.b_dec if self.apply_b_dec_to_input else h
        values, ids = self.encoder(x).topk(k, dim=-1, sorted=False)
        return ids, torch.relu(values)

    def decode(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Σ_j values_j · W_dec[ids_j] + b_dec, touching only the k decoder rows used."""
        return torch.einsum("nk,nkd->nd", values, self.W_dec[ids]) + self.b_dec

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        ids, values = self.encode_topk(h) if self.k else (None, None)
        if ids is None:
            return self.pre_acts(h) @ self.W_dec + self.b_dec
        return self.decode(ids, values)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-8)

    # -- files -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """``cfg.json`` in the sparsify layout (so sparsify and hf_ext both read it)."""
        cfg = {"d_in": self.d_in, "num_latents": self.num_latents, "k": self.k, "expansion_factor": self.num_latents // self.d_in,
               "normalize_decoder": True, "multi_topk": False, "skip_connection": False}
        if self.metadata:
            cfg["hf_ext"] = self.metadata
        return cfg

    def save_pretrained(self, folder: str | os.PathLike, format: Literal["sparsify", "sae_lens"] = "sparsify",
                        card: bool = True) -> Path:
        """Write ``cfg.json`` + weights (sparsify layout by default, or sae-lens) and a model card."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if format == "sparsify":
            tensors = {"encoder.weight": self.encoder.weight, "encoder.bias": self.encoder.bias, "W_dec": self.W_dec, "b_dec": self.b_dec}
            cfg, name = self.config(), SPARSIFY_WEIGHTS
        elif format == "sae_lens":
            tensors = {"W_enc": self.encoder.weight.T, "b_enc": self.encoder.bias, "W_dec": self.W_dec, "b_dec": self.b_dec}
            architecture = "jumprelu" if self.threshold is not None else "topk" if self.k else "standard"
            cfg = {"architecture": architecture, "d_in": self.d_in, "d_sae": self.num_latents, "k": self.k,
                   "apply_b_dec_to_input": self.apply_b_dec_to_input, "normalize_activations": "none",
                   "hook_name": self.metadata.get("hook_name"), "model_name": self.metadata.get("model"),
                   "dtype": "float32"}
            name = SAE_LENS_WEIGHTS
        else:
            raise InputError(f"format must be 'sparsify' or 'sae_lens', got {format!r}.")
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        from ...outputs import atomic_file

        with atomic_file(folder / name) as tmp:  # a kill leaves the previous weights whole, never half a file
            save_file({k: v.detach().contiguous().cpu().float() for k, v in tensors.items()}, str(tmp))
        with atomic_file(folder / CONFIG) as tmp:
            tmp.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        if card:
            self.model_card().save(str(folder / "README.md"))
        return folder

    def model_card(self, repo_id: str | None = None):
        from ...hub.cards import render_model_card

        meta = self.metadata
        card_data = {"library_name": "hf-ext", "license": meta.get("license", "apache-2.0"),
                     "tags": ["hf-ext", "sparse-autoencoder", "sae", "topk-sae"]}
        base = meta.get("model")
        if base:
            try:
                from ...hub.cards import hub_ids

                card_data["base_model"] = hub_ids(base)
            except InputError:
                pass
        return render_model_card("sae_card.md.j2", card_data, model_name=repo_id or "sae", sae=self, meta=meta, repo_id=repo_id)

    def _hub_card(self, repo_id: str, **model_card_kwargs: Any):
        return self.model_card(repo_id, **model_card_kwargs)

    def _hub_commit_message(self) -> str:
        return "hf_ext: sparse autoencoder"

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, subfolder: str | None = None, *, format: SAEFormat = "auto",
                        revision: str | None = None, endpoint: str | None = None) -> TopKSAE:
        """Load an SAE from a local folder or a Hub repo, in the sparsify or sae-lens layout.

        Args:
            path_or_repo: local folder or Hub repo id.
            subfolder: the hookpoint folder inside it (``layers.15``, ``blocks.15.hook_resid_post``).
            format: ``auto`` detects it from the weight file's name.
        """
        folder = _locate(path_or_repo, subfolder, revision, endpoint)
        if format == "auto":
            format = "sparsify" if (folder / SPARSIFY_WEIGHTS).is_file() else "sae_lens" if (folder / SAE_LENS_WEIGHTS).is_file() else None
            if format is None:
                subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / CONFIG).is_file()) if folder.is_dir() else []
                hint = f" It has SAE subfolders {subs}: pass subfolder= (a selection recipe derives it from featurizer.layer)." if subs else ""
                raise InputError(f"No {SPARSIFY_WEIGHTS} (sparsify) or {SAE_LENS_WEIGHTS} (sae-lens) in {folder}.{hint}")
        if not (folder / CONFIG).is_file():
            raise InputError(f"{folder} has no {CONFIG}; an SAE folder holds {CONFIG} and its weights.")
        cfg = read_json_object(folder / CONFIG, "re-download the SAE or re-save it with TopKSAE.save_pretrained")
        loader = {"sparsify": _from_sparsify, "sae_lens": _from_sae_lens}.get(format)
        if loader is None:
            raise InputError(f"format must be 'auto', 'sparsify' or 'sae_lens', got {format!r}.")
        sae = loader(cfg, folder)
        source = _hub_source(path_or_repo)  # published files name Hub ids, never local paths
        if source is not None:
            sae.metadata.setdefault("source", source + (f"/{subfolder}" if subfolder else ""))
        return sae.eval()


def _hub_source(path_or_repo: str | os.PathLike) -> str | None:
    """The Hub id an SAE was loaded from, or None for a local folder (hf_ext.models knows packaged ones)."""
    from ...models import hub_id_for

    return hub_id_for(path_or_repo)


def _locate(path_or_repo: str | os.PathLike, subfolder: str | None, revision: str | None, endpoint: str | None) -> Path:
    if subfolder is not None:
        from ...paths import check_relative_name

        check_relative_name(subfolder, field="SAE subfolder", folder=path_or_repo)
    path = Path(path_or_repo).expanduser()
    if not path.exists():
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(str(path_or_repo))
        except HFValidationError:
            raise InputError(f"SAE {str(path_or_repo)!r} is neither an existing folder nor a Hub repo id.") from None
        from ...hub import pull

        pattern = [f"{subfolder}/*"] if subfolder else None
        path = Path(pull(str(path_or_repo), repo_type="model", revision=revision, endpoint=endpoint, allow_patterns=pattern))
    folder = path / subfolder if subfolder else path
    if not folder.is_dir():
        raise InputError(f"SAE subfolder {subfolder!r} does not exist in {path}.")
    return folder


def _load(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return {k: v.float() for k, v in load_file(str(folder / name)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{folder / name} is not a readable safetensors file ({exc}); it is corrupt or truncated: "
                         "download or save the SAE again.") from None


def _need(tensors: dict, keys: tuple[str, ...], folder: Path, name: str) -> None:
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise InputError(f"{folder / name} lacks tensors {missing} (has {sorted(tensors)}); is it the right format?")


def _from_sparsify(cfg: dict, folder: Path) -> TopKSAE:
    t = _load(folder, SPARSIFY_WEIGHTS)
    _need(t, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), folder, SPARSIFY_WEIGHTS)
    if cfg.get("skip_connection") or "W_skip" in t or cfg.get("transcode"):
        raise InputError(f"{folder}: skip connections / transcoders are not SAEs over one residual stream; not supported.")
    latents, d_in = t["encoder.weight"].shape
    sae = TopKSAE(d_in, latents, cfg.get("k"), threshold=t.get("threshold"), metadata=cfg.get("hf_ext"))
    sae.load_state_dict({"encoder.weight": t["encoder.weight"], "encoder.bias": t["encoder.bias"], "W_dec": t["W_dec"],
                         "b_dec": t["b_dec"], **({"threshold": t["threshold"]} if "threshold" in t else {})})
    return sae


def _from_sae_lens(cfg: dict, folder: Path) -> TopKSAE:
    t = _load(folder, SAE_LENS_WEIGHTS)
    _need(t, ("W_enc", "b_enc", "W_dec", "b_dec"), folder, SAE_LENS_WEIGHTS)
    architecture = cfg.get("architecture", "standard")
    norm = cfg.get("normalize_activations") or "none"
    if norm != "none":
        raise InputError(f"{folder}: normalize_activations={norm!r} needs the training-time scale; only 'none' is supported.")
    if architecture not in ("standard", "topk", "jumprelu"):
        raise InputError(f"{folder}: sae-lens architecture {architecture!r} is not supported (standard, topk, jumprelu are).")
    k = (cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")) if architecture == "topk" else None
    if architecture == "topk" and not k:
        raise InputError(f"{folder}: a topk sae-lens SAE needs k in cfg.json ('k' or 'activation_fn_kwargs.k').")
    if architecture == "jumprelu" and "threshold" not in t:
        raise InputError(f"{folder}: a jumprelu sae-lens SAE needs a 'threshold' tensor.")
    d_in, latents = t["W_enc"].shape
    meta = {key: cfg[key] for key in ("model_name", "hook_name") if cfg.get(key)}
    sae = TopKSAE(d_in, latents, k, threshold=t.get("threshold"), apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True),
                  metadata=meta)
    state = {"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if "threshold" in t:
        state["threshold"] = t["threshold"]
    sae.load_state_dict(state)
    return sae


__all__ = ["TopKSAE"]
