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
    """Return `name` if it can be one folder name inside `folder` (no ``/``, ``\\``, ``..``), else raise."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{field} must be a non-empty name, got {name!r}.")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise InputError(f"{field} {name!r} is not a plain folder name and could reach outside {str(folder)!r}; "
                         "use letters, digits, '-', '_' or '.' (no '/', no '..').")
    return name


def check_relative_name(name: str, *, field: str, folder: str | os.PathLike = "the folder") -> str:
    """Return `name` if it is a non-empty relative path with no ``..`` part (``/`` or ``\\``), else raise."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{field} must be a non-empty name, got {name!r}.")
    parts = set(PurePosixPath(name).parts) | set(PureWindowsPath(name).parts)
    if (PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or name.startswith(("/", "\\"))
            or ".." in parts or "\0" in name):
        raise InputError(f"{field} {name!r} would reach outside {str(folder)!r}; use a plain name or a relative path "
                         "inside the folder (no '..', no leading '/').")
    return name


def safe_join(folder: str | os.PathLike, name: str, *, field: str) -> Path:
    """``Path(folder) / name`` after :func:`check_relative_name` (symlinks inside are the folder owner's choice)."""
    check_relative_name(name, field=field, folder=folder)
    return Path(folder) / name
