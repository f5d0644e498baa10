"""The scaling_tiny recipe job end to end on a committed slice of Tiny Shakespeare (tiny sizes,
tiny token budgets): runs are counted right, the law is fitted on the smaller sizes and the
largest is predicted, and the output folder round-trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hf_ext.errors import InputError, RecipeError
from trainers.jobs.scaling_tiny import ScalingTestbedConfig

DATA = Path(__file__).parent / "data" / "scaling"


def non_embedding_params(h: int, layers: int) -> int:
    # Llama layer: q, k, v, o (h×h each, as many KV heads as heads), MLP 3·h·4h, two RMSNorms; plus the final norm.
    return layers * (4 * h * h + 12 * h * h + 2 * h) + h


def test_scaling_tiny_job_fits_small_and_predicts_largest(tmp_path):
    from hf_ext.cli import main
    from hf_ext.scaling.card import load_fit

    recipe = {
        "job": "scaling_tiny", "data_dir": str(DATA), "corpus_files": ["tinyshakespeare_head.txt.gz"],
        "output_dir": str(tmp_path / "out"), "hidden_sizes": [8, 16, 24], "num_layers": 1, "token_multipliers": [0.5, 1.0],
        "vocab_size": 300, "tokenizer_chars": 40000, "block_size": 32, "batch_size": 4, "eval_fraction": 0.1,
        "bootstrap": 0, "num_threads": 1, "seed": 0,
    }
    path = tmp_path / "scaling_tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    runs = metrics["runs"]
    assert len(runs) == 6
    expected_n = {non_embedding_params(h, 1) for h in (8, 16, 24)}
    assert {r["N"] for r in runs} == expected_n
    for r in runs:
        m_target = min((0.5, 1.0), key=lambda m: abs(r["M"] - m))
        blocks = max(4, math.ceil(m_target * r["N"] / 32))
        assert r["D"] == blocks * 32 and r["M"] == pytest.approx(r["D"] / r["N"])
        assert r["loss"] < math.log(300)  # every trained model beats the uniform guess over the vocabulary
    # Fit on the two smaller sizes at both M (4 points, 4 parameters), predict the largest at both M.
    assert metrics["fit_points"] == 4
    held = metrics["held_out"]
    assert len(held) == 2 and {h["N"] for h in held} == {max(expected_n)}
    law = load_fit(out)["loss"]
    for h in held:
        pred = float(law.predict(N=[h["N"]], M=[h["M"]])[0])
        assert pred == pytest.approx(h["predicted"]) and h["rel_err"] == pytest.approx(abs(pred - h["actual"]) / h["actual"])
    assert metrics["max_rel_err"] == pytest.approx(max(h["rel_err"] for h in held))
    assert (out / "loss_vs_compute.png").read_bytes()[:4] == b"\x89PNG"
    assert "predicts the largest model's held-out loss" in (out / "README.md").read_text()
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6


def test_scaling_tiny_config_checks():
    with pytest.raises(InputError, match="fewer than the law's 4 parameters"):
        ScalingTestbedConfig(hidden_sizes=[8, 16], token_multipliers=[5.0, 20.0])
    with pytest.raises(InputError, match="multiple of head_dim"):
        ScalingTestbedConfig(hidden_sizes=[12, 16, 24, 32])
    with pytest.raises(InputError, match="does not exist; set data_dir"):
        from trainers.jobs.scaling_tiny import read_texts

        read_texts(DATA, ["nope.txt"])
    recipe = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "scaling_tiny.yaml").read_text())
    from hf_ext.config import parse_config

    config = parse_config(ScalingTestbedConfig, {k: v for k, v in recipe.items() if k != "job"})
    assert len(config.hidden_sizes) >= 4 and len(config.token_multipliers) >= 2 and config.data_dir is None  # the staged data is outside a clone: --data_dir
    with pytest.raises(RecipeError, match="Unknown key"):
        parse_config(ScalingTestbedConfig, {"hidden_size": [8]})
