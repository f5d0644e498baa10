"""Stitch adapter (Branch-Train-Stitch, SPECS §7): identity init, gate algebra, parameter count,
save/load, expert hashes, bad inputs, adding/removing experts, generate."""

import copy
import json

import pytest
import torch

from hf_ext.adapters.stitch import CONFIG_NAME, WEIGHTS_NAME, StitchConfig, StitchedModel, StitchLayer, count_stitch_parameters
from hf_ext.errors import InputError
from hf_ext.testing import tiny_llama, tiny_tokenizer

D, L = 32, 4


@pytest.fixture(scope="module")
def models(tok):
    seed = tiny_llama(tokenizer=tok, num_layers=L, hidden_size=D)
    experts = {name: tiny_llama(tokenizer=tok, num_layers=L, hidden_size=D, seed=i + 1) for i, name in enumerate(["math", "code", "de"])}
    return seed, experts


@pytest.fixture(scope="module")
def batch(tok):
    return tok(["Question: How many days are in a week?", "def add(a, b): return a + b"], padding=True, return_tensors="pt")


def _perturb(model: StitchedModel, seed: int = 0) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for p in model.stitch.parameters():
            p.add_(torch.randn_like(p) * 0.5)


def test_step0_stitched_model_equals_the_seed(models, batch):
    seed, experts = models
    config = StitchConfig(num_stitch_layers=4)
    model = StitchedModel(seed, experts, config)
    with torch.no_grad():
        diff = (model(**batch).logits - seed(**batch).logits).abs().max().item()
    assert diff <= 1e-5
    # the model fills in its own copy of the config; models built in memory have no Hub ids
    assert config.expert_names == [] and config.hub_hidden_size is None and model.stitch_config.expert_names == ["math", "code", "de"]
    assert model.stitch_config.seed_model is None and model.stitch_config.expert_models is None
    model.set_gate_offset(3.0)
    assert model.gate_offset == 3.0 and model.stitch_config.gate_offset == 16.0
    assert [layer.kind for layer in model.stitch] == ["h2e", "e2h", "h2e", "e2h"] and model.stitch_after == [1, 2, 3, 4]


def test_copies_of_the_seed_with_identity_projections_give_the_seed_for_any_gates(models, batch):
    seed, _ = models
    copies = {f"copy{i}": copy.deepcopy(seed) for i in range(2)}
    model = StitchedModel(seed, copies, StitchConfig(num_stitch_layers=2, init="random", init_std=1.0, gate_offset=0.0))
    h = torch.randn(2, 5, D)
    gates = model.stitch[-1].gates(h)
    assert gates["hub"].min() < 0.9 and gates["copy0"].max() > 0.05  # the gates really mix
    with torch.no_grad():
        diff = (model(**batch).logits - seed(**batch).logits).abs().max().item()
    assert diff <= 1e-4


def test_e2h_gates_sum_to_one_and_h2e_gates_are_in_unit_interval():
    e2h = StitchLayer("e2h", D, {"a": D, "b": D, "c": D}, init="random", init_std=1.0, gate_offset=0.0)
    h2e = StitchLayer("h2e", D, {"a": D, "b": 48}, init="random", init_std=0.1, gate_offset=0.0)
    h = torch.randn(3, 7, D) * 5
    g = e2h.gates(h)
    total = sum(g.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert g["hub"].std() > 0.01  # per hidden dimension, not one scalar
    g2 = h2e.gates(h)
    assert g2["b"].shape[-1] == 48 and all(((v > 0) & (v < 1)).all() for v in g2.values())
    # E2H formula by hand for one position
    hs = {n: torch.randn(3, 7, D) for n in "abc"}
    out, passed = e2h(h, hs)
    by_hand = g["hub"] * h + sum(g[n] * (hs[n] @ e2h.proj[n].weight.T) for n in "abc")
    assert torch.allclose(out, by_hand, atol=1e-5) and passed is hs


def test_parameter_count_is_k_times_2n_plus_1_times_d_squared(models, tok):
    seed, experts = models
    model = StitchedModel(seed, experts, StitchConfig(num_stitch_layers=4))
    assert model.num_trainable_parameters() == 4 * (2 * 3 + 1) * D * D == model.expected_trainable_parameters()
    assert all(not p.requires_grad for p in seed.parameters())
    wide = tiny_llama(tokenizer=tok, num_layers=L, hidden_size=48, seed=7)
    with pytest.raises(InputError, match=r"Expert 'wide' has hidden_size=48 .* StitchConfig\.width_projections=True"):
        StitchedModel(seed, {"math": experts["math"], "wide": wide}, StitchConfig(num_stitch_layers=2))
    mixed = StitchedModel(seed, {"math": experts["math"], "wide": wide}, StitchConfig(num_stitch_layers=2, width_projections=True))
    assert tuple(mixed.stitch[1].proj["wide"].weight.shape) == (D, 48)  # E2H: expert width -> hub width
    assert tuple(mixed.stitch[0].proj["wide"].weight.shape) == (48, D)  # H2E: hub width -> expert width
    batch = tok(["experts of another width"], return_tensors="pt")
    with torch.no_grad():
        assert (mixed(**batch).logits - seed(**batch).logits).abs().max().item() <= 1e-5
    assert mixed.num_trainable_parameters() == count_stitch_parameters(D, [D, 48], 2) == (D * D + 2 * D * D + 2 * D * 48) + (D * D + 2 * D * D + D * 48 + D * D)


def test_save_load_round_trip_gives_identical_logits_and_only_stitch_files(models, batch, tmp_path):
    seed, experts = models
    model = StitchedModel(seed, experts, StitchConfig(num_stitch_layers=2))
    _perturb(model)
    folder = model.save_pretrained(tmp_path / "stitch")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    stitch_bytes = (folder / WEIGHTS_NAME).stat().st_size
    assert stitch_bytes < 1.1 * 4 * model.num_trainable_parameters() + 4096  # fp32 stitch weights + header, nothing else
    loaded = StitchedModel.from_pretrained(seed, experts, folder)
    with torch.no_grad():
        a, b = model(**batch).logits, loaded(**batch).logits
    assert torch.equal(a, b)
    assert json.loads((folder / CONFIG_NAME).read_text())["expert_names"] == ["math", "code", "de"]


def test_loading_onto_other_experts_fails_unless_forced(models, tok, tmp_path):
    seed, experts = models
    StitchedModel(seed, experts, StitchConfig(num_stitch_layers=2)).save_pretrained(tmp_path)
    other = dict(experts, code=tiny_llama(tokenizer=tok, num_layers=L, hidden_size=D, seed=99))
    with pytest.raises(InputError, match=r"other expert\(s\).*\['code'\].*force=True"):
        StitchedModel.from_pretrained(seed, other, tmp_path)
    assert StitchedModel.from_pretrained(seed, other, tmp_path, force=True).stitch_config.expert_names == ["math", "code", "de"]
    with pytest.raises(InputError, match=r"\['de'\].*missing"):
        StitchedModel.from_pretrained(seed, {"math": experts["math"], "code": experts["code"]}, tmp_path)


def test_bad_inputs_get_one_clear_error(models, tok):
    seed, experts = models
    other_vocab = tiny_llama(tokenizer=tok, vocab_size=len(tok) + 10, num_layers=L, hidden_size=D)
    with pytest.raises(InputError, match="vocab_size"):
        StitchedModel(seed, {"x": other_vocab})
    other_tok = tiny_tokenizer(seed=5)
    with pytest.raises(InputError, match="different tokenizer"):
        StitchedModel(seed, {"math": experts["math"]}, tokenizer=tok, expert_tokenizers={"math": other_tok})
    with pytest.raises(InputError, match="beyond the model depth"):
        StitchedModel(seed, experts, StitchConfig(stitch_after=[2, L + 1]))
    with pytest.raises(InputError, match="exceeds the model depth"):
        StitchedModel(seed, experts, StitchConfig(num_stitch_layers=L + 1))
    with pytest.raises(InputError, match="same depth"):
        StitchedModel(seed, {"deep": tiny_llama(tokenizer=tok, num_layers=L + 2, hidden_size=D)})


def test_adding_and_removing_an_expert_reinitialises_only_its_parameters(models, batch, tok):
    seed, experts = models
    model = StitchedModel(seed, {"math": experts["math"], "code": experts["code"]}, StitchConfig(num_stitch_layers=2))
    _perturb(model)
    before = {k: v.clone() for k, v in model.stitch_state_dict().items()}
    with torch.no_grad():
        logits = model(**batch).logits
    model.add_expert("de", experts["de"])
    after = model.stitch_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(set(after) - set(before)) == sorted(f"stitch.{i}.{kind}.de.weight" for i in range(2) for kind in ("gate", "proj"))
    with torch.no_grad():
        assert (model(**batch).logits - logits).abs().max().item() <= 1e-5  # the new expert starts closed
    model.remove_expert("de")
    assert set(model.stitch_state_dict()) == set(before)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, logits)


def test_generate_matches_the_seed_at_step0_with_and_without_cache(models, tok):
    seed, experts = models
    model = StitchedModel(seed, experts, StitchConfig(num_stitch_layers=2))
    prompt = tok(["The quick brown fox"], return_tensors="pt")
    reference = seed.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(**prompt, max_new_tokens=6, do_sample=False), reference)
    assert torch.equal(model.generate(**prompt, max_new_tokens=6, do_sample=False, use_cache=False), reference)


def test_push_to_hub_writes_a_card_and_loads_back_by_repo_id(models, batch, local_hub):
    import yaml

    from hf_ext.hub import pull

    seed, experts = models
    config = StitchConfig(num_stitch_layers=2, seed_model="org/seed", expert_models=["org/math", "org/code", "org/de"])
    model = StitchedModel(seed, experts, config)
    _perturb(model, seed=3)
    model.push_to_hub("user/bts-stitch", model_card_kwargs={"summary": "tiny test"})
    folder = pull("user/bts-stitch", repo_type="model")
    assert {p.name for p in folder.iterdir() if p.is_file()} - {".gitattributes"} == {"README.md", CONFIG_NAME, WEIGHTS_NAME}
    card = (folder / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == ["org/seed", "org/math", "org/code", "org/de"] and front["base_model_relation"] == "adapter"
    loaded = StitchedModel.from_pretrained(seed, experts, "user/bts-stitch")
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
