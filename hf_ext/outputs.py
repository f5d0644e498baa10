"""Safe output folders: nothing a user owns is deleted or half-written.

Every writer of a model, adapter or dataset folder in hf_ext goes through :func:`output_folder`:
the files are written to a temporary sibling (``.NAME.tmp-PID-XXXX``) that is moved into
place only when the writer finished, so a crash or a kill leaves the previous folder intact, and a
finished folder holds exactly what the run wrote (no stale shards or ``*.index.json``). An existing
folder is replaced only when it is empty, or carries the marker file :data:`MARKER` that an earlier
hf_ext run wrote, or when the caller says ``overwrite=True`` (``overwrite_output_dir: true`` in a
recipe). The current directory, a folder that holds an input of the run, and a file are never
accepted. Temporary folders left by a killed run are removed by the next successful one.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> with output_folder(root / "out") as tmp:
...     _ = (tmp / "weights.txt").write_text("new")
>>> sorted(p.name for p in (root / "out").iterdir())
['.hf_ext_output.json', 'weights.txt']

The same module checks a folder before it is published (:func:`check_publishable`) and finds the
last complete Trainer checkpoint (:func:`last_complete_checkpoint`) for ``resume_from_checkpoint``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import struct
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "MARKER",
    "check_output_dir",
    "output_folder",
    "atomic_file",
    "check_safetensors",
    "check_parquet",
    "check_publishable",
    "last_complete_checkpoint",
    "local_inputs",
]

logger = logging.getLogger(__name__)

MARKER = ".hf_ext_output.json"
_TMP = ".tmp-"
_OLD = ".old-"
# Fields that name where a run writes, not what it reads (TrainingArguments' logging_dir defaults
# to a folder inside output_dir).
_OUTPUT_FIELDS = {"output_dir", "logging_dir"}


def local_inputs(config: Any) -> dict[str, Path]:
    """Every string (or list of strings) field of a config dataclass naming an existing local path.

    These are the run's inputs: the output folder may not hold any of them.

    Args:
        config (`Any`):
            The run's config; anything that is not a dataclass has no inputs. ``output_dir``, ``logging_dir``
            and fields with ``init=False`` are skipped.

    Returns:
        `dict[str, Path]`: field name (``name[i]`` for an item of a list field) -> the resolved path.
    """
    import dataclasses

    found: dict[str, Path] = {}
    if not dataclasses.is_dataclass(config):
        return found
    for f in dataclasses.fields(config):
        if f.name in _OUTPUT_FIELDS or not f.init:
            continue
        value = getattr(config, f.name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, v in enumerate(values):
            if isinstance(v, (str, os.PathLike)) and str(v) and os.path.exists(v):
                found[f.name if len(values) == 1 else f"{f.name}[{i}]"] = Path(v).resolve()
    return found


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: dict[str, str | os.PathLike] | None = None,
    field: str = "output_dir",
    overwrite_field: str = "overwrite_output_dir",
) -> Path:
    """Refuse an output folder that would destroy something; returns it resolved.

    Cheap (a few ``stat`` calls): jobs call it when their config is built, before any expensive work,
    and :func:`output_folder` calls it again before it moves anything.

    Args:
        output_dir (`str` or `os.PathLike`):
            Where the run will write its folder.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing non-empty folder that has no hf_ext marker (the current directory, a file or a
            folder holding an input are refused even then).
        inputs (`dict[str, str | os.PathLike]` or `None`, *optional*, defaults to `None`):
            Field name -> local input path of the run; the output folder may not be, or contain, any of them.
        field (`str`, *optional*, defaults to `"output_dir"`):
            Name of the setting, for messages.
        overwrite_field (`str`, *optional*, defaults to `"overwrite_output_dir"`):
            Name of the overwrite setting, for messages.

    Raises:
        InputError: naming `field`, the path and the fix.
    """
    if output_dir is None or not str(output_dir).strip():
        raise InputError(f"{field} is not set: name a new folder for the results, e.g. outputs/run1.")
    target = Path(output_dir).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _is_within(cwd, target):
        what = "the current directory" if target == cwd else "a parent of the current directory"
        raise InputError(f"{field} {str(output_dir)!r} is {what}; hf_ext replaces its output folder as a whole, so it "
                         f"would delete your files. Name a new subfolder instead, e.g. {field}: outputs/run1.")
    if target.exists() and not target.is_dir():
        raise InputError(f"{field} {str(output_dir)!r} is an existing file, not a folder. Name a new folder for the results "
                         f"(the file is left as it is).")
    for name, path in (inputs or {}).items():
        if _is_within(Path(path).resolve(), target):
            raise InputError(f"{field} {str(output_dir)!r} holds the input {name} ({str(path)!r}); replacing the output folder "
                             f"would delete it. Write the results to another folder.")
    if target.is_dir() and not overwrite and not (target / MARKER).is_file() and any(target.iterdir()):
        raise InputError(f"{field} {str(output_dir)!r} already holds files that hf_ext did not write (no {MARKER}). "
                         f"Choose a new or empty folder, or set {overwrite_field}: true to replace it.")
    return target


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(target: Path) -> Iterator[Path]:
    """Temporary siblings of `target` whose writer is gone (killed or crashed)."""
    for prefix in (_TMP, _OLD):
        for p in target.parent.glob(f".{target.name}{prefix}*"):
            pid = p.name[len(f".{target.name}{prefix}"):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                yield p


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _move_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    if _exchange(tmp, target):  # one step: at every instant `target` is either the old or the new folder
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = target.parent / f".{target.name}{_OLD}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# Small text files a job writes about itself (metrics, cards, configs): their mentions of the
# temporary folder are pointed at the final one before it moves into place.
_REPOINT_SUFFIXES = {".json", ".md", ".yaml", ".yml", ".txt"}
_REPOINT_MAX_BYTES = 16 * 2**20


def _repoint_paths(tmp: Path, target: Path) -> None:
    """Rewrite every mention of `tmp` in the folder's small text files as `target`: a nested job
    (a compare's selections and fine-tunes) records its inputs and outputs inside the parent's
    temporary folder, which no longer exists once the parent's folder is in place."""
    old, new = str(tmp), str(target)
    for path in tmp.rglob("*"):
        if path.suffix not in _REPOINT_SUFFIXES or not path.is_file() or path.is_symlink() or path.stat().st_size > _REPOINT_MAX_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if old in text:
            path.write_text(text.replace(old, new), encoding="utf-8")


def _write_marker(folder: Path, writer: str) -> None:
    from . import __version__

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    info = {"written_by": writer, "hf_ext_version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files}
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


@contextmanager
def output_folder(
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: dict[str, str | os.PathLike] | None = None,
    writer: str = "hf_ext",
    field: str = "output_dir",
    overwrite_field: str = "overwrite_output_dir",
) -> Iterator[Path]:
    """Yield an empty temporary sibling of `output_dir`; on success it replaces `output_dir`.

    The finished folder gets the marker file :data:`MARKER` (what wrote it, the file list), so the
    next run may replace it. Paths inside the temporary folder that the run wrote into its small text
    files (``.json``, ``.md``, ``.yaml``, ``.txt``: metrics and cards of nested jobs) are rewritten to
    the final folder first. On an exception the temporary folder is removed and `output_dir` is
    untouched; after a kill it stays behind and the next successful run into `output_dir` removes it.

    Args:
        output_dir (`str` or `os.PathLike`):
            The folder to (re)place.
        overwrite (`bool`, *optional*, defaults to `False`):
            See :func:`check_output_dir`.
        inputs (`dict[str, str | os.PathLike]` or `None`, *optional*, defaults to `None`):
            See :func:`check_output_dir`.
        writer (`str`, *optional*, defaults to `"hf_ext"`):
            What wrote the folder (job or class), for the marker.
        field (`str`, *optional*, defaults to `"output_dir"`):
            Setting names used in error messages.
        overwrite_field (`str`, *optional*, defaults to `"overwrite_output_dir"`):
            Setting names used in error messages.
    """
    target = check_output_dir(output_dir, overwrite=overwrite, inputs=inputs, field=field, overwrite_field=overwrite_field)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _repoint_paths(tmp, target)
        _write_marker(tmp, writer)
        check_output_dir(output_dir, overwrite=overwrite, inputs=inputs, field=field, overwrite_field=overwrite_field)
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in _leftovers(target):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` (``os.replace``) only on success.

    For writers of single files inside folders that others manage (a Trainer checkpoint, an SAE
    folder): a crash or a kill leaves the previous file whole, never a truncated one.

    Args:
        path (`str` or `os.PathLike`):
            The file to (re)place; its parent folder is created if missing. On an exception the temporary file
            is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for stale in _leftovers(path):
        stale.unlink(missing_ok=True)


# ---- checks before publishing ---------------------------------------------------------------


def check_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.safetensors`` header and check that the file holds every byte it announces.

    Returns the header; raises :class:`InputError` naming the file when it is truncated or not a
    safetensors file.

    Args:
        path (`str` or `os.PathLike`):
            The ``.safetensors`` file.

    Returns:
        `dict[str, Any]`: the parsed JSON header (tensor name -> dtype, shape, data_offsets; and
        ``__metadata__`` when present).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InputError(f"{str(path)!r} is not a safetensors file: it has {size} bytes, fewer than the 8-byte header length.")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise InputError(f"{str(path)!r} is truncated or not a safetensors file: its header claims {n} bytes, the file has {size}.")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{str(path)!r} is not a safetensors file: its header is not JSON.") from None
    if not isinstance(header, dict):
        raise InputError(f"{str(path)!r} is not a safetensors file: its header is not a mapping.")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise InputError(f"{str(path)!r} is not a valid safetensors file: tensor {name!r} has no data_offsets.") from None
        end = max(end, int(stop))
    if 8 + n + end != size:
        raise InputError(f"{str(path)!r} is truncated or corrupt: its header describes {8 + n + end} bytes, the file has {size}. "
                         "Write it again.")
    return header


def check_parquet(path: str | os.PathLike) -> int:
    """Open a parquet file's footer (schema and row groups); returns its row count.

    Raises :class:`InputError` naming the file when it is truncated or not parquet.

    Args:
        path (`str` or `os.PathLike`):
            The ``.parquet`` file.

    Returns:
        `int`: the number of rows its footer records.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PAR1":
        raise InputError(f"{str(path)!r} is not a parquet file (it does not start with PAR1). Write it again.")
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a bad footer
        raise InputError(f"{str(path)!r} is truncated or not a parquet file ({exc}). Write it again.") from None


def check_publishable(folder: str | os.PathLike, files: Iterable[str | os.PathLike] | None = None) -> None:
    """Open every ``*.safetensors`` header and every ``*.parquet`` footer in `folder` (or `files`).

    Args:
        folder (`str` or `os.PathLike`):
            The folder about to be published; every file below it is checked when `files` is ``None``.
        files (`Iterable[str | os.PathLike]`, *optional*):
            Only these files (absolute, or relative to `folder`); other suffixes are skipped.

    Raises:
        InputError: naming the first truncated or corrupt file (see :func:`check_safetensors`,
            :func:`check_parquet`).
    """
    folder = Path(folder)
    paths = [Path(p) for p in files] if files is not None else sorted(folder.rglob("*"))
    for p in paths:
        p = p if p.is_absolute() else folder / p
        if p.suffix == ".safetensors":
            check_safetensors(p)
        elif p.suffix == ".parquet":
            check_parquet(p)


# ---- trainer checkpoints -------------------------------------------------------------------------


def _checkpoint_complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))  # the Trainer writes it last
        weights = sorted(folder.glob("*.safetensors"))
        for w in weights:
            check_safetensors(w)
        return bool(weights) or any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` in `output_dir` that was written to the end, or None.

    A checkpoint is complete when its ``trainer_state.json`` (saved last by the Trainer) parses and
    every ``*.safetensors`` in it holds all its bytes. Newer, half-written checkpoints (a kill during
    a save) are skipped with a warning.

    Args:
        output_dir (`str` or `os.PathLike`):
            The Trainer's output folder holding ``checkpoint-N`` subfolders; a missing folder gives ``None``.

    Returns:
        `str` or `None`: the path of the newest complete checkpoint.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()]
    for p in sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True):
        if _checkpoint_complete(p):
            return str(p)
        logger.warning("Checkpoint %s is incomplete (a save was interrupted); resuming from an earlier one.", p)
    return None


class SafeResumeMixin:
    """A Trainer mixin: ``train(resume_from_checkpoint=True)`` skips half-written checkpoints.

    transformers resumes from the highest-numbered ``checkpoint-N``; after a kill during a save that
    one is half written and loading it fails. With this mixin ``True`` means the last *complete*
    checkpoint (see :func:`last_complete_checkpoint`), with a warning for each one skipped.
    """

    def train(self, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        if resume_from_checkpoint is True:
            found = last_complete_checkpoint(self.args.output_dir)
            if found is None:
                raise InputError(f"resume_from_checkpoint=True but {self.args.output_dir!r} holds no complete checkpoint-N "
                                 "folder. Start without resume_from_checkpoint, or pass the path of a checkpoint.")
            resume_from_checkpoint = found
        return super().train(resume_from_checkpoint, *args, **kwargs)
