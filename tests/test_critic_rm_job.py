"""The critic_rm job end to end on committed real data (tiny model): stage-1 critiques from the
committed SmolLM2 file, training, held-out accuracy, the card, and a push to a local Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_ext.config import JOBS, import_path, parse_config
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

DATA = Path(__file__).parent / "data" / "preference"


def test_critic_rm_job_trains_cards_and_pushes(tmp_path, local_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    model_dir = save_tiny(tmp_path / "tiny", tiny_llama(max_position_embeddings=2048), tiny_tokenizer())
    config_cls, runner = import_path(JOBS["critic_rm"][0]), import_path(JOBS["critic_rm"][1])
    c = parse_config(config_cls, {
        "model_name_or_path": str(model_dir), "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "train_file": str(DATA / "alpaca_eval_gpt4_slice.jsonl.gz"), "eval_file": str(DATA / "hh_rlhf_harmless_test_slice.jsonl.gz"),
        "critiques_file": str(DATA / "alpaca_eval_smollm2_critiques.jsonl.gz"), "num_critiques": 1,
        "eval_pairs": 4, "eval_num_critiques": 0, "max_chars": 2000, "max_length": 2048,
        "max_steps": 2, "per_device_train_batch_size": 2, "report_to": "none", "bf16": False,
        "activation_checkpointing": False, "use_cpu": True, "save_strategy": "no",
        "output_dir": str(tmp_path / "out"), "push_to_hub": True, "hub_model_id": "hf-ext/critic-rm-tiny",
        "hub_endpoint": local_hub.endpoint,
    })
    metrics = runner(c)
    out = tmp_path / "out"
    assert metrics["stage_one"]["training_rows"] == metrics["stage_one"]["consistency_filter"]["rows_kept"]
    assert [r["pairs"] for r in metrics["heldout"]][1] == 4
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in metrics["heldout"])
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["tatsu-lab/alpaca_eval"]
    assert "cosine 0.9 → 0.1" in card.text and "critiques file" in card.text
    assert "| held-out data | [Anthropic/hh-rlhf]" in card.text  # evaluation data is not listed as training data
    assert "| critiques per response (stage 1) | 1 " in card.text and metrics["stage_one"]["critiques_per_response"] == 1
    accs = {r.dataset_type: r.metric_value for r in card.data.eval_results}
    assert accs["Anthropic/hh-rlhf"] == pytest.approx(round(metrics["heldout"][1]["accuracy"], 4))
    assert json.loads((out / "metrics.json").read_text())["critique_weight"]["schedule"] == "cosine"
    from huggingface_hub import HfApi
    files = HfApi(endpoint=local_hub.endpoint).list_repo_files("hf-ext/critic-rm-tiny")
    assert {"README.md", "model.safetensors", "reward_head.safetensors", "metrics.json"} <= set(files)
