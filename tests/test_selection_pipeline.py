"""The selection job end to end (what `make quickstart` runs), its outputs, Hub round trip,
and the bad inputs the foundation issue lists."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, load_dataset

from hf_ext.errors import InputError
from hf_ext.select.pipeline import SelectionConfig, run_selection


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "quickstart"
    metrics = run_selection(SelectionConfig(output_dir=str(out), budget=300, compare_methods=["random"]))
    return out, metrics


def test_quickstart_outputs_and_metrics(quickstart):
    out, metrics = quickstart
    assert sorted(p.name for p in out.iterdir()) == [".hf_ext_output.json", "README.md", "data", "metrics.json", "selection.png"]
    on_disk = json.loads((out / "metrics.json").read_text())
    for key in ("method", "budget", "pool_size", "selected_size", "mean_response_tokens", "category_counts"):
        assert on_disk[key] == json.loads(json.dumps(metrics[key]))
    assert (on_disk["method"], on_disk["budget"], on_disk["pool_size"], on_disk["selected_size"]) == ("longest", 300, 2996, 300)
    assert sum(on_disk["category_counts"].values()) == 300
    assert sum(on_disk["pool_category_counts"].values()) == 2996
    # Longest selects long responses: its mean is far above the pool's; random stays close to it.
    mean = on_disk["mean_response_tokens"]
    assert mean["selected"] > 3 * mean["pool"]
    random_mean = on_disk["methods"]["random"]["mean_response_tokens"]["selected"]
    assert abs(random_mean - mean["pool"]) < 0.25 * mean["pool"]


def test_selected_dataset_is_the_top_k_by_tokens(quickstart):
    out, _ = quickstart
    selected = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    from hf_ext.data import load_pool
    from hf_ext.models import load_tokenizer

    pool, _ = load_pool("dolly_alpagasus_3k")
    tok = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    lengths = [len(ids) for ids in tok(list(pool["output"]), add_special_tokens=False)["input_ids"]]
    expected = sorted(range(len(pool)), key=lambda i: (-lengths[i], i))[:300]
    assert selected["pool_index"] == expected
    assert selected["response_tokens"] == [lengths[i] for i in expected]
    assert selected["output"][:5] == [pool["output"][i] for i in expected[:5]]


def test_card_front_matter_parses_with_full_metadata(quickstart):
    from huggingface_hub import DatasetCard

    out, _ = quickstart
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n", 2)[1])
    assert front["license"] == "cc-by-sa-3.0"
    assert front["source_datasets"] == ["databricks/databricks-dolly-15k"]
    assert "selection-longest" in front["tags"]
    card = DatasetCard(text)
    assert card.data.to_dict() == front
    body = card.text
    for fragment in ("budget 300", "seed 42", "| pool | 2996 |", "transformers |", "CC BY-SA".replace("CC BY-SA", "ShareAlike 3.0"), "selection.png"):
        assert fragment in body


def test_push_and_pull_round_trip(quickstart, local_hub, tmp_path):
    from hf_ext.hub import pull, push_folder

    out, _ = quickstart
    push_folder(out, "alice/dolly-longest-300", repo_type="dataset", endpoint=local_hub.endpoint, token="hf_x")
    local = pull("alice/dolly-longest-300", repo_type="dataset", endpoint=local_hub.endpoint, local_dir=tmp_path / "pulled")
    for rel in ("README.md", "metrics.json", "selection.png", "data/train-00000-of-00001.parquet"):
        assert (Path(local) / rel).read_bytes() == (out / rel).read_bytes()


def test_pipeline_pushes_in_one_commit(local_hub, tmp_path):
    from huggingface_hub import HfApi

    config = SelectionConfig(
        output_dir=str(tmp_path / "o"), budget=10, push_to_hub=True, hub_model_id="bob/sel", hub_endpoint=local_hub.endpoint, compare_methods=[]
    )
    metrics = run_selection(config)
    api = HfApi(endpoint=local_hub.endpoint, token="hf_x")
    files = sorted(f for f in api.list_repo_files("bob/sel", repo_type="dataset") if f != ".gitattributes")
    assert files == ["README.md", "data/train-00000-of-00001.parquet", "metrics.json", "selection.png"]
    # Everything arrived in the one commit the job made: it is the head of main.
    head = api.dataset_info("bob/sel").sha
    assert metrics["hub_commit"].oid == head


def _pool(tmp_path, rows):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _assert_no_output(tmp_path, out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


ROWS = [{"instruction": f"q{i}", "input": "", "output": "word " * (i + 1), "category": "qa"} for i in range(5)]


@pytest.mark.parametrize(
    "rows, overrides, fragment",
    [
        ([{k: v for k, v in r.items() if k != "output"} for r in ROWS], {}, "needs a column 'output'"),
        (ROWS, {"budget": 6}, "budget=6 is larger than the pool (5 examples)"),
        (ROWS, {"category_column": "topic"}, "needs a column 'topic'"),
        ([{**r, "output": i} for i, r in enumerate(ROWS)], {}, "Column 'output' must hold strings"),
    ],
    ids=["missing-column", "budget-too-large", "missing-category", "non-string-text"],
)
def test_bad_input_gives_one_clear_error_and_no_output(tmp_path, rows, overrides, fragment):
    out = tmp_path / "out"
    config = SelectionConfig(dataset=_pool(tmp_path, rows), output_dir=str(out), budget=overrides.pop("budget", 2), **overrides)
    with pytest.raises(InputError) as err:
        run_selection(config)
    assert fragment in str(err.value)
    _assert_no_output(tmp_path, out)


def test_empty_dataset(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="empty file: the pool has no examples"):
        run_selection(SelectionConfig(dataset=str(tmp_path / "empty.jsonl"), output_dir=str(out), budget=1))
    _assert_no_output(tmp_path, out)
    # A dataset with columns but no rows (e.g. after a filter) is refused by the job itself.
    ds = Dataset.from_dict({"instruction": ["x"], "input": [""], "output": ["y"], "category": ["qa"]}).filter(lambda r: False)
    ds.to_json(str(tmp_path / "rows0.jsonl"))
    (tmp_path / "rows0.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        run_selection(SelectionConfig(dataset=str(tmp_path / "rows0.jsonl"), output_dir=str(out), budget=1))
    _assert_no_output(tmp_path, out)


def test_failure_keeps_the_previous_output_intact(tmp_path, monkeypatch):
    import hf_ext.select.pipeline as pipeline

    out = tmp_path / "out"
    run_selection(SelectionConfig(dataset=_pool(tmp_path, ROWS), output_dir=str(out), budget=2))
    before = (out / "metrics.json").read_bytes()

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "selection_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        run_selection(SelectionConfig(dataset=_pool(tmp_path, ROWS), output_dir=str(out), budget=3))
    assert (out / "metrics.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_unknown_method_and_unknown_dataset(tmp_path):
    with pytest.raises(InputError, match="Unknown selection method 'sae'"):
        SelectionConfig(method="sae")
    with pytest.raises(InputError, match="not a bundled name, an existing path, or a Hub id"):
        run_selection(SelectionConfig(dataset="./missing/file.jsonl", output_dir=str(tmp_path / "o")))
