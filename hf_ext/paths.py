"""Names that become paths: a name read from a config file or a recipe (an expert name, an SAE
hookpoint) is joined to a folder only if it stays inside it.

>>> safe_join("/models/ens", "math", field="expert name")
PosixPath('/models/ens/math')
>>> safe_join("/models/ens", "../../etc", field="expert name")
Traceback (most recent call last):
...
hf_ext.errors.InputError: expert name '../../etc' would reach outside '/models/ens'; use a plain name or a relative path inside the folder (no '..', no leading '/').
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import InputError

__all__ = ["check_plain_name", "check_relative_name", "safe_join"]


def check_plain_name(name: str, *, field: str, folder: str | os.PathLike = "the folder") -> str:
    """Return `name` if it can be one folder name inside `folder` (no ``/``, ``\\``, ``..``), else raise.

    Args:
        name (`str`):
            The name read from a config or recipe; it must be a non-empty string other than ``.``/``..``,
            without ``/``, ``\\`` or NUL.
        field (`str`):
            What the name is (e.g. ``"expert name"``), at the start of the error message.
        folder (`str` or `os.PathLike`, *optional*, defaults to `"the folder"`):
            The folder the name goes in, for the error message only.

    Returns:
        `str`: `name`, unchanged.

    Raises:
        InputError: the name is empty or not a plain folder name.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{field} must be a non-empty name, got {name!r}.")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise InputError(f"{field} {name!r} is not a plain folder name and could reach outside {str(folder)!r}; "
                         "use letters, digits, '-', '_' or '.' (no '/', no '..').")
    return name


def check_relative_name(name: str, *, field: str, folder: str | os.PathLike = "the folder") -> str:
    """Return `name` if it is a non-empty relative path with no ``..`` part (``/`` or ``\\``), else raise.

    Args:
        name (`str`):
            The name read from a config or recipe; absolute paths (POSIX or Windows, a drive included), ``..``
            parts and NUL are refused.
        field (`str`):
            What the name is (e.g. ``"SAE hookpoint"``), at the start of the error message.
        folder (`str` or `os.PathLike`, *optional*, defaults to `"the folder"`):
            The folder the name goes in, for the error message only.

    Raises:
        InputError: the name is empty, absolute or has a ``..`` part; `name` is returned unchanged otherwise.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{field} must be a non-empty name, got {name!r}.")
    parts = set(PurePosixPath(name).parts) | set(PureWindowsPath(name).parts)
    if (PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or name.startswith(("/", "\\"))
            or ".." in parts or "\0" in name):
        raise InputError(f"{field} {name!r} would reach outside {str(folder)!r}; use a plain name or a relative path "
                         "inside the folder (no '..', no leading '/').")
    return name


def safe_join(folder: str | os.PathLike, name: str, *, field: str) -> Path:
    """``Path(folder) / name`` after :func:`check_relative_name` (symlinks inside are the folder owner's choice).

    Args:
        folder (`str` or `os.PathLike`):
            The folder the name must stay inside.
        name (`str`):
            A relative path inside `folder` (see :func:`check_relative_name`).
        field (`str`):
            What the name is (e.g. ``"expert name"``), at the start of the error message.

    Returns:
        `Path`: the joined path (not resolved, not checked for existence).
    """
    check_relative_name(name, field=field, folder=folder)
    return Path(folder) / name
