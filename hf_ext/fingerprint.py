"""Fingerprints of model weights: one id that changes when any tensor changes (time-vector bases,
stitch experts and seeds), cheap enough for 7B models.

Every tensor contributes its name, shape and (in exact mode) dtype, and a strided sample of its
values: small tensors (at most ``FULL_UP_TO`` values) are hashed whole; larger ones as
``WINDOWS`` evenly spaced windows of ``WINDOW`` consecutive values, first and last value
included. A finetune moves (almost) every value, so any window catches it; the first-values-only
sample this replaces missed a base that differed everywhere past value 256 of each tensor.

- ``exact=True`` hashes the raw bytes and the dtype: the same weights in another dtype differ.
- ``exact=False`` hashes the values rounded to bfloat16 and no dtype: the same weights loaded
  in float32, bfloat16 (or, almost always, float16) give the same id.

>>> import torch
>>> a = {"w": torch.arange(200_000, dtype=torch.float32)}
>>> b = {"w": a["w"].clone()}; b["w"][150_000:] += 1
>>> state_fingerprint(a) != state_fingerprint(b)
True
>>> state_fingerprint(a, exact=False) == state_fingerprint({"w": a["w"].bfloat16()}, exact=False)
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

__all__ = ["FULL_UP_TO", "VERSION", "WINDOW", "WINDOWS", "fingerprint_tensors", "sample_windows", "state_fingerprint"]

VERSION = "fp2"  # prefix of every fingerprint, so stored ids of the older scheme are recognised
FULL_UP_TO = 1 << 16
WINDOWS = 1024
WINDOW = 16

# read(key, start, length) -> the 1-D tensor of values [start, start + length) of `key`
Reader = Callable[[str, int, int], torch.Tensor]


def sample_windows(numel: int) -> list[tuple[int, int]]:
    """(start, length) of the value windows hashed for a tensor of `numel` values."""
    if numel <= FULL_UP_TO:
        return [(0, numel)] if numel else []
    last = numel - WINDOW
    return [(round(i * last / (WINDOWS - 1)), WINDOW) for i in range(WINDOWS)]


def fingerprint_tensors(keys: Iterable[str], shape: Callable[[str], Sequence[int]], dtype: Callable[[str], torch.dtype],
                        read: Reader, *, exact: bool = True) -> str:
    """``VERSION-<hex>`` over `keys` (sorted): names, shapes, dtypes (exact) and strided value samples."""
    h = hashlib.sha256()
    for key in sorted(keys):
        dims = [int(d) for d in shape(key)]
        kind = dtype(key)
        h.update(f"{key}|{dims}|{kind if exact else ''}|".encode())
        for start, length in sample_windows(math.prod(dims)):
            values = read(key, start, length).reshape(-1)
            if not exact and values.is_floating_point():
                values = values.float().to(torch.bfloat16)
            values = values.detach().cpu().contiguous()
            h.update(values.view(torch.uint8).numpy().tobytes() if values.numel() else b"")
    return f"{VERSION}-{h.hexdigest()[:32]}"


def state_fingerprint(state: Mapping[str, torch.Tensor], *, exact: bool = True) -> str:
    """:func:`fingerprint_tensors` of an in-memory state dict (or ``dict(model.named_parameters())``)."""
    def read(key: str, start: int, length: int) -> torch.Tensor:
        return state[key].detach().reshape(-1)[start:start + length]

    return fingerprint_tensors(state.keys(), lambda k: tuple(state[k].shape), lambda k: state[k].dtype, read, exact=exact)
