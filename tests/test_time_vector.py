"""TimeVector: exact arithmetic, interpolation, analogy, base fingerprints, LoRA import/export, streaming."""

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from hf_ext.adapters.time_vector import TimeVector, analogy, interpolate
from hf_ext.errors import InputError
from hf_ext.merge import WeightSource, merge_models
from hf_ext.testing import save_tiny, tiny_llama


def _finetune_like(base, seed, scale=0.05):
    # A "finetune": the base plus a small seeded update on every float weight.
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def models(tok):
    base = tiny_llama(seed=0, tokenizer=tok)
    return {"base": base, "2012": _finetune_like(base, 1), "2016": _finetune_like(base, 2), "task": _finetune_like(base, 3)}


def _equal_state(model, reference):
    return all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_base_plus_tau_is_the_finetune_exactly(models):
    tau = TimeVector.from_models(models["base"], models["2016"], period="2016")
    out = tau.apply_to(copy.deepcopy(models["base"]))
    assert _equal_state(out, models["2016"])  # bit-exact, not just close
    # applying in place to the very base model does not change τ (it was snapshotted)
    again = tau.apply_to(copy.deepcopy(models["base"]))
    assert _equal_state(again, models["2016"])
    assert tau.config.base_fingerprint and tau.config.relation == "finetune"


def test_streaming_apply_from_folders_is_exact(models, tok, tmp_path):
    base_dir = save_tiny(tmp_path / "base", models["base"], tok)
    ft_dir = save_tiny(tmp_path / "ft", models["2016"], tok)
    tau = TimeVector.from_models(base_dir, ft_dir, period="2016")
    out = tau.apply_to(base_dir, output_dir=tmp_path / "out", max_shard_size=40_000)
    merged = WeightSource(out)
    ft = load_file(str(ft_dir / "model.safetensors"))
    assert all(torch.equal(merged.get(k), ft[k]) for k in ft)
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "config.json").is_file()


def test_save_load_round_trip(models, tmp_path):
    tau = TimeVector.from_models(models["base"], models["2016"], period="2016")
    tau.save_pretrained(tmp_path / "tv64", dtype=torch.float64)
    back = TimeVector.from_pretrained(tmp_path / "tv64")
    assert back.config.period == "2016" and back.config.base_fingerprint == tau.config.base_fingerprint
    assert _equal_state(back.apply_to(copy.deepcopy(models["base"])), models["2016"])
    tau.save_pretrained(tmp_path / "tv32")  # float32 storage: exact up to the rounding of τ
    model32 = TimeVector.from_pretrained(tmp_path / "tv32").apply_to(copy.deepcopy(models["base"]))
    for k, v in model32.state_dict().items():
        torch.testing.assert_close(v, models["2016"].state_dict()[k], rtol=0, atol=1e-6)
    card = (tmp_path / "tv32" / "README.md").read_text()
    assert "period-2016" in card and "time vector" in card.lower()


def test_interpolation_endpoints_and_midpoint(models):
    t12 = TimeVector.from_models(models["base"], models["2012"], period="2012")
    t16 = TimeVector.from_models(models["base"], models["2016"], period="2016")
    assert _equal_state(interpolate(t12, t16, 1.0).apply_to(copy.deepcopy(models["base"])), models["2012"])
    assert _equal_state(interpolate(t12, t16, 0.0).apply_to(copy.deepcopy(models["base"])), models["2016"])
    mid = interpolate(t12, t16, 0.3)
    assert mid.config.relation == "interpolation" and mid.config.period == "0.3·2012+0.7·2016"
    m = mid.apply_to(copy.deepcopy(models["base"]))
    expected = 0.3 * models["2012"].lm_head.weight + 0.7 * models["2016"].lm_head.weight
    torch.testing.assert_close(m.lm_head.weight, expected, rtol=0, atol=1e-6)


def test_streaming_interpolation_matches_a_linear_merge(models, tok, tmp_path):
    dirs = {k: save_tiny(tmp_path / k, models[k], tok) for k in ("base", "2012", "2016")}
    point = interpolate(TimeVector.from_models(dirs["base"], dirs["2012"]), TimeVector.from_models(dirs["base"], dirs["2016"]), 0.25)
    a = point.apply_to(dirs["base"], output_dir=tmp_path / "tv_point")
    b = merge_models([dirs["2012"], dirs["2016"]], "linear", weights=[0.25, 0.75], output_dir=tmp_path / "lin", hub_ids=["o/a", "o/b"])
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6)


def test_arithmetic_and_analogy(models):
    base = models["base"]
    task = TimeVector.from_models(base, models["task"], period="2012")
    lm12 = TimeVector.from_models(base, models["2012"], period="2012")
    lm16 = TimeVector.from_models(base, models["2016"], period="2016")
    # analogy with t = t0 reduces to λ_C·τ_task exactly
    same = analogy(task, lm12, lm12, lambda_c=0.7, lambda_b=0.4, lambda_a=0.4)
    ref = (0.7 * task).apply_to(copy.deepcopy(base))
    assert _equal_state(same.apply_to(copy.deepcopy(base)), ref)
    # the general formula, checked against the weights
    upd = analogy(task, lm16, lm12, lambda_c=1.0, lambda_b=0.5, lambda_a=0.25).apply_to(copy.deepcopy(base))
    w = lambda m: m.lm_head.weight.double()  # noqa: E731
    expected = w(base) + (w(models["task"]) - w(base)) + 0.5 * (w(models["2016"]) - w(base)) - 0.25 * (w(models["2012"]) - w(base))
    torch.testing.assert_close(upd.lm_head.weight, expected.float(), rtol=0, atol=1e-6)
    # + - * round trips
    diff = (lm12 + lm16) - lm16
    torch.testing.assert_close(diff.get("lm_head.weight"), lm12.get("lm_head.weight"), rtol=0, atol=1e-12)
    torch.testing.assert_close((2 * lm12).get("lm_head.weight"), (lm12 + lm12).get("lm_head.weight"), rtol=0, atol=0)
    torch.testing.assert_close((-lm12).get("lm_head.weight"), -lm12.get("lm_head.weight"), rtol=0, atol=0)
    assert abs(lm12.norm() - float(sum(v.square().sum() for _, v in lm12.items())) ** 0.5) < 1e-9


def test_base_fingerprint_guards(models):
    tau = TimeVector.from_models(models["base"], models["2016"])
    other = tiny_llama(seed=5)
    with pytest.raises(InputError, match="taken against .* different model"):
        tau.apply_to(other)
    forced = tau.apply_to(tiny_llama(seed=5), force=True)
    torch.testing.assert_close(forced.lm_head.weight, other.lm_head.weight + tau.get("lm_head.weight").float())
    foreign = TimeVector.from_models(other, models["2016"])
    with pytest.raises(InputError, match="different base models"):
        tau + foreign
    assert (tau.add(foreign, force=True)).config.base_fingerprint == tau.config.base_fingerprint


def test_integer_buffers_are_copied_and_bad_inputs(models):
    base = {"w": torch.ones(3), "step": torch.tensor([5])}
    ft = {"w": torch.tensor([1.5, 1.0, 0.5]), "step": torch.tensor([9])}
    tau = TimeVector.from_models(base, ft)
    assert tau.get("step").tolist() == [9] and tau.get("w").tolist() == [0.5, 0.0, -0.5]
    with pytest.raises(InputError, match="'w' has shape \\[4\\]"):
        TimeVector.from_models(base, {"w": torch.ones(4), "step": torch.tensor([1])})
    with pytest.raises(InputError, match="'w' of .* holds 1 NaN/inf"):
        TimeVector.from_models(base, {"w": torch.tensor([1.0, float("inf"), 1.0]), "step": torch.tensor([1])})
    with pytest.raises(InputError, match="different architecture|missing from|another architecture"):
        TimeVector.from_models(models["base"], models["2016"]).apply_to(tiny_llama(num_layers=1), force=True)


def _lora(base, seed, r=4):
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(copy.deepcopy(base), cfg)


def test_lora_import_is_sum_of_w_b_a_and_peft_linear_differs(models):
    base = models["base"]
    p1, p2 = _lora(base, 1), _lora(base, 2)
    w1, w2 = 0.6, 0.4
    t1, t2 = TimeVector.from_lora(p1, period="2012"), TimeVector.from_lora(p2, period="2016")
    assert t1.config.base_fingerprint == TimeVector.from_models(base, models["2016"]).config.base_fingerprint
    combined = w1 * t1 + w2 * t2
    key, mod = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj"

    def bya(p):
        m = p.get_base_model().get_submodule(mod)
        return m.scaling["default"] * (m.lora_B["default"].weight @ m.lora_A["default"].weight).double()

    exact = w1 * bya(p1) + w2 * bya(p2)
    torch.testing.assert_close(combined.get(key), exact, rtol=1e-6, atol=1e-7)
    assert set(combined.keys()) == {f"model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")}
    # PEFT's "linear" combines A and B separately (cross terms); "cat" is exact.
    peft = _lora(base, 1)
    peft.add_adapter("second", p2.peft_config["default"])
    second_state = {k.replace(".default.", ".second."): v for k, v in p2.state_dict().items() if "lora_" in k}
    peft.load_state_dict(second_state, strict=False)
    for kind in ("linear", "cat"):
        peft.add_weighted_adapter(["default", "second"], [w1, w2], adapter_name=kind, combination_type=kind)
        delta = peft.get_base_model().get_submodule(mod).get_delta_weight(kind).double()
        gap = (delta - exact).norm() / exact.norm()
        if kind == "linear":
            assert gap > 0.05
        else:
            assert gap < 1e-5


def test_lora_from_saved_adapter_and_apply(models, tmp_path):
    base = models["base"]
    peft = _lora(base, 7)
    peft.save_pretrained(tmp_path / "adapter")
    tau = TimeVector.from_lora(tmp_path / "adapter", base=base)
    merged = copy.deepcopy(peft).merge_and_unload()
    applied = tau.apply_to(copy.deepcopy(base))
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(applied.state_dict()[k], v, rtol=0, atol=1e-6)


def test_export_to_lora_reports_svd_error(models, tmp_path):
    base = models["base"]
    tau = TimeVector.from_models(base, models["2016"], period="2016")
    full = tau.to_lora(tmp_path / "full", rank=64, base_model=base)  # rank ≥ every Linear's min dim
    assert full["relative_error_linear"] < 1e-6
    assert "model.embed_tokens.weight" in full["unrepresented"] and 0 < full["relative_error"] < 1
    low = tau.to_lora(tmp_path / "low", rank=2, base_model=base)
    assert 0.3 < low["relative_error_linear"] < 1
    # plain PEFT loads it; the Linear weights move exactly as the truncated SVD says
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "low").merge_and_unload()
    key = "model.layers.1.mlp.down_proj.weight"
    delta = tau.get(key)
    got = loaded.state_dict()[key].double() - base.state_dict()[key].double()
    rel = ((delta - got).norm() / delta.norm()).item()
    assert abs(rel - low["per_tensor"][key]) < 1e-4
    assert (tmp_path / "low" / "svd_report.json").is_file()
