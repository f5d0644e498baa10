"""Card rendering: Hub metadata (base_model ids, relation, eval results) passes
huggingface_hub's local checks; local paths never leak into cards."""

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

from hf_ext.errors import InputError
from hf_ext.hub.cards import hub_ids, library_versions, render_dataset_card, render_model_card


def _front(card):
    return yaml.safe_load(str(card).split("---\n", 2)[1])


def test_model_card_for_a_merge_has_a_list_of_bases_and_a_model_index(tmp_path):
    card = render_model_card(
        "model_card.md.j2",
        {"base_model": ["org/expert-a", "org/expert-b"], "base_model_relation": "merge", "license": "apache-2.0",
         "tags": ["hf-ext", "merge"], "datasets": ["openai/gsm8k"]},
        eval_results=[{"task_type": "text-generation", "dataset_type": "openai/gsm8k", "dataset_name": "GSM8K",
                       "metric_type": "accuracy", "metric_value": 0.25}],
        model_name="merged-model",
        title="A merged model",
        base_model=["org/expert-a", "org/expert-b"],
        sections=[{"title": "Merge", "body": "Linear average, weights 0.5/0.5."}],
    )
    front = _front(card)
    assert front["base_model"] == ["org/expert-a", "org/expert-b"]
    assert front["base_model_relation"] == "merge"
    assert front["library_name"] == "transformers"
    result = front["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "accuracy", "value": 0.25}
    path = tmp_path / "README.md"
    card.save(str(path))
    assert metadata_load(path)["datasets"] == ["openai/gsm8k"]
    reloaded = ModelCard.load(path)
    assert reloaded.data.eval_results[0].metric_value == 0.25
    assert "Linear average, weights 0.5/0.5." in reloaded.text
    assert "- [org/expert-b](https://huggingface.co/org/expert-b)" in reloaded.text


def test_single_base_model_is_a_string():
    card = render_model_card("model_card.md.j2", {"base_model": ["org/seed"], "base_model_relation": "finetune"}, title="t")
    assert _front(card)["base_model"] == "org/seed"


def test_local_paths_are_refused_in_cards(tmp_path):
    with pytest.raises(InputError, match="local path .* cards carry Hub ids"):
        render_model_card("model_card.md.j2", {"base_model": [str(tmp_path)]}, title="t")
    with pytest.raises(InputError, match="not a valid Hub repo id"):
        hub_ids(["not a/valid//id"])


def test_packaged_model_paths_map_back_to_their_hub_id():
    from hf_ext.models import resolve_model

    local = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert local != "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_ids([local]) == ["sentence-transformers/all-MiniLM-L6-v2"]


def test_bad_eval_results_fail_clearly():
    with pytest.raises((InputError, TypeError)):
        render_model_card("model_card.md.j2", {}, eval_results=[{"task_type": "x"}], title="t")


def test_dataset_card_and_versions():
    card = render_dataset_card("dataset_card.md.j2", {"license": "mit", "source_datasets": ["openai/gsm8k"]}, title="T",
                               sections=[{"title": "S", "body": "B"}])
    assert _front(card) == {"license": "mit", "source_datasets": ["openai/gsm8k"]}
    assert "## S\n\nB" in card.text
    versions = library_versions()
    assert {"python", "torch", "transformers", "datasets", "huggingface_hub"} <= set(versions)
    assert f"| transformers | {versions['transformers']} |" in card.text


def test_unknown_template():
    with pytest.raises(InputError, match="available templates: .*model_card.md.j2"):
        render_dataset_card("nope.md.j2", {})


@pytest.mark.parametrize("relation", ["adapter", "merge", "quantized", "finetune"])
def test_the_hubs_base_model_relations_are_accepted(relation):
    card = render_model_card("model_card.md.j2", {"base_model": ["org/seed"], "base_model_relation": relation}, title="t")
    assert _front(card)["base_model_relation"] == relation


@pytest.mark.parametrize("relation", ["frankenmerge", "Merge", "fine-tune", ""])
def test_other_base_model_relations_are_refused_naming_the_field(relation):
    with pytest.raises(InputError, match=r"'base_model_relation' is .*\['adapter', 'merge', 'quantized', 'finetune'\]"):
        render_model_card("model_card.md.j2", {"base_model": ["org/seed"], "base_model_relation": relation}, title="t")


@pytest.mark.parametrize("library", ["hf_ext", "hf-ext ", "HF-EXT", None])
def test_library_name_has_one_spelling(library):
    with pytest.raises(InputError, match="'library_name' is .*'hf-ext'"):
        render_model_card("model_card.md.j2", {"library_name": library}, title="t")
    assert _front(render_model_card("model_card.md.j2", {"library_name": "hf-ext"}, title="t"))["library_name"] == "hf-ext"


def _card_literals(key):
    """(file:line, value) of every string literal hf_ext/ and trainers/ give `key` in a dict or a call."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [*(root / "hf_ext").rglob("*.py"), *(root / "trainers").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, ast.Dict):
                pairs = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
            elif isinstance(node, ast.Call):
                pairs = [(kw.arg, kw.value) for kw in node.keywords]
            for name, value in pairs:
                if name == key:
                    found += [(f"{path.relative_to(root)}:{value.lineno}", v) for v in _outcomes(value)]
    return found


def _outcomes(node):
    """The string constants an expression can evaluate to (through `a if c else b` and `a or b`)."""
    import ast

    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, ast.IfExp):
        return _outcomes(node.body) + _outcomes(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [v for value in node.values for v in _outcomes(value)]
    return []


def test_every_card_writer_uses_the_hubs_values():
    from hf_ext.hub.cards import BASE_MODEL_RELATIONS, LIBRARY_NAMES

    libraries, relations = _card_literals("library_name"), _card_literals("base_model_relation")
    assert len(libraries) >= 6 and len(relations) >= 6  # the scan sees the card writers
    assert [x for x in libraries if x[1] not in LIBRARY_NAMES] == []
    assert [x for x in relations if x[1] not in BASE_MODEL_RELATIONS] == []
