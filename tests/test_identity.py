"""Identity checks that are hard to pass by accident (issue 13 item 11) and no local paths in
exported adapters (item 17): the shared weights fingerprint (hf_ext.fingerprint) sees a tensor
changed anywhere; time vectors refuse a null fingerprint unless forced; stitch layers refuse
another seed or a subtly different expert."""

import copy
import json

import pytest
import torch

from hf_ext.adapters.stitch import StitchConfig, StitchedModel, expert_hash
from hf_ext.adapters.time_vector import TimeVector
from hf_ext.errors import InputError
from hf_ext.fingerprint import state_fingerprint
from hf_ext.merge import WeightSource
from hf_ext.testing import save_tiny, tiny_llama
from hf_ext.weights import fingerprint


def _shifted_after(model, start=256, delta=1e-3):
    """The model with every value past `start` of every tensor moved (the first `start` untouched)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.view(-1)[start:] += delta
    return other


def test_fingerprint_sees_changes_past_the_first_values(tiny_lm):
    assert fingerprint(WeightSource(_shifted_after(tiny_lm))) != fingerprint(WeightSource(tiny_lm))


def test_fingerprint_sees_a_block_changed_in_the_middle_of_a_large_tensor():
    big = {"embed.weight": torch.randn(2_000, 500, generator=torch.Generator().manual_seed(0))}
    changed = {"embed.weight": big["embed.weight"].clone()}
    changed["embed.weight"].view(-1)[500_000:547_104] += 1e-3  # 47,104 weights, far from the start
    assert state_fingerprint(changed) != state_fingerprint(big)
    shapes = {"embed.weight": big["embed.weight"].reshape(500, 2_000)}
    assert state_fingerprint(shapes) != state_fingerprint(big)  # shapes count
    assert state_fingerprint({"embed.weight": big["embed.weight"].double()}) != state_fingerprint(big)  # dtypes count


def test_fingerprint_of_a_saved_model_equals_the_one_in_memory(tiny_lm, tok, tmp_path):
    save_tiny(tmp_path / "base", tiny_lm, tok)
    assert fingerprint(WeightSource(tmp_path / "base")) == fingerprint(WeightSource(tiny_lm))


def test_time_vector_refuses_a_base_changed_past_the_first_values(tiny_lm):
    tau = TimeVector.from_models(tiny_lm, _shifted_after(tiny_lm, start=0, delta=0.05))
    with pytest.raises(InputError, match="different model"):
        tau.apply_to(_shifted_after(tiny_lm))
    tau.apply_to(copy.deepcopy(tiny_lm))  # its own base is fine


def test_time_vector_refuses_a_null_fingerprint_unless_forced(tiny_lm, tmp_path):
    tau = TimeVector.from_models(tiny_lm, _shifted_after(tiny_lm, start=0, delta=0.05))
    tau.config.base_fingerprint = None
    with pytest.raises(InputError, match="no base fingerprint.*force=True"):
        tau.apply_to(copy.deepcopy(tiny_lm))
    with pytest.raises(InputError, match="no base fingerprint"):
        tau.add(TimeVector.from_models(tiny_lm, _shifted_after(tiny_lm, start=0, delta=0.01)))
    tau.apply_to(copy.deepcopy(tiny_lm), force=True)
    tau.config.base_fingerprint = "0123456789abcdef0123456789abcdef"  # the older 256-value scheme
    with pytest.raises(InputError, match="older hf_ext"):
        tau.apply_to(copy.deepcopy(tiny_lm))


def test_to_lora_writes_no_local_base_path(tiny_lm, tok, tmp_path):
    save_tiny(tmp_path / "base", tiny_lm, tok)
    save_tiny(tmp_path / "ft", _shifted_after(tiny_lm, start=0, delta=0.05), tok)
    tau = TimeVector.from_models(tmp_path / "base", tmp_path / "ft")
    tau.to_lora(tmp_path / "lora", rank=2, base_model=tmp_path / "base")
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None
    for f in (tmp_path / "lora").iterdir():
        if f.suffix in (".json", ".md"):
            assert str(tmp_path) not in f.read_text(), f.name


# -- stitch ------------------------------------------------------------------------------------------
def test_expert_hash_sees_a_tensor_changed_anywhere_and_ignores_dtype(tok):
    expert = tiny_llama(tokenizer=tok, seed=1)
    moved = copy.deepcopy(expert)
    with torch.no_grad():
        moved.model.layers[0].mlp.up_proj.weight.view(-1)[100:] += 1e-2  # no sampled position of the old 12-value hash
    assert expert_hash(moved) != expert_hash(expert)
    assert expert_hash(copy.deepcopy(expert).to(torch.bfloat16)) == expert_hash(expert)


def test_stitch_layers_refuse_another_seed(tok, tmp_path):
    seed, expert = tiny_llama(tokenizer=tok, seed=0), tiny_llama(tokenizer=tok, seed=1)
    StitchedModel(seed, {"math": expert}, StitchConfig(num_stitch_layers=1)).save_pretrained(tmp_path / "st")
    other_seed = tiny_llama(tokenizer=tok, seed=7)
    with pytest.raises(InputError, match="another seed model"):
        StitchedModel.from_pretrained(other_seed, {"math": expert}, tmp_path / "st")
    StitchedModel.from_pretrained(other_seed, {"math": expert}, tmp_path / "st", force=True)
    StitchedModel.from_pretrained(seed, {"math": expert}, tmp_path / "st")  # the right seed loads
    saved = json.loads((tmp_path / "st" / "stitch_config.json").read_text())
    saved["seed_hash"] = None  # written by an older hf_ext
    (tmp_path / "st" / "stitch_config.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="no seed hash"):
        StitchedModel.from_pretrained(seed, {"math": expert}, tmp_path / "st")
