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
    """(start, length) of the value windows hashed for a tensor of `numel` values.

    Args:
        numel (`int`):
            Number of values of the tensor: up to `FULL_UP_TO` it is one window over all of them (none for an
            empty tensor), above it `WINDOWS` evenly spaced windows of `WINDOW` values.

    Returns:
        `list[tuple[int, int]]`: the windows, in increasing order of start.
    """
    if numel <= FULL_UP_TO:
        return [(0, numel)] if numel else []
    last = numel - WINDOW
    return [(round(i * last / (WINDOWS - 1)), WINDOW) for i in range(WINDOWS)]


_INT_VIEW = {1: (torch.uint8, np.uint8), 2: (torch.int16, np.int16), 4: (torch.int32, np.int32), 8: (torch.int64, np.int64)}


def window_index(windows: list[tuple[int, int]]) -> np.ndarray:
    """The flat positions covered by `windows`, in order (one gather reads them all).

    Args:
        windows (`list[tuple[int, int]]`):
            Non-empty (start, length) windows, all of the first window's length (as :func:`sample_windows` gives).

    Returns:
        `np.ndarray`: the ``int64`` positions, window after window.
    """
    starts = np.fromiter((s for s, _ in windows), dtype=np.int64, count=len(windows))
    return np.add.outer(starts, np.arange(windows[0][1], dtype=np.int64)).reshape(-1)


def gather(values: np.ndarray, windows: list[tuple[int, int]], dtype: torch.dtype) -> torch.Tensor:
    """The `windows` of a flat array of raw values (an integer view of `dtype`), as a `dtype` tensor.

    Gathers in numpy: torch's multi-threaded advanced indexing is thousands of times slower on
    busy cores.

    Args:
        values (`np.ndarray`):
            The flat integer view of the tensor's values (:func:`raw_values`, :func:`raw_view`).
        windows (`list[tuple[int, int]]`):
            (start, length) windows to read (:func:`sample_windows`).
        dtype (`torch.dtype`):
            The dtype the raw values hold; the result is viewed as it.

    Returns:
        `torch.Tensor`: the windows' values, concatenated (1-D), as `dtype`.
    """
    if len(windows) == 1:
        start, length = windows[0]
        picked = values[start:start + length].copy()  # a copy: the source may be a read-only map
    else:
        picked = values[window_index(windows)]
    return torch.from_numpy(picked).view(dtype)


def raw_values(tensor: torch.Tensor) -> np.ndarray:
    """A flat integer numpy view of a tensor's bytes (any dtype, bfloat16 included).

    Args:
        tensor (`torch.Tensor`):
            The tensor; it is detached, moved to the CPU and made contiguous first (a copy only when needed).

    Returns:
        `np.ndarray`: the values as integers of the same width (``uint8`` for 1-byte dtypes and bool, signed otherwise).
    """
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    int_dtype, _ = _INT_VIEW[flat.element_size()]
    return (flat.view(torch.uint8) if flat.dtype == torch.bool else flat).view(int_dtype).numpy()


def raw_view(buffer, dtype: torch.dtype) -> np.ndarray:
    """A flat integer numpy view of bytes holding `dtype` values (e.g. a memory-mapped tensor).

    Args:
        buffer (`bytes`, `memoryview` or another buffer):
            The tensor's raw bytes; not copied.
        dtype (`torch.dtype`):
            The dtype the bytes hold; it sets the integer width of the view.

    Returns:
        `np.ndarray`: a read-only view when `buffer` is read-only.
    """
    return np.frombuffer(buffer, dtype=_INT_VIEW[dtype.itemsize][1])


def fingerprint_tensors(keys: Iterable[str], shape: Callable[[str], Sequence[int]], dtype: Callable[[str], torch.dtype],
                        read: Reader, *, exact: bool = True) -> str:
    """``VERSION-<hex>`` over `keys` (sorted): names, shapes, dtypes (exact) and strided value samples.

    Args:
        keys (`Iterable[str]`):
            Names of the tensors to hash.
        shape (`Callable[[str], Sequence[int]]`):
            The shape of the tensor of a key.
        dtype (`Callable[[str], torch.dtype]`):
            The dtype of the tensor of a key.
        read (`Callable[[str, list[tuple[int, int]]], torch.Tensor]`):
            The values of a key's tensor in each (start, length) window, concatenated (1-D).
        exact (`bool`, *optional*, defaults to `True`):
            Hash the raw values and the dtypes; `False` hashes floating values rounded to bfloat16 and no dtype,
            so the same weights in another precision give the same id.

    Returns:
        `str`: ``VERSION-`` followed by 32 hex digits.
    """
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
    """:func:`fingerprint_tensors` of an in-memory state dict (or ``dict(model.named_parameters())``).

    Args:
        state (`Mapping[str, torch.Tensor]`):
            The tensors by name.
        exact (`bool`, *optional*, defaults to `True`):
            Hash raw values and dtypes; `False` makes the id independent of the precision (see the module doc).

    Returns:
        `str`: ``VERSION-`` followed by 32 hex digits.
    """
    def read(key: str, windows: list[tuple[int, int]]) -> torch.Tensor:
        return gather(raw_values(state[key]), windows, state[key].dtype)

    return fingerprint_tensors(state.keys(), lambda k: tuple(state[k].shape), lambda k: state[k].dtype, read, exact=exact)
