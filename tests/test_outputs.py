"""Nothing a user owns is lost (issue 13, "Data loss" 1-5): the safe output folder of every job,
exact folders after a re-run, metrics before the push, and pushes that refuse broken files."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from hf_ext.cli import main
from hf_ext.config import parse_config
from hf_ext.errors import InputError, RecipeError
from hf_ext.hub import push_folder
from hf_ext.outputs import MARKER, check_output_dir, output_folder
from hf_ext.select.pipeline import SelectionConfig, run_selection
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

ROWS = [{"instruction": f"q{i}", "input": "", "output": "word " * (i + 1), "category": "qa"} for i in range(6)]


def _pool(folder: Path) -> Path:
    path = folder / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# -- 1. output_dir replacement ---------------------------------------------------------------------

def test_output_dir_dot_is_refused_and_nothing_is_deleted(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    pool = _pool(work)
    (work / "notes.txt").write_text("mine")
    recipe = work / "r.yaml"
    recipe.write_text(yaml.safe_dump({"job": "select", "dataset": pool.name, "budget": 2, "compare_methods": []}))
    before = _snapshot(work)
    monkeypatch.chdir(work)
    for out in (".", "./", str(work), str(tmp_path)):  # the current directory and its parent
        assert main(["run", "r.yaml", "--output_dir", out]) == 2
        err = capsys.readouterr().err
        assert "output_dir" in err and "current directory" in err
    assert _snapshot(work) == before and _leftovers(tmp_path) == []


def test_a_file_at_output_dir_is_refused_and_kept(tmp_path):
    target = tmp_path / "results"
    target.write_text("a file the user owns")
    with pytest.raises(InputError, match=r"output_dir '.*results' is an existing file"):
        SelectionConfig(dataset=str(_pool(tmp_path)), output_dir=str(target), budget=2)
    with pytest.raises(InputError, match="is an existing file"):  # even with overwrite
        SelectionConfig(dataset=str(_pool(tmp_path)), output_dir=str(target), budget=2, overwrite_output_dir=True)
    assert target.read_text() == "a file the user owns"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl", "results"]  # no hidden .results.old-*


def test_a_folder_without_marker_is_refused_unless_overwrite_output_dir(tmp_path):
    pool = _pool(tmp_path)
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("do not delete")
    with pytest.raises(InputError, match=rf"holds files that hf_ext did not write \(no {MARKER}\).*overwrite_output_dir: true"):
        SelectionConfig(dataset=str(pool), output_dir=str(target), budget=2, compare_methods=[])
    assert (target / "thesis.tex").read_text() == "do not delete"
    run_selection(SelectionConfig(dataset=str(pool), output_dir=str(target), budget=2, compare_methods=[], overwrite_output_dir=True))
    assert not (target / "thesis.tex").exists() and (target / MARKER).is_file()
    # The folder is now hf_ext's own: a re-run replaces it without the flag, and an empty folder is fine too.
    run_selection(SelectionConfig(dataset=str(pool), output_dir=str(target), budget=3, compare_methods=[]))
    assert json.loads((target / "metrics.json").read_text())["budget"] == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    run_selection(SelectionConfig(dataset=str(pool), output_dir=str(empty), budget=2, compare_methods=[]))
    assert json.loads((target / MARKER).read_text())["written_by"] == "select" and _leftovers(tmp_path) == []


def test_a_folder_holding_an_input_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pool = _pool(out)
    (out / MARKER).write_text("{}")  # even a folder hf_ext wrote
    with pytest.raises(InputError, match=r"output_dir '.*out' holds the input dataset"):
        SelectionConfig(dataset=str(pool), output_dir=str(out), budget=2, overwrite_output_dir=True)
    with pytest.raises(InputError, match="holds the input dataset"):
        SelectionConfig(dataset=str(pool), output_dir=str(tmp_path), budget=2, overwrite_output_dir=True)
    assert pool.is_file()


def test_output_folder_keeps_the_previous_folder_on_error(tmp_path):
    target = tmp_path / "o"
    with output_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), output_folder(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("disk full")
    assert (target / "a.txt").read_text() == "first" and _leftovers(tmp_path) == []
    with pytest.raises(InputError, match="output_dir is not set"):
        check_output_dir("")


def test_a_nested_job_s_metrics_and_card_name_the_final_folder_not_the_temporary_one(tmp_path):
    # A compare runs its selections inside its own temporary folder; what they record about their
    # inputs and outputs must point where the files are once the folder is in place.
    target = tmp_path / "compare"
    with output_folder(target) as tmp:
        pool = tmp / "pool" / "pool.jsonl"
        pool.parent.mkdir()
        pool.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        run_selection(SelectionConfig(dataset=str(pool), output_dir=str(tmp / "selections" / "random"), method="random",
                                      budget=2, compare_methods=[]))
        (tmp / "blob.bin").write_bytes(str(tmp).encode())  # not a text file hf_ext writes about itself: left as is
        tmp_name = str(tmp)
    metrics = json.loads((target / "selections" / "random" / "metrics.json").read_text())
    assert metrics["dataset"] == str(target / "pool" / "pool.jsonl") and Path(metrics["dataset"]).is_file()
    texts = {p: p.read_text() for p in target.rglob("*") if p.suffix in (".json", ".md")}
    assert texts and not [p for p, t in texts.items() if ".tmp-" in t]
    assert str(target / "pool" / "pool.jsonl") in (target / "selections" / "random" / "README.md").read_text()
    assert (target / "blob.bin").read_bytes() == tmp_name.encode()


# -- 2/3. library writers: temporary folder, and exactly the new files after a re-run -------------------

@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = tiny_tokenizer()
    return [save_tiny(root / n, tiny_llama(seed=s, tokenizer=tok), tok) for n, s in (("base", 0), ("a", 1), ("b", 2))]


def test_re_merge_into_a_sharded_folder_leaves_exactly_the_new_files(tmp_path, three_models):
    from hf_ext.merge.merge import merge_models

    _, a, b = three_models
    out = tmp_path / "soup"
    merge_models([a, b], "linear", output_dir=out, hub_ids=["org/a", "org/b"], max_shard_size="20KB")
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*-of-*.safetensors"))) > 1
    merge_models([a, b], "linear", output_dir=out, hub_ids=["org/a", "org/b"], weights=[0.9, 0.1])
    files = json.loads((out / MARKER).read_text())["files"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MARKER) == files
    assert not list(out.glob("*index.json")) and not list(out.glob("model-*")) and "model.safetensors" in files
    wa, wb = (load_file(str(p / "model.safetensors"))["model.embed_tokens.weight"] for p in (a, b))
    assert torch.allclose(load_file(str(out / "model.safetensors"))["model.embed_tokens.weight"], 0.9 * wa + 0.1 * wb, atol=1e-6)


def test_merge_refuses_a_user_folder_and_a_folder_holding_its_input(tmp_path, three_models):
    from hf_ext.merge.merge import merge_models

    _, a, b = three_models
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="overwrite: true"):
        merge_models([a, b], "linear", output_dir=mine, hub_ids=["org/a", "org/b"])
    assert (mine / "keep.txt").read_text() == "x"
    with pytest.raises(InputError, match=r"holds the input models\[0\]"):
        merge_models([a, b], "linear", output_dir=a.parent, hub_ids=["org/a", "org/b"], overwrite=True)


# -- 4. the merge job writes metrics.json before it pushes ------------------------------------------------

def test_merge_job_pushes_this_runs_metrics(tmp_path, three_models, local_hub):
    _, a, b = three_models
    out = tmp_path / "merged"
    values = {"job": "merge", "models": [str(a), str(b)], "input_hub_ids": ["org/a", "org/b"], "output_dir": str(out),
              "push_to_hub": True, "hub_model_id": "org/soup", "hub_endpoint": local_hub.endpoint}
    recipe = tmp_path / "m.yaml"
    for weights in ([0.5, 0.5], [0.8, 0.2]):  # the second push must carry the second run's metrics, not the first's
        recipe.write_text(yaml.safe_dump({**values, "weights": weights}))
        assert main(["run", str(recipe)]) == 0
        api = HfApi(endpoint=local_hub.endpoint, token="hf_x")
        pushed = api.hf_hub_download("org/soup", "metrics.json", cache_dir=str(tmp_path / "cache"))
        assert Path(pushed).read_bytes() == (out / "metrics.json").read_bytes()
        assert json.loads(Path(pushed).read_text())["pushed_to"] == "org/soup"
    assert MARKER not in api.list_repo_files("org/soup")  # the local marker is not published


def test_old_hub_keys_are_refused_with_the_new_names(tmp_path):
    from trainers.jobs.critic_rm import CriticRMJobConfig

    with pytest.raises(RecipeError, match="push_to_hub: true and hub_model_id: me/sel"):
        parse_config(SelectionConfig, {"push_to_hub": "me/sel"})
    with pytest.raises(RecipeError, match="push_to_hub: true and hub_model_id: me/sel"):
        parse_config(SelectionConfig, {}, ["--push_to_hub", "me/sel"])
    with pytest.raises(RecipeError, match="'hub_private' was renamed: write hub_private_repo"):
        parse_config(SelectionConfig, {"hub_private": True})
    with pytest.raises(RecipeError, match="'push_to' was renamed: write push_to_hub: true and hub_model_id"):
        parse_config(CriticRMJobConfig, {"push_to": "me/rm", "output_dir": str(tmp_path / "rm")})
    with pytest.raises((InputError, RecipeError), match="hub_model_id is not set"):
        parse_config(SelectionConfig, {"push_to_hub": True, "output_dir": str(tmp_path / "s")})


# -- 5. push_folder refuses broken files -------------------------------------------------------------------

def test_push_refuses_a_truncated_safetensors_and_a_junk_parquet(tmp_path, local_hub):
    good = tmp_path / "good"
    good.mkdir()
    save_file({"w": torch.ones(64, 64)}, str(good / "model.safetensors"))
    full = (good / "model.safetensors").read_bytes()
    api = HfApi(endpoint=local_hub.endpoint, token="hf_x")
    cases = {
        "truncated": {"model.safetensors": full[: len(full) // 3]},
        "header": {"model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"},
        "parquet": {"model.safetensors": full, "data/train-00000-of-00001.parquet": b"PAR1 this is not parquet"},
        "magic": {"model.safetensors": full, "data/train-00000-of-00001.parquet": b"id,text\n1,hello\n"},
    }
    for name, files in cases.items():
        folder = tmp_path / name
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        bad = [rel for rel in files if rel.endswith(".parquet")] or ["model.safetensors"]
        with pytest.raises(InputError, match=rf"{bad[0].split('/')[-1]}.*(truncated|not a)") as err:
            push_folder(folder, f"org/{name}", repo_type="model", endpoint=local_hub.endpoint)
        assert "Cannot push" in str(err.value)
        assert not api.repo_exists(f"org/{name}")  # refused before the repo was even created
    push_folder(good, "org/good", repo_type="model", endpoint=local_hub.endpoint)
    assert "model.safetensors" in api.list_repo_files("org/good")


def test_kill_between_renames_cannot_lose_the_folder_where_exchange_works(tmp_path):
    from hf_ext.outputs import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "x").write_text("b")
    if not _exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported on this filesystem")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
