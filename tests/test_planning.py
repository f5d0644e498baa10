"""hf_ext.planning: meta-device parameter and FLOP counts against closed forms, PEFT's LoRA count,
and the published size of Llama-3.1-8B."""

import pytest
import torch

from hf_ext.planning import LLAMA_3_1_8B, LLAMA_3_2_3B, ModelCost, Plan, measured_flop_rate, meta_model


def closed_form_llama(v, d, i, layers, heads, kv, head_dim, tied):
    attention = d * heads * head_dim + 2 * d * kv * head_dim + heads * head_dim * d
    per_layer = attention + 3 * d * i + 2 * d  # q, k, v, o; gate, up, down; two RMSNorms
    return v * d + layers * per_layer + d + (0 if tied else v * d), layers * (attention + 3 * d * i)


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_and_linear_counts_equal_the_closed_form_for_a_small_config(tied):
    config = dict(model_type="llama", vocab_size=211, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                  num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=tied)
    model = meta_model(config)
    assert next(model.parameters()).device.type == "meta"
    cost = ModelCost.of(model)
    params, linear = closed_form_llama(211, 48, 80, 3, 6, 2, 8, tied)
    assert cost.params == params
    assert cost.linear_params == linear and cost.head_params == 211 * 48
    # Forward FLOPs per token: 2 per linear weight, plus 4 × (context/2) × width per layer of attention.
    assert cost.flops_per_token(context=100) == 2 * linear + 4 * 3 * 48 * 50
    assert cost.flops_per_token(context=100, with_head=True) == 2 * linear + 4 * 3 * 48 * 50 + 2 * 211 * 48
    # The same count from real weights: the meta model is the model.
    from transformers import AutoConfig, AutoModelForCausalLM

    real = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    assert sum(p.numel() for p in real.parameters()) == params


def test_lora_count_equals_peft():
    from peft import LoraConfig, get_peft_model

    from hf_ext.testing import tiny_llama

    model = tiny_llama()
    expected = ModelCost.of(model).lora_params(8, ("q_proj", "v_proj", "down_proj"))
    peft = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    assert expected == sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n) > 0


def test_paper_scale_models_have_their_published_sizes():
    assert ModelCost.of(meta_model(LLAMA_3_1_8B)).params == 8_030_261_248  # Llama-3.1-8B's safetensors total
    assert ModelCost.of(meta_model(LLAMA_3_2_3B)).params == 3_212_749_824  # Llama-3.2-3B (tied head)
    cut = ModelCost.of(meta_model(LLAMA_3_1_8B, num_layers=24))
    assert cut.layers == 24 and cut.linear_params == 24 * ModelCost.of(meta_model(LLAMA_3_1_8B)).linear_params // 32


def test_plan_time_is_flops_over_the_measured_rate():
    rate = measured_flop_rate("cpu", size=256, repeats=2)
    assert rate > 1e6
    plan = Plan("x", flops=3 * rate, flop_rate=rate, memory_bytes={"weights": 2 * 1024**3}, assumptions={"n": 1})
    assert plan.seconds == pytest.approx(3.0)
    assert plan.as_dict()["memory_gib"] == {"weights": 2.0, "total": 2.0}
    assert "assumes n = 1" in plan.format()
