"""Merged models, time vectors and interpolation points: push to and pull from the local Hub server."""

import copy

import torch
from huggingface_hub import ModelCard

from hf_ext.adapters.time_vector import TimeVector, interpolate
from hf_ext.merge.hub import load_interpolation, load_merged_model, load_time_vector
from hf_ext.merge import merge_models
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer


def test_push_pull_merged_model_time_vector_and_interpolation(local_hub, tmp_path):
    tok = tiny_tokenizer()
    a, b = tiny_llama(seed=1, tokenizer=tok), tiny_llama(seed=2, tokenizer=tok)
    da, db = save_tiny(tmp_path / "a", a, tok), save_tiny(tmp_path / "b", b, tok)
    merge_models([da, db], "linear", output_dir=tmp_path / "soup", hub_ids=["org/a", "org/b"], push_to_hub="org/soup",
                 hub_endpoint=local_hub.endpoint)
    pulled = load_merged_model("org/soup")
    torch.testing.assert_close(pulled.lm_head.weight, (a.lm_head.weight + b.lm_head.weight) / 2, rtol=0, atol=1e-7)
    # the pushed card is the Hub's view of the merge
    from hf_ext.hub import pull

    meta = ModelCard.load(pull("org/soup", repo_type="model") / "README.md").data
    assert meta.base_model == ["org/a", "org/b"] and meta.base_model_relation == "merge"

    # time vectors: push two, pull them, interpolate straight from the Hub
    base = tiny_llama(seed=0, tokenizer=tok)
    save_tiny(tmp_path / "base", base, tok)
    t1 = TimeVector.from_models(base, a, period="2012", base_hub_id="org/base")
    t2 = TimeVector.from_models(base, b, period="2016", base_hub_id="org/base")
    t1.push_to_hub("org/tv-2012", endpoint=local_hub.endpoint)
    t2.push_to_hub("org/tv-2016", endpoint=local_hub.endpoint, dtype=torch.float64)
    back = load_time_vector("org/tv-2016")
    assert back.config.period == "2016" and back.config.base_model == "org/base"
    exact = back.apply_to(copy.deepcopy(base))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in exact.state_dict().items())
    tv_meta = ModelCard.load(pull("org/tv-2016", repo_type="model") / "README.md").data
    assert tv_meta.base_model == "org/base" and tv_meta.base_model_relation == "adapter"
    point = load_interpolation("org/tv-2012", "org/tv-2016", 0.25, base=copy.deepcopy(base))
    ref = interpolate(t1, t2, 0.25).apply_to(copy.deepcopy(base))
    torch.testing.assert_close(point.lm_head.weight, ref.lm_head.weight, rtol=0, atol=1e-6)
    # two model repos interpolate to the same point
    merge_models([da], "linear", output_dir=tmp_path / "a_only", hub_ids=["org/a"], push_to_hub="org/a", hub_endpoint=local_hub.endpoint)
    merge_models([db], "linear", output_dir=tmp_path / "b_only", hub_ids=["org/b"], push_to_hub="org/b", hub_endpoint=local_hub.endpoint)
    models_point = load_interpolation("org/a", "org/b", 0.25)
    torch.testing.assert_close(models_point.lm_head.weight, ref.lm_head.weight, rtol=0, atol=1e-6)


def test_the_old_hf_ext_hub_loader_names_say_where_they_moved():
    import pytest

    import hf_ext.hub

    for name in ("load_merged_model", "load_time_vector", "load_interpolation"):
        with pytest.raises(AttributeError, match=f"from hf_ext.merge.hub import {name}"):
            getattr(hf_ext.hub, name)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        hf_ext.hub.nothing  # noqa: B018
