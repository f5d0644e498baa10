"""Stitch layers (SPECS §7): experts-into-hub (E2H) and hub-into-experts (H2E).

Per layer and expert i: a projection W_proj_i (no bias) and, from the hub state h_0, gate
logits for the hub and for every expert (d×(n+1) for equal widths). The gates read h_0
RMS-normalised (no weights), so their logits do not depend on the residual stream's scale.

- E2H: g = softmax over the n+1 models, per hidden dimension;
  h̃_0 = g_0·h_0 + Σ_i g_i·W_proj_i(h_i). Experts pass through.
- H2E: g_i = sigmoid(z_i − z_0); h̃_i = (1 − g_i)·h_i + g_i·W_proj_i(h_0). The hub passes
  through. Its logit z_0 is the reference every expert's logit is compared with — our reading
  of the paper's d×(n+1) gate for H2E layers (it keeps the count K·(2n+1)·d² and every
  parameter in use). For an expert of another width z_0 is truncated, or padded with the
  offset β, to that width.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InputError


def _check_name(name: str) -> None:
    if not name or "." in name or name == "hub":
        raise InputError(f"Expert name {name!r} is not allowed: use a non-empty name without '.' other than 'hub'.")


class StitchLayer(nn.Module):
    """One stitch layer: hub-into-experts (H2E, sigmoid gates) or experts-into-hub (E2H, a softmax over the hub and the experts).

    Args:
        kind (`str`):
            ``"e2h"`` (mix the experts' states into the hub's) or ``"h2e"`` (gate the hub's state into every expert's).
        hub_dim (`int`):
            Hidden size d of the hub (the seed).
        expert_dims (`dict[str, int]`):
            Expert name -> hidden size of that expert.
        dropout (`float`, *optional*, defaults to `0.0`):
            Dropout on the projected states (training only).
        init (`str`, *optional*, defaults to `"identity"`):
            ``"identity"``: identity projections and zero gate weights (the layer passes states through at step 0);
            ``"random"``: normal gate weights with std `init_std`.
        gate_offset (`float`, *optional*, defaults to `16.0`):
            β added to the hub's gate logit; the experts' share starts at ~e^(−β).
        init_std (`float`, *optional*, defaults to `0.02`):
            Std of the gate weights when ``init="random"``.
    """

    def __init__(self, kind: str, hub_dim: int, expert_dims: dict[str, int], *, dropout: float = 0.0,
                 init: str = "identity", gate_offset: float = 16.0, init_std: float = 0.02) -> None:
        super().__init__()
        if kind not in ("e2h", "h2e"):
            raise InputError(f"Stitch layer kind must be 'e2h' or 'h2e', got {kind!r}.")
        self.kind, self.hub_dim, self.gate_offset = kind, hub_dim, gate_offset
        self.gate_means: dict[str, torch.Tensor] = {}  # mean gate per model of the last forward (detached), for logging
        self.init_mode, self.init_std = init, init_std
        self.dropout = nn.Dropout(dropout)
        self.gate_hub = nn.Linear(hub_dim, hub_dim, bias=False)
        self.gate = nn.ModuleDict()
        self.proj = nn.ModuleDict()
        self._init_gate(self.gate_hub)
        for name, dim in expert_dims.items():
            self.add_expert(name, dim)

    # -- construction -------------------------------------------------------------------------
    def _init_gate(self, linear: nn.Linear) -> None:
        with torch.no_grad():
            if self.init_mode == "random":
                linear.weight.normal_(0.0, self.init_std)
            else:
                linear.weight.zero_()

    def add_expert(self, name: str, dim: int, *, closed: bool = False) -> None:
        """Add an expert's projection and gate rows; other parameters are untouched.

        ``closed=True`` (an expert added to trained stitch layers) copies the hub gate's weights
        into the new rows, so the new logits are exactly the hub's minus β: the expert starts
        with a share of ~e^(−β) however far training has moved the gates.
        """
        _check_name(name)
        if name in self.proj:
            raise InputError(f"Stitch layer already has an expert named {name!r}.")
        # E2H mixes in the hub's space, so its gate rows are hub-sized; H2E gates the expert's own dims.
        in_dim, out_dim = (dim, self.hub_dim) if self.kind == "e2h" else (self.hub_dim, dim)
        proj = nn.Linear(in_dim, out_dim, bias=False)
        nn.init.eye_(proj.weight)  # identity (or its rectangular cut) so a projected copy of a state is that state
        gate = nn.Linear(self.hub_dim, self.hub_dim if self.kind == "e2h" else dim, bias=False)
        self._init_gate(gate)
        if closed:
            with torch.no_grad():
                gate.weight.zero_()
                rows = min(gate.weight.shape[0], self.hub_dim)
                gate.weight[:rows] = self.gate_hub.weight[:rows]
        ref = next(self.gate_hub.parameters())
        self.proj[name] = proj.to(ref.device, ref.dtype)
        self.gate[name] = gate.to(ref.device, ref.dtype)

    def remove_expert(self, name: str) -> None:
        del self.proj[name]
        del self.gate[name]

    # -- forward ------------------------------------------------------------------------------
    def gates(self, h0: torch.Tensor) -> dict[str, torch.Tensor]:
        """The gate values for a hub state: {"hub": g_0 (E2H only), name: g_i}."""
        # The gates read the hub state's direction (RMS-normalised, no weights): the logits, and
        # how fast training moves them, do not depend on the residual stream's scale.
        h0 = h0.to(self.gate_hub.weight.dtype)
        h0 = h0 * torch.rsqrt(h0.pow(2).mean(-1, keepdim=True) + 1e-6)
        z0 = self.gate_hub(h0) + self.gate_offset
        if self.kind == "e2h":
            names = list(self.gate)
            logits = torch.stack([z0] + [self.gate[n](h0) for n in names], dim=-2)
            g = torch.softmax(logits, dim=-2)
            return {"hub": g[..., 0, :], **{n: g[..., i + 1, :] for i, n in enumerate(names)}}
        out = {}
        for name, gate in self.gate.items():
            z = gate(h0)
            ref = self._reference(z0, z.shape[-1])
            out[name] = torch.sigmoid(z - ref)
        return out

    def _reference(self, z0: torch.Tensor, dim: int) -> torch.Tensor:
        if dim == z0.shape[-1]:
            return z0
        if dim < z0.shape[-1]:
            return z0[..., :dim]
        pad = z0.new_full((*z0.shape[:-1], dim - z0.shape[-1]), self.gate_offset)
        return torch.cat([z0, pad], dim=-1)

    def forward(self, h0: torch.Tensor, experts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dtype = self.gate_hub.weight.dtype
        g = self.gates(h0)
        self.gate_means = {name: value.detach().float().mean() for name, value in g.items()}
        if self.kind == "e2h":
            mixed = g["hub"] * h0.to(dtype)
            for name, h in experts.items():
                mixed = mixed + g[name] * self.dropout(self.proj[name](h.to(dtype)))
            return mixed.to(h0.dtype), experts
        hub = h0.to(dtype)
        new = {}
        for name, h in experts.items():
            gi = g[name]
            new[name] = ((1 - gi) * h.to(dtype) + gi * self.dropout(self.proj[name](hub))).to(h.dtype)
        return h0, new

    def extra_repr(self) -> str:
        return f"kind={self.kind}, hub_dim={self.hub_dim}, experts={list(self.proj)}"
