"""Round trips of hf_ext.hub push_folder / pull with the real huggingface_hub client against the
local Hub-compatible server of tests/local_hub.py (never the real Hub)."""

import json
import os
import re
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError

from hf_ext.errors import HfExtError, InputError
from hf_ext.hub import pull, push_folder

TOKEN = "hf_local_test_token_do_not_print"
CARD = """---
license: cc-by-sa-3.0
language: [en]
task_categories: [text-generation]
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train.jsonl
---
# tiny dataset

Three rows for the hub round-trip test.
"""
ROWS = [{"instruction": "Say hi", "response": "hi"}, {"instruction": "Add 2+2", "response": "4"},
        {"instruction": "Name a colour", "response": "blue"}]  # fmt: skip


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the client's own .cache) -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}  # fmt: skip


@pytest.fixture
def dataset_files() -> dict[str, bytes]:
    return {
        "README.md": CARD.encode(),
        "data/train.jsonl": "".join(json.dumps(r) + "\n" for r in ROWS).encode(),
        "meta/nested dir/stats é.json": b'{"rows": 3}\n',  # quoting in URLs
    }


def test_dataset_round_trip_and_revisions(local_hub, tmp_path, dataset_files, caplog):
    caplog.set_level("DEBUG")
    repo, api = "hf-ext/tiny-ds", HfApi(endpoint=local_hub.endpoint, token=TOKEN)
    folder = _write(tmp_path / "v1", dataset_files)

    first = push_folder(folder, repo, endpoint=local_hub.endpoint, token=TOKEN, commit_message="v1")
    assert re.fullmatch(r"[0-9a-f]{40}", first.oid)
    assert first == f"{local_hub.endpoint}/datasets/{repo}/commit/{first.oid}"
    info = api.dataset_info(repo)
    assert info.sha == first.oid and info.id == repo
    # The Hub's initial commit holds .gitattributes; ours adds the three pushed files.
    expected = sorted(dataset_files) + [".gitattributes"]
    assert sorted(api.list_repo_files(repo, repo_type="dataset")) == sorted(expected)
    assert sorted(s.rfilename for s in info.siblings) == sorted(expected)

    one = hf_hub_download(repo, "data/train.jsonl", repo_type="dataset", endpoint=local_hub.endpoint, token=TOKEN)
    assert Path(one).read_bytes() == dataset_files["data/train.jsonl"]
    assert Path(one).parent.parent.name == first.oid  # cached under snapshots/<commit sha>/data/

    pulled = pull(repo, endpoint=local_hub.endpoint, token=TOKEN)
    assert pulled.name == first.oid and str(pulled).startswith(constants.HF_HUB_CACHE)
    got = _tree(pulled)
    assert {k: got[k] for k in dataset_files} == dataset_files and set(got) == set(expected)

    # Second commit: one file changed, one added, the rest unchanged.
    v2 = dict(dataset_files, **{"data/train.jsonl": b'{"instruction": "new", "response": "row"}\n',
                                "data/extra/added.txt": b"added in v2\n"})  # fmt: skip
    second = push_folder(_write(tmp_path / "v2", v2), repo, endpoint=local_hub.endpoint, token=TOKEN)
    assert second.oid != first.oid and api.dataset_info(repo).sha == second.oid
    assert _tree(pull(repo, endpoint=local_hub.endpoint))["data/train.jsonl"] == v2["data/train.jsonl"]
    old = _tree(pull(repo, revision=first.oid, endpoint=local_hub.endpoint, local_dir=tmp_path / "old"))
    assert old["data/train.jsonl"] == dataset_files["data/train.jsonl"] and "data/extra/added.txt" not in old
    assert sorted(api.list_repo_files(repo, repo_type="dataset", revision=first.oid)) == sorted(expected)
    only = pull(repo, endpoint=local_hub.endpoint, allow_patterns="data/*", local_dir=tmp_path / "only")
    assert set(_tree(only)) == {"data/train.jsonl", "data/extra/added.txt"}

    # Pushing the same folder again makes no commit: the client skips files whose oid is unchanged.
    again = push_folder(tmp_path / "v2", repo, endpoint=local_hub.endpoint, token=TOKEN)
    assert again.oid == second.oid
    meta = json.loads((local_hub.root / "datasets" / repo / "meta.json").read_text())
    assert list(meta["commits"])[1:] == [first.oid, second.oid]  # after the initial commit
    assert meta["commits"][second.oid]["parent"] == first.oid
    assert TOKEN not in caplog.text


def test_model_repo_and_branch(local_hub, tmp_path):
    repo, api = "hf-ext/tiny-model", HfApi(endpoint=local_hub.endpoint)
    import torch
    from safetensors.torch import save

    weights_bytes = save({"w": torch.arange(2560, dtype=torch.float32).reshape(40, 64)})  # a real file: pushes check headers
    files = {"config.json": b'{"model_type": "llama", "hidden_size": 8}', "model.safetensors": weights_bytes,
             "stitch/adapter_config.json": b'{"layers": [2, 3]}'}  # fmt: skip
    commit = push_folder(_write(tmp_path / "m", files), repo, repo_type="model", endpoint=local_hub.endpoint)
    assert commit == f"{local_hub.endpoint}/{repo}/commit/{commit.oid}"
    assert api.model_info(repo).sha == commit.oid
    assert sorted(api.list_repo_files(repo)) == sorted([*files, ".gitattributes"])
    weights = hf_hub_download(repo, "model.safetensors", endpoint=local_hub.endpoint)
    assert Path(weights).read_bytes() == files["model.safetensors"]
    got = _tree(pull(repo, repo_type="model", endpoint=local_hub.endpoint))
    assert {k: got[k] for k in files} == files
    with pytest.raises(InputError, match="dataset repo 'hf-ext/tiny-model'"):  # right id, wrong repo_type
        pull(repo, endpoint=local_hub.endpoint)

    # A push to a branch creates it from main and leaves main alone.
    dev = push_folder(_write(tmp_path / "d", {"config.json": b"{}"}), repo, repo_type="model",
                      endpoint=local_hub.endpoint, revision="dev")  # fmt: skip
    assert api.model_info(repo, revision="dev").sha == dev.oid != api.model_info(repo).sha == commit.oid
    assert _tree(pull(repo, repo_type="model", revision="dev", endpoint=local_hub.endpoint))["config.json"] == b"{}"


def test_one_push_to_hub_for_every_saved_object(local_hub, tmp_path):
    import inspect

    from huggingface_hub import ModelCard

    from hf_ext.adapters.stitch import StitchedModel
    from hf_ext.adapters.time_vector import TimeVector
    from hf_ext.hub import PushToHubMixin
    from hf_ext.select.sae import TopKSAE

    for cls in (TimeVector, StitchedModel, TopKSAE):  # one method, not three hand-written copies
        assert cls.push_to_hub is PushToHubMixin.push_to_hub, cls
    params = inspect.signature(PushToHubMixin.push_to_hub).parameters
    assert list(params)[:8] == ["self", "repo_id", "commit_message", "private", "token", "revision", "endpoint", "model_card_kwargs"]
    assert all(p.kind is p.KEYWORD_ONLY for name, p in params.items() if name not in ("self", "repo_id", "save_kwargs"))

    calls = []

    class Toy(PushToHubMixin):
        def save_pretrained(self, folder, *, value="x"):
            calls.append("save")
            (Path(folder) / "w.txt").write_text(value)

        def model_card(self, *, title="toy"):
            calls.append("card")
            if title == "bad":
                raise InputError("no card")
            return ModelCard(f"---\nlicense: mit\n---\n# {title}\n")

    repo, api = "alice/toy", HfApi(endpoint=local_hub.endpoint)
    with pytest.raises(InputError, match="no card"):  # the card is made first: a push it refuses saves and sends nothing
        Toy().push_to_hub(repo, endpoint=local_hub.endpoint, model_card_kwargs={"title": "bad"})
    assert calls == ["card"] and not api.repo_exists(repo)
    calls.clear()
    first = Toy().push_to_hub(repo, endpoint=local_hub.endpoint, token=TOKEN)
    info = Toy().push_to_hub(repo, commit_message="second", revision="dev", endpoint=local_hub.endpoint, token=TOKEN,
                             model_card_kwargs={"title": "T"}, value="y")
    assert calls == ["card", "save"] * 2
    assert first.commit_message == "Upload Toy with hf_ext" and first.oid == api.model_info(repo).sha
    assert info.commit_message == "second" and info.oid == api.model_info(repo, revision="dev").sha != first.oid
    got = _tree(pull(repo, repo_type="model", revision="dev", endpoint=local_hub.endpoint))
    assert got["w.txt"] == b"y" and got["README.md"].endswith(b"# T\n")


def test_errors_are_clear(local_hub, tmp_path, dataset_files):
    with pytest.raises(InputError, match=r"'nobody/missing'.*on http://127\.0\.0\.1:\d+.*not found") as err:
        pull("nobody/missing", endpoint=local_hub.endpoint, token=TOKEN)
    assert isinstance(err.value.__cause__, RepositoryNotFoundError) and TOKEN not in str(err.value)

    push_folder(_write(tmp_path / "ds", dataset_files), "hf-ext/errs", endpoint=local_hub.endpoint)
    with pytest.raises(RemoteEntryNotFoundError):  # X-Error-Code: EntryNotFound
        hf_hub_download("hf-ext/errs", "nope.txt", repo_type="dataset", endpoint=local_hub.endpoint)
    with pytest.raises(InputError, match="revision 'no-such-branch'.*revision not found"):
        pull("hf-ext/errs", revision="no-such-branch", endpoint=local_hub.endpoint)
    with pytest.raises(InputError, match="not an existing folder"):
        push_folder(tmp_path / "absent", "hf-ext/errs", endpoint=local_hub.endpoint)
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / ".git" / "HEAD").write_text("ref: main")  # ignored like upload_folder does
    with pytest.raises(InputError, match="holds no files"):
        push_folder(tmp_path / "empty", "hf-ext/errs", endpoint=local_hub.endpoint)
    bad = _write(tmp_path / "bad", {"README.md": b"---\nlicense: [unclosed\n---\n", "a.txt": b"a"})
    with pytest.raises(InputError, match="Invalid metadata in README.md"):
        push_folder(bad, "hf-ext/errs", endpoint=local_hub.endpoint)
    with pytest.raises(InputError, match="repo_type must be one of"):
        pull("hf-ext/errs", repo_type="space", endpoint=local_hub.endpoint)


def test_server_rejects_what_it_does_not_implement(local_hub):
    resp = httpx2.get(f"{local_hub.endpoint}/api/spaces/hf-ext/some-space")
    assert resp.status_code == 501
    assert resp.json() == {"error": "local test hub does not implement GET /api/spaces/hf-ext/some-space"}
    with pytest.raises(HfHubHTTPError) as err:  # and the real client surfaces it
        HfApi(endpoint=local_hub.endpoint).list_repo_refs("hf-ext/x", repo_type="dataset")
    assert err.value.response.status_code == 501 and "does not implement GET /api/datasets/hf-ext/x/refs" in str(err.value)
    with pytest.raises(RepositoryNotFoundError):  # X-Error-Code: RepoNotFound is understood
        HfApi(endpoint=local_hub.endpoint).model_info("nobody/nothing")
    with pytest.raises(RuntimeError, match="only http://127.0.0.1"):  # the fixture's network guard
        HfApi(endpoint="https://huggingface.co").model_info("gpt2")


def test_offline_mode_uses_cache_or_says_how_to_fix(local_hub, tmp_path, dataset_files, monkeypatch):
    repo = "hf-ext/offline-ds"
    commit = push_folder(_write(tmp_path / "ds", dataset_files), repo, endpoint=local_hub.endpoint)
    online = pull(repo, endpoint=local_hub.endpoint)
    local_hub.server.shutdown()  # from here on, any HTTP call fails (connection refused)
    local_hub.server.server_close()
    with pytest.raises(HfExtError, match="hf-ext/other.*could not reach the endpoint") as err:
        pull("hf-ext/other", endpoint=local_hub.endpoint)  # online, unreachable, not cached
    assert not isinstance(err.value, InputError)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = pull(repo, endpoint=local_hub.endpoint)
    assert offline == online and offline.name == commit.oid
    assert _tree(offline)["README.md"] == dataset_files["README.md"]
    assert pull(repo, revision=commit.oid, endpoint=local_hub.endpoint) == online
    with pytest.raises(InputError, match="not in the local cache.*Unset HF_HUB_OFFLINE.*hf download hf-ext/other"):
        pull("hf-ext/other", endpoint=local_hub.endpoint)
    with pytest.raises(InputError, match="offline mode is on"):
        push_folder(tmp_path / "ds", repo, endpoint=local_hub.endpoint)


def test_endpoint_defaults_to_hf_endpoint(local_hub, tmp_path, dataset_files):
    # The fixture sets HF_ENDPOINT to the local hub after huggingface_hub was imported.
    commit = push_folder(_write(tmp_path / "ds", dataset_files), "hf-ext/env-ds")
    assert commit.startswith(local_hub.endpoint)
    assert _tree(pull("hf-ext/env-ds"))["data/train.jsonl"] == dataset_files["data/train.jsonl"]


def test_load_dataset_through_endpoint(local_hub, tmp_path, dataset_files):
    datasets = pytest.importorskip("datasets")
    push_folder(_write(tmp_path / "ds", dataset_files), "hf-ext/loadable", endpoint=local_hub.endpoint)
    ds = datasets.load_dataset("hf-ext/loadable", split="train", cache_dir=str(tmp_path / "ds_cache"))
    assert ds.to_list() == ROWS


def test_fixture_restores_offline_mode():
    # Runs after the local_hub tests: the session is offline again (conftest sets HF_HUB_OFFLINE=1).
    import datasets.config
    from huggingface_hub.utils import _http

    expected = os.environ["HF_HUB_OFFLINE"].upper() in {"1", "ON", "YES", "TRUE"}
    assert constants.HF_HUB_OFFLINE is expected and datasets.config.HF_HUB_OFFLINE is expected
    assert _http._GLOBAL_CLIENT_FACTORY is _http.default_client_factory
