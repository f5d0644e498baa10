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

import numpy as np
import torch

__all__ = ["FULL_UP_TO", "VERSION", "WINDOW", "WINDOWS", "fingerprint_tensors", "gather", "raw_values", "raw_view", "sample_windows",
           "state_fingerprint", "window_index"]

VERSION = "fp2"  # prefix of every fingerprint, so stored ids of the older scheme are recognised
FULL_UP_TO = 1 << 16
WINDOWS = 1024
WINDOW = 16

# read(key, windows) -> the values of `key` in each (start, length) window, concatenated (1-D)
Reader = Callable[[str, list[tuple[int, int]]], torch.Tensor]


def sample_windows(numel: int) -> list[tuple[int, int]]:
    """(start, length) of the value windows hashed for a tensor of `numel` values."""
    if numel <= FULL_UP_TO:
        return [(0, numel)] if numel else []
    last = numel - WINDOW
    return [(round(i * last / (WINDOWS - 1)), WINDOW) for i in range(WINDOWS)]


_INT_VIEW = {1: (torch.uint8, np.uint8), 2: (torch.int16, np.int16), 4: (torch.int32, np.int32), 8: (torch.int64, np.int64)}


def window_index(windows: list[tuple[int, int]]) -> np.ndarray:
    """The flat positions covered by `windows`, in order (one gather reads them all)."""
    starts = np.fromiter((s for s, _ in windows), dtype=np.int64, count=len(windows))
    return np.add.outer(starts, np.arange(windows[0][1], dtype=np.int64)).reshape(-1)


def gather(values: np.ndarray, windows: list[tuple[int, int]], dtype: torch.dtype) -> torch.Tensor:
    """The `windows` of a flat array of raw values (an integer view of `dtype`), as a `dtype` tensor.

    Gathers in numpy: torch's multi-threaded advanced indexing is thousands of times slower on
    busy cores."""
    if len(windows) == 1:
        start, length = windows[0]
        picked = values[start:start + length].copy()  # a copy: the source may be a read-only map
    else:
        picked = values[window_index(windows)]
    return torch.from_numpy(picked).view(dtype)


def raw_values(tensor: torch.Tensor) -> np.ndarray:
    """A flat integer numpy view of a tensor's bytes (any dtype, bfloat16 included)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    int_dtype, _ = _INT_VIEW[flat.element_size()]
    return (flat.view(torch.uint8) if flat.dtype == torch.bool else flat).view(int_dtype).numpy()


def raw_view(buffer, dtype: torch.dtype) -> np.ndarray:
    """A flat integer numpy view of bytes holding `dtype` values (e.g. a memory-mapped tensor)."""
    return np.frombuffer(buffer, dtype=_INT_VIEW[dtype.itemsize][1])


def fingerprint_tensors(keys: Iterable[str], shape: Callable[[str], Sequence[int]], dtype: Callable[[str], torch.dtype],
                        read: Reader, *, exact: bool = True) -> str:
    """``VERSION-<hex>`` over `keys` (sorted): names, shapes, dtypes (exact) and strided value samples."""
    h = hashlib.sha256()
    for key in sorted(keys):
        dims = [int(d) for d in shape(key)]
        kind = dtype(key)
        h.update(f"{key}|{dims}|{kind if exact else ''}|".encode())
        windows = sample_windows(math.prod(dims))
        if not windows:
            continue
        values = read(key, windows).reshape(-1)
        if not exact and values.is_floating_point():
            values = values.float().to(torch.bfloat16)
        values = values.detach().cpu().contiguous()
        h.update(values.view(torch.uint8).numpy().tobytes())
    return f"{VERSION}-{h.hexdigest()[:32]}"


def state_fingerprint(state: Mapping[str, torch.Tensor], *, exact: bool = True) -> str:
    """:func:`fingerprint_tensors` of an in-memory state dict (or ``dict(model.named_parameters())``)."""
    def read(key: str, windows: list[tuple[int, int]]) -> torch.Tensor:
        return gather(raw_values(state[key]), windows, state[key].dtype)

    return fingerprint_tensors(state.keys(), lambda k: tuple(state[k].shape), lambda k: state[k].dtype, read, exact=exact)
