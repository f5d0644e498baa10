"""A fixed-seed Rademacher random projection applied block by block.

The matrix R (input_dim x proj_dim, entries ±1/sqrt(proj_dim)) is never held whole: block k
(rows k*block_rows ... (k+1)*block_rows) is drawn from a generator seeded by (seed, k), so the
same (input_dim, proj_dim, seed, block_rows) always gives the same R whatever the batch, the
process or the order blocks are visited in. Train and target features must share all four
(the paper's pitfall: a different projector silently breaks matching), so they are part of
:attr:`RademacherProjector.fingerprint` and checked at matching time.

>>> import torch
>>> proj = RademacherProjector(input_dim=3000, proj_dim=512, seed=0, block_rows=1024)
>>> x = torch.randn(4, 3000)
>>> torch.allclose(proj(x), x @ proj.dense_matrix(), atol=1e-4)
True
"""

from __future__ import annotations

import math

import torch

from ...errors import InputError


class RademacherProjector:
    """Project rows of ``x`` (``[batch, input_dim]``) to ``[batch, proj_dim]`` with bounded memory.

    Args:
        input_dim (`int`):
            Length of the vectors to project (the number of LoRA parameters).
        proj_dim (`int`, *optional*, defaults to `8192`):
            Target dimension d (LESS: 8192).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the matrix; train and target features must use the same one.
        block_rows (`int`, *optional*, defaults to `1024`):
            Rows of R drawn at a time. Part of the matrix's identity (it fixes how the seeded generator is
            consumed), so keep the default to reuse features.
        cache_mb (`int`, *optional*, defaults to `2048`):
            Keep drawn blocks (scaled float32) up to this many MiB, so later batches skip the draw; the rest are
            redrawn each call. Memory stays below ``cache_mb`` MiB ``+ block_rows * proj_dim * 4`` bytes.
    """

    def __init__(self, input_dim: int, proj_dim: int = 8192, seed: int = 0, block_rows: int = 1024, cache_mb: int = 2048):
        if input_dim <= 0 or proj_dim <= 0 or block_rows <= 0:
            raise InputError(f"input_dim, proj_dim and block_rows must be positive, got {input_dim}, {proj_dim}, {block_rows}.")
        self.input_dim, self.proj_dim, self.seed, self.block_rows = int(input_dim), int(proj_dim), int(seed), int(block_rows)
        self.cache_mb = cache_mb
        self.scale = 1.0 / math.sqrt(self.proj_dim)
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.input_dim / self.block_rows)

    @property
    def fingerprint(self) -> str:
        return f"rademacher-in{self.input_dim}-d{self.proj_dim}-seed{self.seed}-block{self.block_rows}"

    def _signs(self, k: int) -> torch.Tensor:
        """Block k of R as int8 ±1, drawn from its own seeded generator."""
        rows = min(self.block_rows, self.input_dim - k * self.block_rows)
        # One generator per block, seeded from (seed, k): blocks are independent of visiting order.
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        return torch.randint(0, 2, (rows, self.proj_dim), generator=gen, dtype=torch.int8).mul_(2).sub_(1)

    def block(self, k: int) -> torch.Tensor:
        """Block k of R, scaled, as a float32 matrix (cached while the cache has room)."""
        if k in self._cache:
            return self._cache[k]
        block = self._signs(k).to(torch.float32).mul_(self.scale)
        if self._cached_bytes + block.numel() * 4 <= self.cache_mb * 2**20:
            self._cache[k] = block
            self._cached_bytes += block.numel() * 4
        return block

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise InputError(f"The projector expects [batch, {self.input_dim}] inputs, got {tuple(x.shape)}.")
        out = torch.zeros(x.shape[0], self.proj_dim, dtype=torch.float32, device=x.device)
        for k in range(self.num_blocks):
            lo = k * self.block_rows
            out.addmm_(x[:, lo : lo + self.block_rows].float(), self.block(k).to(x.device))
        return out

    def dense_matrix(self) -> torch.Tensor:
        """The whole R (input_dim x proj_dim, float32): for tests and the naive baseline only."""
        return torch.cat([self.block(k) for k in range(self.num_blocks)])
