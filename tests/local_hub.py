"""A small Hub-compatible HTTP server for tests. Tests only: not part of the installed package.

It speaks the subset of the Hugging Face Hub HTTP API that the real ``huggingface_hub`` 2.4 client
uses for create_repo, create_commit / upload_folder, list_repo_files / list_repo_tree,
repo_info / model_info / dataset_info, get_paths_info, hf_hub_download and snapshot_download,
for model and dataset repos (repo ids must be ``namespace/name``):

    POST /api/repos/create                                 create (409 if it exists; the client's exist_ok)
    POST /api/validate-yaml                                README front matter check (the client calls it)
    GET  /api/{models|datasets}/{id}[/revision/{rev}]      repo info: sha, siblings, dates
    POST /api/{models|datasets}/{id}/branch/{branch}       create_branch (from main or "startingPoint")
    POST /api/{models|datasets}/{id}/preupload/{rev}       answers uploadMode "regular" for every file
    POST /api/{models|datasets}/{id}/commit/{branch}       NDJSON: header, file (base64), deletedFile/Folder
    GET  /api/{models|datasets}/{id}/tree/{rev}[/{path}]   ?recursive=; a single page
    POST /api/{models|datasets}/{id}/paths-info/{rev}      form field "paths"
    HEAD|GET /[datasets/]{id}/resolve/{rev}/{path}         X-Repo-Commit, ETag (git blob sha1), Content-Length

Every commit gets a new 40-hex sha and is stored as a full snapshot under ``root``, so branches,
old commit shas and the ``main`` branch all resolve. No Xet and no LFS: preupload never says "lfs"
and downloads never carry X-Xet-Hash, so the client takes the plain HTTP path both ways.
Errors carry the ``X-Error-Code`` header the client maps to its exceptions (RepoNotFound,
RevisionNotFound, EntryNotFound). Any bearer token is accepted; visibility is stored, not enforced.
Rejected with a JSON ``{"error": ...}``: anything else (501, e.g. spaces, pull requests,
``create_pr=1``, lfsFile lines), malformed commits (400), parent-commit mismatches (412).

The ``local_hub`` pytest fixture starts a fresh server (fresh storage dir) per test on a free port
of 127.0.0.1. HF_HUB_OFFLINE=1 stays set for the whole test session (conftest.py); the fixture
turns it off only for the test that asks for the local hub, and only for that test, by patching
``huggingface_hub.constants.HF_HUB_OFFLINE`` (what the client checks on every request) and, when
``datasets`` is installed, ``datasets.config``; it also installs an HTTP client whose request hook
refuses any host but 127.0.0.1, so such a test can never reach the real Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

_REPO = r"/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)"
_RESOLVE = r"/(?:(?P<kind>datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"
_ROUTES = [  # (method, path regex, handler method)
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", _REPO + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ("POST", _REPO + r"/branch/(?P<rev>[^/]+)", "create_branch"),
    ("POST", _REPO + r"/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", _REPO + r"/commit/(?P<rev>[^/]+)", "commit"),
    ("GET", _REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
    ("POST", _REPO + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("HEAD", _RESOLVE, "resolve"),
    ("GET", _RESOLVE, "resolve"),
]
_GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An HTTP error answer: status, message and the X-Error-Code the client understands."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.headers, self.extra = status, code, headers or {}, extra


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class HubStore:
    """Repos on disk: ``root/{kind}/{ns}/{name}/meta.json`` plus ``snapshots/{sha}/`` per commit."""

    def __init__(self, root: Path):
        self.root, self.lock = Path(root), threading.Lock()

    def repo_dir(self, kind: str, repo: str) -> Path:
        path = self.root / kind / repo
        if not (path / "meta.json").is_file():
            raise HubError(404, f"Repository {repo} not found", "RepoNotFound")
        return path

    def meta(self, kind: str, repo: str) -> dict:
        return json.loads((self.repo_dir(kind, repo) / "meta.json").read_text())

    def resolve(self, kind: str, repo: str, rev: str) -> str:
        """A branch name or a full commit sha -> the commit sha."""
        meta, rev = self.meta(kind, repo), unquote(rev)
        if rev in meta["branches"]:
            return meta["branches"][rev]
        if rev in meta["commits"]:
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def files(self, kind: str, repo: str, sha: str) -> dict[str, Path]:
        snap = self.repo_dir(kind, repo) / "snapshots" / sha
        return {p.relative_to(snap).as_posix(): p for p in sorted(snap.rglob("*")) if p.is_file()}

    def create(self, kind: str, repo: str, private: bool) -> bool:
        with self.lock:
            path = self.root / kind / repo
            if (path / "meta.json").is_file():
                return False
            (path / "snapshots").mkdir(parents=True)
            meta = {"private": private, "createdAt": _now(), "branches": {}, "commits": {}}
            (path / "meta.json").write_text(json.dumps(meta))
        # The Hub starts every repo with an "initial commit" holding a .gitattributes file.
        self.commit(kind, repo, "main", "initial commit", [("file", ".gitattributes", _GITATTRIBUTES)])
        return True

    def commit(self, kind: str, repo: str, branch: str, summary: str, ops: list, parent: str | None = None) -> str:
        """Apply ``ops`` ((op, path, bytes|None)) on top of the branch head as one new commit."""
        with self.lock:
            path, meta = self.repo_dir(kind, repo), self.meta(kind, repo)
            if meta["branches"] and branch not in meta["branches"]:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = meta["branches"].get(branch)
            if parent is not None and head is not None and not head.startswith(parent):
                raise HubError(412, f"parentCommit {parent} is not the head of {branch} ({head})")
            sha = hashlib.sha1(f"{repo}|{head}|{summary}|{time.time_ns()}".encode()).hexdigest()
            snap = path / "snapshots" / sha
            if head is None:
                snap.mkdir()
            else:
                shutil.copytree(path / "snapshots" / head, snap)
            for op, rel, data in ops:
                target = snap / rel
                if op == "file":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                elif op == "deletedFile" and target.is_file():
                    target.unlink()
                elif op == "deletedFolder" and target.is_dir():
                    shutil.rmtree(target)
                else:
                    shutil.rmtree(snap)
                    raise HubError(404, f"A file with this name doesn't exist: {rel}", "EntryNotFound")
            meta["branches"][branch] = sha
            meta["commits"][sha] = {"parent": head, "title": summary, "date": _now()}
            (path / "meta.json").write_text(json.dumps(meta))
            return sha


class HubHandler(BaseHTTPRequestHandler):
    """Routes a request to an ``h_*`` method; every answer is JSON or file bytes with Content-Length."""

    store: HubStore  # set on a per-server subclass

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def _dispatch(self) -> None:
        method, url = self.command, urlsplit(self.path)
        self.query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""  # always drain the body
        try:
            if self.headers.get("Transfer-Encoding"):
                raise HubError(411, "local test hub needs a Content-Length")
            for verb, pattern, name in _ROUTES:
                match = re.fullmatch(pattern, url.path)
                if verb == method and match:
                    return getattr(self, "h_" + name)(**{k: v for k, v in match.groupdict().items() if v})
            raise HubError(501, f"local test hub does not implement {method} {url.path}")
        except Exception as exc:  # a bug in this server still answers, as a 500 with the reason
            err = exc if isinstance(exc, HubError) else HubError(500, f"local test hub failed: {exc!r}")
            headers = {"X-Error-Message": str(err).encode("ascii", "replace").decode(), **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, {"error": str(err), **err.extra}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"body is not JSON: {err}") from err

    def _url(self, kind: str, repo: str) -> str:
        return f"http://{self.headers['Host']}/" + ("datasets/" if kind == "datasets" else "") + repo

    def h_create_repo(self) -> None:
        payload = self._json()
        kind = {"dataset": "datasets", "model": "models", None: "models"}.get(payload.get("type"))
        if kind is None:
            raise HubError(501, f"local test hub does not implement repo type {payload.get('type')!r}")
        if not payload.get("organization") or not payload.get("name"):
            raise HubError(400, "local test hub needs a namespaced repo id (namespace/name)")
        repo = f"{payload['organization']}/{payload['name']}"
        url = self._url(kind, repo)
        private = payload.get("visibility", "public") != "public" or bool(payload.get("private"))
        if not self.store.create(kind, repo, private):
            raise HubError(409, f"You already created this {kind[:-1]} repo: {repo}", url=url)  # the client reads url
        self._send(200, {"url": url, "name": repo, "id": repo})

    def h_validate_yaml(self) -> None:
        import yaml  # a dependency of huggingface_hub itself

        content = self._json().get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
            if not isinstance(data, (dict, type(None))):
                raise ValueError("metadata must be a YAML mapping")
        except (yaml.YAMLError, ValueError) as err:
            return self._send(400, {"errors": [{"message": f"Invalid YAML front matter: {err}"}]})
        self._send(200, {"errors": [], "warnings": []})

    def h_repo_info(self, kind: str, repo: str, rev: str = "main") -> None:
        meta, sha = self.store.meta(kind, repo), self.store.resolve(kind, repo, rev)
        files = self.store.files(kind, repo, sha)
        info = {"_id": repo, "id": repo, "author": repo.split("/")[0], "sha": sha, "private": meta["private"],
                "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "createdAt": meta["createdAt"], "lastModified": meta["commits"][sha]["date"],
                "siblings": [{"rfilename": p} for p in files]}  # fmt: skip
        self._send(200, info)

    def h_create_branch(self, kind: str, repo: str, rev: str) -> None:
        branch, meta = unquote(rev), self.store.meta(kind, repo)
        if branch in meta["branches"]:
            raise HubError(409, f"Branch {branch} already exists")
        start = self.store.resolve(kind, repo, self._json().get("startingPoint", "main"))
        with self.store.lock:
            meta = self.store.meta(kind, repo)
            meta["branches"][branch] = start
            (self.store.repo_dir(kind, repo) / "meta.json").write_text(json.dumps(meta))
        self._send(200, {})

    def h_preupload(self, kind: str, repo: str, rev: str) -> None:
        if "create_pr" in self.query:
            raise HubError(501, "local test hub does not implement pull requests")
        sha = self.store.resolve(kind, repo, rev)
        existing = self.store.files(kind, repo, sha)
        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                   "oid": git_blob_oid(existing[f["path"]].read_bytes()) if f["path"] in existing else None}
                  for f in self._json().get("files", [])]  # fmt: skip
        self._send(200, {"files": answer, "commitOid": sha})

    def h_commit(self, kind: str, repo: str, rev: str) -> None:
        if "create_pr" in self.query:
            raise HubError(501, "local test hub does not implement pull requests (create_pr=1)")
        branch, meta = unquote(rev), self.store.meta(kind, repo)
        if branch not in meta["branches"]:
            msg = "commits go to a branch" if branch in meta["commits"] else f"Invalid rev id: {branch}"
            raise HubError(404 if branch not in meta["commits"] else 400, msg, "RevisionNotFound")
        header, ops = None, []
        for line in self.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            path = value.get("path", "")
            if key != "header" and (not path or path.startswith("/") or ".." in path.split("/")):
                raise HubError(400, f"invalid path in commit: {path!r}")
            if key == "header":
                header = value
            elif key == "file" and value.get("encoding") == "base64":
                ops.append(("file", path, base64.b64decode(value["content"])))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, path.rstrip("/"), None))
            else:
                raise HubError(501, f"local test hub does not implement commit line {key!r}")
        if header is None or not header.get("summary"):
            raise HubError(400, "commit payload needs a header line with a summary")
        sha = self.store.commit(kind, repo, branch, header["summary"], ops, header.get("parentCommit"))
        self._send(200, {"success": True, "commitOid": sha, "commitUrl": f"{self._url(kind, repo)}/commit/{sha}",
                         "hookOutput": ""})  # fmt: skip

    def _entries(self, kind: str, repo: str, sha: str) -> dict[str, dict]:
        """Every file and folder of a commit as the tree / paths-info JSON entries."""
        entries = {}
        for rel, path in self.store.files(kind, repo, sha).items():
            data = path.read_bytes()
            entries[rel] = {"type": "file", "path": rel, "size": len(data), "oid": git_blob_oid(data)}
            for i in range(rel.count("/")):
                folder = rel.rsplit("/", i + 1)[0]
                oid = hashlib.sha1(f"tree {sha} {folder}".encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0, "oid": oid})
        return dict(sorted(entries.items()))

    def h_tree(self, kind: str, repo: str, rev: str, path: str = "") -> None:
        entries = self._entries(kind, repo, self.store.resolve(kind, repo, rev))
        path = unquote(path).strip("/")
        if path and entries.get(path, {}).get("type") != "directory":
            raise HubError(404, f"{path} does not exist or is not a folder", "EntryNotFound")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path + "/" if path else ""
        self._send(200, [e for p, e in entries.items()
                         if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])])  # fmt: skip

    def h_paths_info(self, kind: str, repo: str, rev: str) -> None:
        entries = self._entries(kind, repo, self.store.resolve(kind, repo, rev))
        form = parse_qs(self.body.decode())
        self._send(200, [entries[p.strip("/")] for p in form.get("paths", []) if p.strip("/") in entries])

    def h_resolve(self, repo: str, rev: str, path: str, kind: str = "models") -> None:
        sha = self.store.resolve(kind, repo, rev)
        file = self.store.files(kind, repo, sha).get(unquote(path))
        if file is None:
            raise HubError(404, f"Entry not found: {unquote(path)}", "EntryNotFound", {"X-Repo-Commit": sha})
        data = file.read_bytes()
        # A quoted git blob sha1 ETag and no X-Xet-Hash header: the client downloads over plain HTTP.
        self._send(200, None, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"'}, raw=data)


@dataclass
class LocalHub:
    """What the ``local_hub`` fixture yields."""

    endpoint: str  # e.g. "http://127.0.0.1:PORT"
    root: Path  # storage directory of the repos
    server: ThreadingHTTPServer


def start_local_hub(root: Path) -> LocalHub:
    """Start a server on a free 127.0.0.1 port in a daemon thread; stop it with ``server.shutdown()``."""
    handler = type("BoundHubHandler", (HubHandler,), {"store": HubStore(root)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return LocalHub(f"http://127.0.0.1:{server.server_address[1]}", Path(root), server)


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A fresh local Hub for one test, with huggingface_hub (and datasets) online for that test only."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hub = start_local_hub(tmp_path / "local_hub")

    def local_only(request):  # runs before huggingface_hub's own hook on every request
        if request.url.host != "127.0.0.1":
            raise RuntimeError(f"a local_hub test tried to reach {request.url}; only {hub.endpoint} is allowed")

    def client_factory():
        return httpx2.Client(event_hooks={"request": [local_only, _http.hf_request_event_hook]},
                             follow_redirects=True, timeout=None)  # fmt: skip

    try:  # import before touching the environment: datasets copies it at import time
        import datasets.config as dconfig
    except ImportError:
        dconfig = None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))  # keep the user's cache clean
    if dconfig is not None:
        monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(dconfig, "HF_ENDPOINT", hub.endpoint)
        monkeypatch.setattr(dconfig, "HUB_DATASETS_URL", hub.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(dconfig, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    _http.set_client_factory(client_factory)
    try:
        yield hub
    finally:
        _http.set_client_factory(_http.default_client_factory)
        hub.server.shutdown()
        hub.server.server_close()
