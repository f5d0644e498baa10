"""Tensor-by-tensor access to model weights, for merges and time vectors whose peak memory stays far below one model.

A :class:`WeightSource` is a model folder (one ``model.safetensors`` or shards listed in
``model.safetensors.index.json``), a Hub id (downloaded with huggingface_hub, or a packaged
local copy through :func:`hf_ext.models.resolve_model`), or an in-memory model / state dict.
File tensors are read with plain ``read`` calls at the offsets of the safetensors header
instead of a memory map, so a tensor's pages leave the process as soon as the tensor does,
and :class:`SafetensorsWriter` writes the header first (shapes are known before any merge
arithmetic) and then each tensor as it is computed. A streaming merge therefore holds a few
tensors at a time, never two or three models.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

__all__ = ["WeightSource", "SafetensorsWriter", "check_compatible", "check_finite", "fingerprint", "parse_size", "DTYPES",
           "CONFIG_FILES"]

# safetensors dtype codes (the format's own names) <-> torch dtypes.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip
_CODES = {v: k for k, v in DTYPES.items()}
# Files copied next to merged weights so the output loads with from_pretrained (config, tokenizer).
CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")  # fmt: skip


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InputError(f"{str(path)!r} is not a safetensors file (shorter than its 8-byte header length).")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{str(path)!r} has a corrupt safetensors header; re-save it with save_pretrained.") from None
    header.pop("__metadata__", None)
    return 8 + n, header


class WeightSource:
    """Lazy, read-only view of one model's tensors.

    Args:
        source (`str`, `os.PathLike`, `torch.nn.Module` or `Mapping[str, torch.Tensor]`):
            A folder with safetensors weights, a Hub model id (a packaged local copy, else downloaded), a
            ``torch.nn.Module`` (tied weights appear once) or a state dict.
        hub_id (`str`, *optional*):
            The Hub id cards should name for this model (defaults to the id it was loaded from, or the Hub id of a
            packaged copy; ``None`` for a local model without one).
        name (`str`, *optional*):
            A label for error messages (defaults to the hub id or the path).
        prefix (`str`, *optional*, defaults to `"model"`):
            File name stem of the weights in a folder: ``<prefix>.safetensors`` or the shards listed in
            ``<prefix>.safetensors.index.json``. Unused for in-memory sources.

    Example:
        >>> from hf_ext.testing import tiny_llama
        >>> src = WeightSource(tiny_llama())
        >>> src.shape("lm_head.weight")
        (512, 32)
    """

    def __init__(self, source: Any, *, hub_id: str | None = None, name: str | None = None, prefix: str = "model"):
        self.folder: Path | None = None
        self.prefix = prefix
        self._tensors: Mapping[str, torch.Tensor] | None = None
        self._files: dict[str, tuple[Path, int, dict[str, Any]]] = {}  # tensor -> (file, data start, entry)
        if isinstance(source, torch.nn.Module):
            self._tensors = _untied_state(source)
            self.config = source.config.to_dict() if hasattr(source, "config") else None
            name = name or hub_id or getattr(getattr(source, "config", None), "_name_or_path", None) or type(source).__name__
        elif isinstance(source, Mapping):
            self._tensors = dict(source)
            self.config = None
            name = name or hub_id or "state dict"
        elif isinstance(source, (str, os.PathLike)):
            self.folder, hub_id = _resolve_folder(str(source), hub_id)
            self._index_files()
            config = self.folder / "config.json"
            self.config = json.loads(config.read_text()) if config.is_file() else None
            name = name or hub_id or str(source)
        else:
            raise InputError(f"Cannot read weights from a {type(source).__name__}; pass a folder, a Hub id, a model or a state dict.")
        self.hub_id, self.name = hub_id, name

    def _index_files(self) -> None:
        assert self.folder is not None
        index_name, single = f"{self.prefix}.safetensors.index.json", f"{self.prefix}.safetensors"
        index = self.folder / index_name
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (self.folder / s).is_file()]
            if missing:
                raise InputError(
                    f"{str(self.folder)!r} is missing {len(missing)} of the {len(shards)} shards its {index_name} lists "
                    f"(first: {missing[0]!r}). Download the whole model again (hf download / hf_ext.hub.pull)."
                )
        elif (self.folder / single).is_file():
            shards = [single]
        else:
            found = sorted(p.name for p in self.folder.iterdir())[:8]
            raise InputError(
                f"{str(self.folder)!r} has no {single} or {index_name} (files: {found}). hf_ext merges safetensors only "
                "(never pickles); re-save the model with save_pretrained(..., safe_serialization=True)."
            )
        for shard in shards:
            start, header = _read_header(self.folder / shard)
            for key, entry in header.items():
                if entry["dtype"] not in DTYPES:
                    raise InputError(f"Tensor {key!r} in {shard} has dtype {entry['dtype']}, which hf_ext cannot merge.")
                self._files[key] = (self.folder / shard, start, entry)

    def keys(self) -> list[str]:
        return list(self._tensors) if self._tensors is not None else list(self._files)

    def __contains__(self, key: str) -> bool:
        return key in (self._tensors if self._tensors is not None else self._files)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[key].shape)
        return tuple(self._files[key][2]["shape"])

    def dtype(self, key: str) -> torch.dtype:
        if self._tensors is not None:
            return self._tensors[key].dtype
        return DTYPES[self._files[key][2]["dtype"]]

    def nbytes(self) -> int:
        return sum(math.prod(self.shape(k)) * self.dtype(k).itemsize for k in self.keys())

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key`` (a fresh copy read from disk for file sources)."""
        if self._tensors is not None:
            return self._tensors[key]
        path, start, entry = self._files[key]
        begin, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        out = torch.empty(entry["shape"], dtype=dtype)
        if end == begin:
            return out
        with open(path, "rb") as f:  # read straight into the tensor's memory (no map, no extra copy)
            f.seek(start + begin)
            if f.readinto(memoryview(out.reshape(-1).view(torch.uint8).numpy())) != end - begin:
                raise InputError(f"{str(path)!r} is truncated: tensor {key!r} runs past the end of the file.")
        return out

    def head_bytes(self, key: str, n_values: int) -> bytes:
        """Raw bytes of the first `n_values` values of ``key`` (reads only those from a file)."""
        if self._tensors is not None:
            flat = self._tensors[key].detach().cpu().contiguous().reshape(-1)[:n_values]
            return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        path, start, entry = self._files[key]
        begin, end = entry["data_offsets"]
        n = min(end - begin, n_values * DTYPES[entry["dtype"]].itemsize)
        with open(path, "rb") as f:
            f.seek(start + begin)
            return f.read(n)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for key in self.keys():
            yield key, self.get(key)

    def __repr__(self) -> str:
        return f"WeightSource({self.name!r}, {len(self.keys())} tensors)"


def _untied_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Tied weights (lm_head = embed_tokens) appear once, under the first name, as save_pretrained writes them.
    seen: set[tuple[int, tuple[int, ...]]] = set()
    state = {}
    for key, value in model.state_dict().items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if value.numel() and ident in seen:
            continue
        seen.add(ident)
        state[key] = value.detach()
    return state


def fingerprint(source: WeightSource, *, exact: bool = True) -> str:
    """A stable id of a model's weights (:func:`hf_ext.fingerprint.fingerprint_tensors`): every
    tensor's name, shape, dtype and a strided sample of its values, so a tensor changed anywhere
    changes it. File sources read only the sampled bytes. Equal for a model in memory and the
    same model saved with save_pretrained.

    Args:
        source (`WeightSource`):
            The model's tensors.
        exact (`bool`, *optional*, defaults to `True`):
            Hash raw values and dtypes; `False` hashes the values rounded to bfloat16 and no dtype, so the same
            weights in another precision give the same id.

    Returns:
        `str`: ``VERSION-`` (of :mod:`hf_ext.fingerprint`) followed by 32 hex digits.
    """
    import numpy as np

    from .fingerprint import fingerprint_tensors, gather, raw_values, raw_view

    maps: dict[Path, Any] = {}

    def read(key: str, windows: list[tuple[int, int]]) -> torch.Tensor:
        if source._tensors is not None:
            return gather(raw_values(source._tensors[key]), windows, source._tensors[key].dtype)
        path, data_start, entry = source._files[key]
        dtype = DTYPES[entry["dtype"]]
        if path not in maps:  # a read-only map: only the pages of the sampled windows are read
            maps[path] = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        begin, end = entry["data_offsets"]
        region = maps[path][data_start + begin:data_start + end]
        if region.size != end - begin:
            raise InputError(f"{str(path)!r} is truncated: tensor {key!r} runs past the end of the file.")
        return gather(raw_view(region, dtype), windows, dtype)

    try:
        return fingerprint_tensors(source.keys(), source.shape, source.dtype, read, exact=exact)
    finally:
        maps.clear()  # drop the maps (numpy unmaps when the last view goes)


def _resolve_folder(source: str, hub_id: str | None) -> tuple[Path, str | None]:
    path = Path(source).expanduser()
    if path.is_dir():
        from .models import hub_id_for

        return path, hub_id or hub_id_for(path)
    if path.exists():
        raise InputError(f"{source!r} is a file; pass the model folder that holds config.json and the safetensors weights.")
    from .models import resolve_model

    resolved = resolve_model(source)
    if resolved != source and Path(resolved).is_dir():
        return Path(resolved), hub_id or source
    from .hub import pull

    folder = pull(source, repo_type="model", allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "README.md"])
    return folder, hub_id or source


def check_compatible(sources: Sequence[WeightSource], reference: WeightSource | None = None) -> None:
    """Raise `InputError` naming the first tensor that is missing or has another shape in any source.

    Args:
        sources (`Sequence[WeightSource]`):
            The models to merge; each must hold exactly the reference's tensor names, with the same shapes.
        reference (`WeightSource`, *optional*):
            The model the others are compared with (e.g. the merge's base); ``None`` means ``sources[0]``.
    """
    reference = reference or sources[0]
    ref_keys = reference.keys()
    ref_set = set(ref_keys)
    for src in sources:
        if src is reference:
            continue
        for key in ref_keys:
            if key not in src:
                raise InputError(
                    f"Cannot merge {reference.name!r} with {src.name!r}: tensor {key!r} is missing from {src.name!r}. "
                    "Merges need models of the same architecture and size."
                )
            if src.shape(key) != reference.shape(key):
                raise InputError(
                    f"Cannot merge {reference.name!r} with {src.name!r}: tensor {key!r} has shape {list(src.shape(key))} "
                    f"in {src.name!r} but {list(reference.shape(key))} in {reference.name!r}. "
                    "Merges need models of the same architecture and size."
                )
        extra = [k for k in src.keys() if k not in ref_set]
        if extra:
            raise InputError(
                f"Cannot merge {reference.name!r} with {src.name!r}: tensor {extra[0]!r} exists only in {src.name!r}. "
                "Merges need models of the same architecture and size."
            )


def check_finite(tensor: torch.Tensor, key: str, source_name: str) -> None:
    """Raise `InputError` when a floating tensor holds NaN or inf values (one sum pass when it does not).

    Args:
        tensor (`torch.Tensor`):
            The tensor to check; integer, bool and empty tensors pass unchecked.
        key (`str`):
            The tensor's name, for the error message.
        source_name (`str`):
            The model it came from (``WeightSource.name``), for the error message.
    """
    if not tensor.is_floating_point() or not tensor.numel():
        return
    # One sum pass: NaN/inf propagate into it (torch.isfinite costs several passes and was half of a
    # streaming merge's time). A finite-valued tensor whose sum overflows falls through to the exact check.
    acc = torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.dtype
    if math.isfinite(float(tensor.sum(dtype=acc))):
        return
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise InputError(
            f"Tensor {key!r} of {source_name!r} holds {bad} NaN/inf values; a merge would spread them. "
            "Fix or retrain that model (check its training loss for divergence)."
        )


def parse_size(size: int | str) -> int:
    """Bytes from ``5GB`` / ``500MB`` / ``1GiB`` / an int (save_pretrained's ``max_shard_size`` style).

    Args:
        size (`int` or `str`):
            A number of bytes, or a number (decimals allowed) with a unit ``B``, ``KB``..``TB`` (powers of 1000)
            or ``KiB``..``TiB`` (powers of 1024), case-insensitive.

    Returns:
        `int`: the number of bytes.

    >>> parse_size("5GB"), parse_size("1GiB"), parse_size(123)
    (5000000000, 1073741824, 123)
    """
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?i?B)\s*", str(size), flags=re.I)
    if not match:
        raise InputError(f"max_shard_size must be bytes or like '5GB'/'500MB', got {size!r}.")
    number, unit = float(match.group(1)), match.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(number * base ** "BKMGT".index(unit[0]))


def _plan_shards(entries: Sequence[tuple[str, tuple[int, ...], torch.dtype]], max_shard_bytes: int) -> list[list[int]]:
    shards: list[list[int]] = [[]]
    size = 0
    for i, (_, shape, dtype) in enumerate(entries):
        n = math.prod(shape) * dtype.itemsize
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(i)
        size += n
    return shards


class SafetensorsWriter:
    """Write tensors to safetensors shards one at a time, in a declared order.

    The layout (names, shapes, dtypes) is declared up front so each shard's header can be
    written first; then :meth:`write` appends each tensor's bytes as it is computed. The result
    is byte-compatible with ``save_pretrained``: one ``model.safetensors`` or shards
    ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``.

    Args:
        folder (`str` or `os.PathLike`):
            Where the shards go; created if missing.
        layout (`Sequence[tuple[str, Sequence[int], torch.dtype]]`):
            ``(name, shape, dtype)`` of every tensor, in the order :meth:`write` will receive them.
        max_shard_bytes (`int`, *optional*, defaults to `5 * 2**30`):
            Largest shard size; a tensor larger than it gets a shard of its own.
        prefix (`str`, *optional*, defaults to `"model"`):
            File name stem of the shards and of the index.

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import load_file
        >>> folder = tempfile.mkdtemp()
        >>> with SafetensorsWriter(folder, [("a", (2,), torch.float32)]) as w:
        ...     w.write("a", torch.tensor([1.0, 2.0]))
        >>> load_file(f"{folder}/model.safetensors")["a"].tolist()
        [1.0, 2.0]
    """

    def __init__(self, folder: str | os.PathLike, layout: Sequence[tuple[str, Sequence[int], torch.dtype]],
                 *, max_shard_bytes: int = 5 * 2**30, prefix: str = "model"):
        self.folder = Path(folder)
        self.index_name = f"{prefix}.safetensors.index.json"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.layout = [(k, tuple(int(d) for d in s), dt) for k, s, dt in layout]
        for key, _, dtype in self.layout:
            if dtype not in _CODES:
                raise InputError(f"Cannot write tensor {key!r} with dtype {dtype}.")
        plan = _plan_shards(self.layout, max_shard_bytes)
        n = len(plan)
        self.shard_names = [f"{prefix}.safetensors"] if n == 1 else [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._shard_of = {self.layout[i][0]: s for s, idx in enumerate(plan) for i in idx}
        self._plan = plan
        self._order = [k for k, _, _ in self.layout]
        self._next = 0
        self._file = None
        self._open_shard = -1

    def _start_shard(self, s: int) -> None:
        if self._file is not None:
            self._file.close()
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for i in self._plan[s]:
            key, shape, dtype = self.layout[i]
            n = math.prod(shape) * dtype.itemsize
            header[key] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
        self._file = open(self.folder / self.shard_names[s], "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._open_shard = s

    def write(self, key: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._order) or key != self._order[self._next]:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing (all written)"
            raise RuntimeError(f"SafetensorsWriter expected {expected!r} next, got {key!r}.")
        _, shape, dtype = self.layout[self._next]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise RuntimeError(f"Tensor {key!r} is {tuple(tensor.shape)} {tensor.dtype}; declared {shape} {dtype}.")
        s = self._shard_of[key]
        if s != self._open_shard:
            self._start_shard(s)
        data = tensor.detach().cpu().contiguous()
        if data.numel():
            self._file.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
        self._next += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._next != len(self._order):
            raise RuntimeError(f"SafetensorsWriter closed after {self._next} of {len(self._order)} tensors.")
        if len(self.shard_names) > 1:
            total = sum(math.prod(s) * d.itemsize for _, s, d in self.layout)
            index = {"metadata": {"total_size": total},
                     "weight_map": {k: self.shard_names[self._shard_of[k]] for k in self._order}}  # fmt: skip
            (self.folder / self.index_name).write_text(json.dumps(index, indent=2) + "\n")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        elif self._file is not None:
            self._file.close()
