"""A small TopK SAE trainer: collect a layer's activations from a dataset, fit, report.

sae-lens installs beside our pins but pulls transformer-lens, wandb and plotly, and sparsify
is not on PyPI, so this file keeps the recipe of Gao et al. (2024, "Scaling and evaluating
sparse autoencoders") that both libraries implement, in about a hundred lines:

- TopK activation (k latents per token), decoder rows kept at unit norm, ``b_dec``
  initialised at the mean activation;
- inputs scaled by one scalar so the mean squared norm is ``d_in`` (a learning rate that
  transfers across models); the scale is folded back into the weights when training ends,
  so the saved SAE reads raw activations;
- Adam, loss = normalised MSE + ``auxk_alpha`` · AuxK loss (the top ``d_in/2`` *dead* latents
  reconstruct the residual, which revives them);
- statistics: normalised MSE (fraction of variance unexplained) on held-out tokens, and the
  fraction of dead latents (never active on the held-out tokens).

It is meant for small models on CPU (the quickstart trains a 4,096-latent SAE on
all-MiniLM-L6-v2 in seconds). For 8B models use a public SAE (see recipes/sae_select_llama3.yaml).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

from ...errors import InputError
from .model import TopKSAE

logger = logging.getLogger(__name__)


@dataclass
class SAETrainingConfig:
    """Settings of :func:`train_sae`.

    Args:
        num_latents (`int`, *optional*, defaults to `4096`):
            Dictionary size (SAE width).
        k (`int`, *optional*, defaults to `32`):
            Active latents per token (TopK).
        max_examples (`int`, *optional*, defaults to `1000`):
            Examples of the dataset whose tokens are collected.
        max_tokens (`int`, *optional*, defaults to `200000`):
            Tokens kept for training at most (sampled evenly).
        epochs (`int`, *optional*, defaults to `2`):
            Passes over the collected tokens.
        batch_size (`int`, *optional*, defaults to `1024`):
            Tokens per optimiser step.
        lr (`float`, *optional*, defaults to `0.001`):
            Adam learning rate (on inputs scaled to mean squared norm d_in).
        auxk_alpha (`float`, *optional*, defaults to `0.03125`):
            Weight of the AuxK loss that revives dead latents.
        dead_after_tokens (`int`, *optional*, defaults to `50000`):
            A latent inactive for this many tokens counts as dead.
        eval_fraction (`float`, *optional*, defaults to `0.05`):
            Held-out share of tokens for the reported statistics.
        seed (`int`, *optional*, defaults to `0`):
            Seed for sampling, initialisation and shuffling.
    """

    num_latents: int = field(default=4096, metadata={"help": "Dictionary size (SAE width)."})
    k: int = field(default=32, metadata={"help": "Active latents per token (TopK)."})
    max_examples: int = field(default=1000, metadata={"help": "Examples of the dataset whose tokens are collected."})
    max_tokens: int = field(default=200_000, metadata={"help": "Tokens kept for training at most (sampled evenly)."})
    epochs: int = field(default=2, metadata={"help": "Passes over the collected tokens."})
    batch_size: int = field(default=1024, metadata={"help": "Tokens per optimiser step."})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (on inputs scaled to mean squared norm d_in)."})
    auxk_alpha: float = field(default=1 / 32, metadata={"help": "Weight of the AuxK loss that revives dead latents."})
    dead_after_tokens: int = field(default=50_000, metadata={"help": "A latent inactive for this many tokens counts as dead."})
    eval_fraction: float = field(default=0.05, metadata={"help": "Held-out share of tokens for the reported statistics."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, initialisation and shuffling."})

    def __post_init__(self) -> None:
        if self.num_latents < 1 or not 0 < self.k <= self.num_latents:
            raise InputError(f"Need 0 < k <= num_latents, got k={self.k}, num_latents={self.num_latents}.")
        if not 0 < self.eval_fraction < 1:
            raise InputError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}.")


def collect_activations(ds, featurizer, *, max_examples: int, max_tokens: int, seed: int = 0, batch_size: int = 256):
    """Hidden states [tokens, d] of `featurizer`'s layer over up to `max_examples` rows of `ds`
    (padding and BOS excluded; a seeded sample of rows, then of tokens).

    Args:
        ds (`datasets.Dataset`):
            The rows to read, with the featurizer's text columns.
        featurizer (`SAEFeaturizer`):
            Sets the model, the layer and the text formatting (its `sae` is not used).
        max_examples (`int`):
            Rows sampled from `ds` at most.
        max_tokens (`int`):
            Tokens kept at most (a seeded sample of the collected ones).
        seed (`int`, *optional*, defaults to `0`):
            Seed of both samples.
        batch_size (`int`, *optional*, defaults to `256`):
            Rows tokenised and run per step (the featurizer cuts them into its own micro-batches).
    """
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(ds), size=min(max_examples, len(ds)), replace=False))
    sample = ds.select(rows.tolist())
    chunks = []
    for start in range(0, len(sample), batch_size):
        batch = sample[start:start + batch_size]
        ids, _ = featurizer.load().token_ids(batch)
        chunks.extend(h.float().cpu() for _, h, _ in featurizer.hidden_states(ids))
    acts = torch.cat(chunks)
    if acts.shape[0] > max_tokens:
        acts = acts[torch.from_numpy(np.sort(rng.choice(acts.shape[0], size=max_tokens, replace=False)))]
    return acts


def train_sae(activations, config: SAETrainingConfig | None = None, metadata: dict | None = None) -> TopKSAE:
    """Fit a TopK SAE to `activations` [tokens, d_in]; statistics land in ``sae.metadata['training']``.

    Args:
        activations (`torch.Tensor`):
            ``[tokens, d_in]`` hidden states, at least 10 tokens (e.g. from :func:`collect_activations`).
        config (`SAETrainingConfig` or `None`, *optional*, defaults to `None`):
            The training settings; `None`: the defaults.
        metadata (`dict` or `None`, *optional*, defaults to `None`):
            Facts saved in the SAE's ``cfg.json`` (model id, layer, pool), beside the training statistics.
    """
    import torch
    from tqdm.auto import tqdm

    c = config or SAETrainingConfig()
    if activations.ndim != 2 or activations.shape[0] < 10:
        raise InputError(f"train_sae needs a [tokens, d_in] matrix with at least 10 tokens, got shape {tuple(activations.shape)}.")
    gen = torch.Generator().manual_seed(c.seed)
    x = activations.float()[torch.randperm(activations.shape[0], generator=gen)]
    n_eval = max(1, int(len(x) * c.eval_fraction))
    held, x = x[:n_eval], x[n_eval:]
    scale = float(x.pow(2).sum(1).mean().sqrt() / math.sqrt(x.shape[1]))  # mean ||x||² = d_in after scaling
    x, held = x / scale, held / scale

    d_in = x.shape[1]
    sae = TopKSAE(d_in, c.num_latents, c.k, seed=c.seed)
    sae.b_dec.data.copy_(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=c.lr)
    variance = (x - x.mean(0)).pow(2).sum(1).mean()
    since_fired = torch.zeros(c.num_latents, dtype=torch.long)
    k_aux = max(1, d_in // 2)
    steps = c.epochs * math.ceil(len(x) / c.batch_size)
    bar = tqdm(total=steps, desc="Training SAE", leave=False)
    for _ in range(c.epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), c.batch_size):
            batch = x[order[start:start + c.batch_size]]
            pre = sae.pre_acts(batch)
            values, ids = pre.topk(c.k, dim=-1, sorted=False)
            recon = sae.decode(ids, values)
            err = batch - recon
            loss = err.pow(2).sum(1).mean() / variance
            fired = torch.zeros(c.num_latents, dtype=torch.bool)
            fired[ids[values > 0]] = True
            since_fired += len(batch)
            since_fired[fired] = 0
            dead = since_fired > c.dead_after_tokens
            if c.auxk_alpha and int(dead.sum()) > 0:
                aux_values, aux_ids = torch.where(dead[None], pre, torch.zeros(())).topk(min(k_aux, int(dead.sum())), dim=-1, sorted=False)
                aux = (sae.decode(aux_ids, aux_values) - sae.b_dec - err.detach()).pow(2).sum(1).mean() / variance
                loss = loss + c.auxk_alpha * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sae.normalize_decoder()
            bar.update(1)
            bar.set_postfix(nmse=f"{loss.item():.3f}")
    bar.close()

    with torch.no_grad():
        ids, values = sae.encode_topk(held)
        nmse = float((held - sae.decode(ids, values)).pow(2).sum(1).mean() / (held - held.mean(0)).pow(2).sum(1).mean())
        active = torch.zeros(c.num_latents, dtype=torch.bool)
        active[ids[values > 0]] = True
        # Fold the input scale into the weights: the saved SAE reads raw activations, same values.
        sae.encoder.weight.data /= scale
        sae.b_dec.data *= scale
        sae.W_dec.data *= scale
    stats = {"nmse": round(nmse, 4), "dead_fraction": round(1 - float(active.float().mean()), 4),
             "train_tokens": len(x), "eval_tokens": n_eval, "steps": steps, "input_scale": scale, **asdict(c)}
    sae.metadata.update(metadata or {})
    sae.metadata["training"] = stats
    logger.info("Trained SAE: normalised MSE %.3f, dead latents %.1f%%", stats["nmse"], 100 * stats["dead_fraction"])
    return sae.eval()


__all__ = ["SAETrainingConfig", "collect_activations", "train_sae"]
