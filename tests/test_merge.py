"""Merge methods, streaming merges, soups and checkpoint averaging, and their bad inputs."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_ext.errors import InputError
from hf_ext.merge import (
    DareMerge,
    LinearMerge,
    SafetensorsWriter,
    TaskArithmetic,
    TiesMerge,
    WeightSource,
    average_checkpoints,
    average_models,
    merge_models,
)
from hf_ext.testing import save_tiny, tiny_llama


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("models")
    return {name: save_tiny(root / name, tiny_llama(seed=seed, tokenizer=tok), tok) for name, seed in (("base", 0), ("a", 1), ("b", 2))}


def _state(folder):
    return load_file(str(folder / "model.safetensors"))


def test_soup_is_the_elementwise_mean_and_weights_normalise():
    a, b, c = tiny_llama(seed=0), tiny_llama(seed=1), tiny_llama(seed=2)
    soup = average_models([a, b, c])
    for name, p in soup.state_dict().items():
        expected = (a.state_dict()[name] + b.state_dict()[name] + c.state_dict()[name]) / 3
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-7)
    weighted = average_models([a, b], weights=[3, 1])  # normalised to 0.75 / 0.25
    torch.testing.assert_close(weighted.lm_head.weight, 0.75 * a.lm_head.weight + 0.25 * b.lm_head.weight)
    assert type(soup) is type(a) and not soup.training
    assert a.lm_head.weight.data_ptr() != soup.lm_head.weight.data_ptr()  # inputs untouched


def test_streaming_merge_shards_card_and_reload(folders, tmp_path):
    out = merge_models([folders["a"], folders["b"]], "linear", output_dir=tmp_path / "m", weights=[0.25, 0.75],
                       hub_ids=["org/a", "org/b"], max_shard_size=30_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    merged = AutoModelForCausalLM.from_pretrained(out)
    sa, sb = _state(folders["a"]), _state(folders["b"])
    for name, p in merged.state_dict().items():
        torch.testing.assert_close(p, 0.25 * sa[name] + 0.75 * sb[name], rtol=0, atol=1e-7)
    card = (out / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "base_model:\n- org/a\n- org/b" in front and "base_model_relation: merge" in front
    assert (out / "tokenizer.json").is_file()


def test_task_arithmetic_and_dare_density_one_agree(folders):
    base, a, b = (WeightSource(folders[k]) for k in ("base", "a", "b"))
    key = "model.layers.0.mlp.up_proj.weight"
    tb, ta, tb2 = base.get(key), a.get(key), b.get(key)
    w = torch.tensor([0.5, 2.0])
    ta_merge = TaskArithmetic(scale=0.3).merge([ta, tb2], w, tb, key=key)
    torch.testing.assert_close(ta_merge, tb + 0.3 * (0.5 * (ta - tb) + 2.0 * (tb2 - tb)))
    with pytest.warns(UserWarning):  # PEFT: density >= 1 prunes nothing
        dare = DareMerge(density=1.0, scale=0.3).merge([ta, tb2], w, tb, key=key)
    torch.testing.assert_close(dare, ta_merge)


def test_dare_drops_and_rescales_reproducibly():
    base = torch.zeros(1000)
    delta = torch.ones(1000)
    one = DareMerge(density=0.25, seed=3).merge([base + delta], torch.tensor([1.0]), base, key="w")
    again = DareMerge(density=0.25, seed=3).merge([base + delta], torch.tensor([1.0]), base, key="w")
    other_key = DareMerge(density=0.25, seed=3).merge([base + delta], torch.tensor([1.0]), base, key="v")
    assert set(one.unique().tolist()) <= {0.0, 4.0}  # kept entries rescaled by 1/density
    assert torch.equal(one, again) and not torch.equal(one, other_key)
    assert 0.18 < (one > 0).float().mean().item() < 0.32


def test_ties_normalisation_is_peft_count_not_weight_sum():
    # Pinned choice: disjoint mean divides by the NUMBER of sign-agreeing models (PEFT), not by
    # the sum of their weights (mergekit's normalize: true).
    base = torch.zeros(3)
    a, b = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 1.0, -1.0])
    with pytest.warns(UserWarning):
        out = TiesMerge(density=1.0).merge([a, b], torch.tensor([2.0, 1.0]), base, key="w")
    # elected signs (total): [+, -, +]; entry 0: (2*1 + 1*2) / 2 models = 2.0 (mergekit: 4/3)
    assert out.tolist() == [2.0, -4.0, 6.0]
    trimmed = TiesMerge(density=0.5).merge([torch.tensor([4.0, 1.0, -3.0, 0.5])], torch.tensor([1.0]), torch.zeros(4), key="w")
    assert trimmed.tolist() == [4.0, 0.0, -3.0, 0.0]  # top-50% magnitudes kept


def test_linear_merge_unnormalised():
    out = LinearMerge(normalize=False).merge([torch.ones(2), 3 * torch.ones(2)], torch.tensor([1.0, 1.0]), None, key="w")
    assert out.tolist() == [4.0, 4.0]


def test_average_checkpoints_takes_last_n(tmp_path, tok):
    run = tmp_path / "run"
    models = {step: tiny_llama(seed=step, tokenizer=tok) for step in (10, 20, 30)}
    for step, m in models.items():
        save_tiny(run / f"checkpoint-{step}", m, tok)
    out = average_checkpoints(run, output_dir=tmp_path / "avg", last_n=2, base_hub_id="org/start")
    merged = load_file(str(out / "model.safetensors"))
    expected = (models[20].lm_head.weight + models[30].lm_head.weight) / 2
    torch.testing.assert_close(merged["lm_head.weight"], expected.detach(), rtol=0, atol=1e-7)
    assert "checkpoint-20, checkpoint-30" in (out / "README.md").read_text()


def test_writer_matches_safetensors(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.tensor(2.5), "d": torch.randn(2).half()}
    with SafetensorsWriter(tmp_path, [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]) as w:
        for k, v in tensors.items():
            w.write(k, v)
    back = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    src = WeightSource({"x": torch.ones(1)})
    assert src.nbytes() == 4


def test_bad_inputs(folders, tmp_path, tok):
    wide = save_tiny(tmp_path / "wide", tiny_llama(hidden_size=64, tokenizer=tok), tok)
    with pytest.raises(InputError, match=r"tensor 'lm_head.weight' has shape \[512, 64\]"):
        merge_models([folders["a"], wide], output_dir=tmp_path / "x", hub_ids=["o/a", "o/w"])
    deep = save_tiny(tmp_path / "deep", tiny_llama(num_layers=3, tokenizer=tok), tok)
    with pytest.raises(InputError, match="'model.layers.2.input_layernorm.weight' exists only in"):
        merge_models([folders["a"], deep], output_dir=tmp_path / "x", hub_ids=["o/a", "o/d"])
    # NaN weights
    nan_dir = tmp_path / "nan"
    save_tiny(nan_dir, tiny_llama(seed=1, tokenizer=tok), tok)
    state = _state(nan_dir)
    state["model.norm.weight"][0] = float("nan")
    save_file(state, str(nan_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match="'model.norm.weight' of .* holds 1 NaN/inf"):
        merge_models([folders["a"], nan_dir], output_dir=tmp_path / "x", hub_ids=["o/a", "o/n"])
    # a missing shard
    sharded = merge_models([folders["a"]], output_dir=tmp_path / "sh", hub_ids=["o/a"], max_shard_size=30_000)
    sorted(sharded.glob("model-*.safetensors"))[1].unlink()
    with pytest.raises(InputError, match="missing 1 of the .* shards"):
        WeightSource(sharded)
    # local inputs need Hub ids for the card; task vectors need a base
    with pytest.raises(InputError, match="has no Hub id"):
        merge_models([folders["a"], folders["b"]], output_dir=tmp_path / "x")
    with pytest.raises(InputError, match="needs a base model"):
        merge_models([folders["a"], folders["b"]], "ties", output_dir=tmp_path / "x", hub_ids=["o/a", "o/b"])
    with pytest.raises(InputError, match="no setting 'densty'"):
        merge_models([folders["a"]], "ties", output_dir=tmp_path / "x", densty=0.5)
