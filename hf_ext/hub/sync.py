"""Push a folder to the Hub as one commit, and pull a repo (or one revision of it) back.

Both go through huggingface_hub's own client, so they honour HF_ENDPOINT, HF_TOKEN / the saved
login, HF_HUB_CACHE and HF_HUB_OFFLINE exactly like ``hf upload`` / ``hf download``. Client
errors come back as one :class:`~hf_ext.errors.InputError` (or :class:`~hf_ext.errors.HfExtError`
when the Hub itself failed) naming the repo and the endpoint. Tokens are never logged or put in
messages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx2
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from ..errors import HfExtError, InputError
from ..outputs import MARKER, check_publishable

__all__ = ["pull", "push_folder"]

_REPO_TYPES = ("dataset", "model")
_COMMIT_SHA = re.compile(r"[0-9a-fA-F]{40}")


def _endpoint(endpoint: str | None) -> str:
    # huggingface_hub reads HF_ENDPOINT once at import; read it again so a later setting counts too.
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _check_repo_type(repo_type: str) -> None:
    if repo_type not in _REPO_TYPES:
        raise InputError(f"repo_type must be one of {_REPO_TYPES}, got {repo_type!r}.")


def _where(repo_id: str, repo_type: str, endpoint: str, revision: str | None = None) -> str:
    at = f" at revision {revision!r}" if revision else ""
    return f"{repo_type} repo {repo_id!r}{at} on {endpoint}"


def _hub_error(err: Exception, where: str) -> HfExtError:
    """One clear hf_ext error for a huggingface_hub / HTTP failure (the original stays chained)."""
    if isinstance(err, RepositoryNotFoundError):  # includes gated repos
        return InputError(
            f"{where}: repository not found or not accessible. Check the repo id and repo_type, and that "
            "your token (HF_TOKEN or `hf auth login`) may read it."
        )
    if isinstance(err, RevisionNotFoundError):
        return InputError(f"{where}: revision not found. Use a branch name, a tag or a full commit sha.")
    if isinstance(err, (HFValidationError, ValueError)):
        return InputError(f"{where}: {err}")
    if isinstance(err, OfflineModeIsEnabled):
        return InputError(f"{where}: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE to reach the Hub.")
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "?"
        if status in (401, 403):
            return InputError(
                f"{where}: not authorised (HTTP {status}). Pass a token with the needed access or run `hf auth login`."
            )
        return HfExtError(f"{where}: the Hub answered HTTP {status}: {err.server_message or err}")
    return HfExtError(
        f"{where}: could not reach the endpoint ({type(err).__name__}: {err}). Check HF_ENDPOINT and the network."
    )


def _folder_operations(folder: Path) -> list[CommitOperationAdd]:
    # The same files `upload_folder` would send: everything but .git/ and .cache/huggingface/ (and
    # hf_ext's local output marker).
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}
    kept = filter_repo_objects(files, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS))
    return [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=files[rel]) for rel in kept]


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "dataset",
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
) -> CommitInfo:
    """Create the repo if needed and upload every file of ``folder`` in one commit.

    The commit goes through ``HfApi.create_commit`` rather than ``upload_folder``: with ``hf_xet``
    installed, ``upload_folder`` switches to a pipeline that may split a large folder into several
    commits ("part 2", ...), while a pushed artefact must appear (and be pinned) as one revision.
    Files unchanged since the branch head are skipped by the client; if nothing changed, no commit
    is made and the head commit is returned. Before anything is sent, every ``*.safetensors`` header
    and every ``*.parquet`` footer is opened (:func:`hf_ext.outputs.check_publishable`): a truncated
    or junk file is refused, by name.

    Args:
        folder (`str` or `os.PathLike`):
            Local folder to upload; ``.git/`` and ``.cache/huggingface/`` inside it (and hf_ext's output
            marker) are skipped.
        repo_id (`str`):
            ``namespace/name`` on the Hub.
        repo_type (`str`, *optional*, defaults to `"dataset"`):
            ``"dataset"`` or ``"model"``.
        endpoint (`str`, *optional*):
            Hub URL; ``None`` means ``HF_ENDPOINT`` or https://huggingface.co.
        token (`str`, *optional*):
            Access token with write access; ``None`` uses ``HF_TOKEN`` or the saved login.
        private (`bool`, *optional*, defaults to `False`):
            Create the repo private (ignored when the repo already exists).
        commit_message (`str`, *optional*):
            Commit summary; ``None`` means "Upload N files with hf_ext".
        revision (`str`, *optional*):
            Branch to commit to (created from ``main`` if missing; a commit sha is refused); ``None`` means
            ``main``.

    Returns:
        `CommitInfo`: huggingface_hub's commit info, a ``str`` equal to the commit URL, with ``.oid`` (the
        commit sha), ``.commit_url`` and ``.repo_url``.

    Raises:
        InputError: The folder is missing or empty, a safetensors or parquet file in it is truncated or
            corrupt, an argument is invalid, offline mode is on, or the Hub refused the repo (not found, not authorised, invalid README metadata).
        HfExtError: The endpoint could not be reached or failed.
    """
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"Cannot push {str(path)!r} to {repo_id!r}: it is not an existing folder.")
    operations = _folder_operations(path)
    if not operations:
        raise InputError(f"Cannot push {str(path)!r} to {repo_id!r}: the folder holds no files to upload.")
    try:
        check_publishable(path, [op.path_or_fileobj for op in operations])
    except InputError as err:
        raise InputError(f"Cannot push {str(path)!r} to {repo_id!r}: {err}") from None
    _check_repo_type(repo_type)
    if revision is not None and _COMMIT_SHA.fullmatch(revision):
        raise InputError(f"revision must be a branch name to push to, not a commit sha ({revision}).")
    endpoint = _endpoint(endpoint)
    where = _where(repo_id, repo_type, endpoint, revision)
    if constants.is_offline_mode():  # fail before hashing anything, with the fix in the message
        raise InputError(f"Cannot push to {where}: offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE.")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision not in (None, constants.DEFAULT_REVISION):
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {len(operations)} files with hf_ext",
            repo_type=repo_type,
            revision=revision,
        )
    except (HfHubHTTPError, HFValidationError, ValueError, httpx2.HTTPError, ConnectionError) as err:
        raise _hub_error(err, f"Cannot push {str(path)!r} to {where}") from err


def pull(
    repo_id: str,
    *,
    repo_type: str = "dataset",
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    allow_patterns: str | list[str] | None = None,
) -> Path:
    """Download a repo snapshot (all files, or those matching ``allow_patterns``).

    Online, files land in the Hugging Face cache (or ``local_dir``) and already cached files are
    not downloaded again. In offline mode (``HF_HUB_OFFLINE=1``) the cached snapshot of that
    revision is returned without any network call.

    Args:
        repo_id (`str`):
            ``namespace/name`` on the Hub.
        repo_type (`str`, *optional*, defaults to `"dataset"`):
            ``"dataset"`` or ``"model"``.
        revision (`str`, *optional*):
            Branch, tag or commit sha; ``None`` means ``main``.
        local_dir (`str` or `os.PathLike`, *optional*):
            Copy the files into this folder instead of returning the cache snapshot.
        endpoint (`str`, *optional*):
            Hub URL; ``None`` means ``HF_ENDPOINT`` or https://huggingface.co.
        token (`str`, *optional*):
            Access token for private or gated repos; ``None`` uses ``HF_TOKEN`` or the saved login.
        allow_patterns (`str` or `list[str]`, *optional*):
            Glob pattern(s) of the files to fetch; ``None`` fetches every file.

    Returns:
        `Path`: the folder holding the files (a cache snapshot, or ``local_dir``).

    Raises:
        InputError: The repo or revision does not exist or is not accessible, or offline mode is on
            and the snapshot is not in the local cache.
        HfExtError: The endpoint could not be reached and nothing is cached.
    """
    _check_repo_type(repo_type)
    endpoint = _endpoint(endpoint)
    where = _where(repo_id, repo_type, endpoint, revision)
    offline = constants.is_offline_mode()
    try:
        folder = snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            local_dir=local_dir,
            endpoint=endpoint,
            token=token,
            allow_patterns=allow_patterns,
            local_files_only=offline,  # explicit: offline means "the cache or a clear error"
        )
    except LocalEntryNotFoundError as err:  # includes an incomplete cached snapshot
        if offline:
            raise InputError(
                f"Cannot pull {where}: offline mode is on (HF_HUB_OFFLINE=1) and that snapshot is not in the "
                f"local cache ({constants.HF_HUB_CACHE}). Unset HF_HUB_OFFLINE, or pre-download it while online "
                f"with `hf download {repo_id} --repo-type {repo_type}` (or hf_ext.hub.pull)."
            ) from err
        raise _hub_error(err.__cause__ or err, f"Cannot pull {where} (and it is not cached)") from err
    except (HfHubHTTPError, HFValidationError, ValueError, httpx2.HTTPError, ConnectionError) as err:
        raise _hub_error(err, f"Cannot pull {where}") from err
    return Path(folder)
