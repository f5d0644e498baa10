"""Contract tests, the save / load / push round trip: every class that uses hf_ext's Hub mixin and every
job of ``hf_ext.config.JOBS`` goes through the same checks against the offline local Hub of
``tests/local_hub.py`` (127.0.0.1 only, never the real Hub).

- A :class:`hf_ext.hub.PushToHubMixin` class (found by walking the mixin's subclasses, so a later one
  is covered; its tiny instance lives in ``contract_common.hub_cases``): ``save_pretrained`` then
  ``from_pretrained`` gives equal tensors and config; ``push_to_hub`` then ``from_pretrained(repo_id)``
  gives the same; the repo holds exactly the saved files (same bytes) and a README card whose
  metadata says ``library_name: hf-ext``.
- A job (tiny values from ``contract_common.job_values``) run with ``push_to_hub: true`` and
  ``hub_model_id``: the repo's files are the output folder's files, byte for byte, less the local
  marker ``.hf_ext_output.json`` that :func:`hf_ext.hub.push_folder` leaves out (the Hub's own
  ``.gitattributes`` aside); the commit is the one the run reports; the root card's metadata parses as a
  ``ModelCard`` / ``DatasetCard`` of the repo's type and comes back unchanged, and so does every card
  inside (a selection's, a checkpoint's). The jobs that push no root card are listed, with what they
  hold, in ``NO_ROOT_CARD``; the ones that cannot push at all (none) in ``NOT_PUSHED``, with why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, ModelCard, ModelCardData, RepoCard

from contract_common import assets, hub_artefact_classes, hub_cases, job_values, judge_server  # noqa: F401 (pytest fixtures)
from hf_ext.config import JOBS, import_path, parse_config
from hf_ext.hub import pull
from hf_ext.outputs import MARKER
from local_hub import _GITATTRIBUTES

CASES = hub_cases()
CLASSES = {cls.__qualname__: cls for cls in hub_artefact_classes()}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _content(files: dict[str, bytes]) -> dict[str, object]:
    """Files by content: a safetensors file as (its parsed header, its tensor bytes), since safetensors writes
    the ``__metadata__`` keys of two saves of the same tensors in either order; any other file as its bytes."""
    def parsed(data: bytes) -> object:
        size = int.from_bytes(data[:8], "little")
        return json.loads(data[8:8 + size]), data[8 + size:]

    return {k: parsed(v) if k.endswith(".safetensors") else v for k, v in files.items()}


def _assert_same_state(got: tuple[dict, dict], want: tuple[dict, dict]) -> None:
    (got_tensors, got_config), (want_tensors, want_config) = got, want
    assert sorted(got_tensors) == sorted(want_tensors)
    for key, value in want_tensors.items():
        assert got_tensors[key].dtype == value.dtype and torch.equal(got_tensors[key], value), key
    assert got_config == want_config


def _front_matter(readme: bytes) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", readme.decode("utf-8"), re.S)
    assert match, "the README has no YAML front matter"
    return yaml.safe_load(match.group(1))


def _repo_type(api: HfApi, repo: str) -> str:
    kinds = [kind for kind in ("model", "dataset") if api.repo_exists(repo, repo_type=kind)]
    assert len(kinds) == 1, f"{repo}: repos of types {kinds}"
    return kinds[0]


# --- PushToHubMixin classes ------------------------------------------------------------------------------------

def test_every_hub_artefact_class_has_a_case():
    assert {"TimeVector", "StitchedModel", "TopKSAE"} <= set(CLASSES), f"the subclass walk found only {sorted(CLASSES)}"
    assert len(CLASSES) == len(hub_artefact_classes()), "two PushToHubMixin classes share a name"
    missing = sorted(set(CLASSES) - set(CASES))
    assert not missing, f"PushToHubMixin classes without a tiny instance in contract_common.hub_cases: {missing}"
    assert not sorted(set(CASES) - set(CLASSES)), "hub_cases has cases for classes that no longer use the mixin"


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_pretrained_then_from_pretrained_gives_the_same_object(name, tmp_path):
    case = CASES[name]
    obj = case.build()
    folder = tmp_path / "saved"
    obj.save_pretrained(folder)
    back = case.load(obj, str(folder))
    assert type(back) is CLASSES[name]
    _assert_same_state(case.state(back), case.state(obj))
    again = tmp_path / "again"
    back.save_pretrained(again)  # the loaded object saves the same files
    assert _content({k: v for k, v in _files(again).items() if k != MARKER}) == _content({k: v for k, v in _files(folder).items() if k != MARKER})


@pytest.mark.parametrize("name", sorted(CASES))
def test_push_to_hub_then_from_pretrained_repo_id_gives_the_same_object(name, local_hub, tmp_path):
    case = CASES[name]
    obj = case.build()
    repo, api = f"hf-ext-tests/{name.lower()}", HfApi(endpoint=local_hub.endpoint)
    commit = obj.push_to_hub(repo)  # HF_ENDPOINT is the local Hub: no endpoint argument needed
    assert api.model_info(repo).sha == commit.oid and not api.repo_exists(repo, repo_type="dataset")

    back = case.load(obj, repo)
    assert type(back) is CLASSES[name]
    tensors, config = case.state(obj)
    _assert_same_state(case.state(back), (tensors, case.pulled(config, repo)))

    obj.save_pretrained(tmp_path / "saved")
    saved = {k: v for k, v in _files(tmp_path / "saved").items() if k not in (MARKER, "README.md")}
    pushed = _files(pull(repo, repo_type="model"))
    assert pushed.pop(".gitattributes") == _GITATTRIBUTES  # the Hub's initial commit, not the push
    readme = pushed.pop("README.md")
    assert _content(pushed) == _content(saved)  # the same files as save_pretrained writes

    metadata = _front_matter(readme)
    card = ModelCard(readme.decode("utf-8"))
    assert type(card.data) is ModelCardData and card.data.to_dict() == metadata
    assert metadata["library_name"] == "hf-ext"
    assert "hf-ext" in metadata["tags"]


# --- jobs ------------------------------------------------------------------------------------------------------

# Every job of JOBS pushes its finished output folder through hf_ext.jobs.job_output, and is tested here.
# Jobs that push a subfolder of it instead, and which:
PUSHED_SUBFOLDER = {"bts": "stitch"}  # BTS pushes its stitch layers and their card
# Jobs that cannot push, and why (none today); a new job gets a push test until it has values or a reason here.
NOT_PUSHED: dict[str, str] = {}
# Jobs whose pushed folder has no card at its root (so the repo page shows no metadata), and what it holds.
NO_ROOT_CARD: dict[str, str] = {}  # job -> what its folder holds instead of a root card (none today)
# Values a push test changes, and why.
PUSH_VALUES = {"quality_classifier": {"fasttext": {"epoch": 2, "dim": 4}}}  # a 32 MB model.bin, not 800 MB (fewer buckets or dim 2: NaN)


PUSHED = sorted(set(JOBS) - set(NOT_PUSHED))


def test_every_job_has_a_push_decision():
    for table in (PUSHED_SUBFOLDER, NOT_PUSHED, NO_ROOT_CARD, PUSH_VALUES):
        assert set(table) <= set(JOBS), f"entries for jobs that no longer exist: {sorted(set(table) - set(JOBS))}"
    assert all(NOT_PUSHED.values()) and all(NO_ROOT_CARD.values()), "a job that cannot push, or pushes no card, says why"
    assert not set(NOT_PUSHED) & (set(PUSHED_SUBFOLDER) | set(NO_ROOT_CARD) | set(PUSH_VALUES))


@pytest.mark.parametrize("job", sorted(PUSHED))
def test_job_push_to_hub_uploads_its_output_folder(job, assets, judge_server, local_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, repo = tmp_path / "out", f"hf-ext-tests/{job.replace('_', '-')}"
    try:
        tiny = job_values(job, {**assets, "judge": judge_server}, out)
    except KeyError:
        pytest.fail(f"job {job!r}: add tiny values to contract_common.job_values, or list it in NOT_PUSHED with why it cannot push")
    values = {**tiny, **PUSH_VALUES.get(job, {}), "output_dir": str(out), "push_to_hub": True, "hub_model_id": repo,
              "hub_endpoint": local_hub.endpoint}
    metrics = import_path(JOBS[job].runner)(parse_config(import_path(JOBS[job].config), values))

    api = HfApi(endpoint=local_hub.endpoint)
    kind = _repo_type(api, repo)
    assert metrics["hub_commit"].oid == api.repo_info(repo, repo_type=kind).sha  # the run reports the commit it made
    assert (out / MARKER).is_file()
    local = {k: v for k, v in _files(out / PUSHED_SUBFOLDER.get(job, "")).items() if Path(k).name != MARKER}  # push_folder leaves markers out, at any depth
    pushed = _files(pull(repo, repo_type=kind))
    if ".gitattributes" not in local:
        assert pushed.pop(".gitattributes") == _GITATTRIBUTES  # the Hub's initial commit, not the push
    assert sorted(pushed) == sorted(local)
    assert pushed == local  # the same bytes

    if job in NO_ROOT_CARD:
        assert "README.md" not in local, f"{job} now pushes a root card: drop it from NO_ROOT_CARD"
    else:
        metadata = _front_matter(local["README.md"])
        card_cls, data_cls = (ModelCard, ModelCardData) if kind == "model" else (DatasetCard, DatasetCardData)
        card = card_cls(local["README.md"].decode("utf-8"))
        assert type(card.data) is data_cls
        assert card.data.to_dict() == metadata  # every field parses into the card's data and comes back unchanged
    for path in (p for p in local if p.endswith("/README.md")):  # the cards of what it holds (a selection, a checkpoint)
        assert RepoCard(local[path].decode("utf-8")).data.to_dict() == _front_matter(local[path]), path
