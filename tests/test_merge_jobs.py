"""The merge CLI and the two replication jobs (time vectors, X-ELM), at toy sizes on committed real data."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_ext.cli import main
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

DATA = Path(__file__).parent / "data" / "merge"


def test_hf_ext_merge_recipe_with_flag_override(tmp_path, capsys):
    tok = tiny_tokenizer()
    base, a, b = (save_tiny(tmp_path / n, tiny_llama(seed=s, tokenizer=tok), tok) for n, s in (("base", 0), ("a", 1), ("b", 2)))
    recipe = tmp_path / "ties.yaml"
    recipe.write_text(yaml.safe_dump({
        "job": "merge", "method": "ties", "models": [str(a), str(b)], "base_model": str(base), "method_options": {"density": 0.5},
        "input_hub_ids": ["org/a", "org/b"], "base_hub_id": "org/base", "output_dir": str(tmp_path / "out"),
    }))  # fmt: skip
    assert main(["merge", str(recipe), "--method_options", "{density: 1.0}"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["method"] == "ties"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "- org/base\n- org/a\n- org/b" in card and "| density | 1.0 |" in card
    # density 1 → no trimming: TIES of two task vectors with elected signs, checked on one tensor
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))["model.norm.weight"]
    sb, sa, s2 = (load_file(str(p / "model.safetensors"))["model.norm.weight"] for p in (base, a, b))
    assert torch.equal(merged, sb)  # norms are all ones in every tiny model: zero task vectors
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"job": "merge", "models": [str(a)], "method": "linear", "densty": 0.2}))
    assert main(["merge", str(bad)]) == 2
    assert "Unknown key 'densty'" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value"), [("density", 0.2), ("majority_sign_method", "total"), ("scale", 0.5),
                                            ("normalize", False), ("ties", True)])  # fmt: skip
def test_merge_method_settings_moved_into_method_options(tmp_path, capsys, key, value):
    """The keys MergeConfig used to mirror from the methods are refused, in a recipe and as a flag, naming
    method_options; method_options is checked by the method's dataclass (names and types) before any work."""
    recipe = tmp_path / "old.yaml"
    recipe.write_text(yaml.safe_dump({"job": "merge", "method": "ties", "models": ["a"], key: value,
                                      "output_dir": str(tmp_path / "out")}))  # fmt: skip
    assert main(["merge", str(recipe)]) == 2
    assert f"`{key}` moved: use method_options: {{{key}: ...}}" in capsys.readouterr().err
    recipe.write_text(yaml.safe_dump({"job": "merge", "method": "ties", "models": ["a"], "output_dir": str(tmp_path / "out")}))
    assert main(["merge", str(recipe), f"--{key}", str(value)]) == 2
    assert f"`{key}` moved: use method_options" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_merge_method_options_checked_by_the_methods_dataclass(tmp_path):
    from hf_ext.config import parse_config
    from hf_ext.errors import InputError
    from hf_ext.merge.job import MergeConfig
    from hf_ext.merge.methods import DareMerge, TiesMerge

    values = {"models": ["a"], "method": "ties", "output_dir": str(tmp_path / "out")}
    config = parse_config(MergeConfig, {**values, "method_options": {"density": 1, "majority_sign_method": "frequency"}})
    assert config.merge_method() == TiesMerge(density=1.0, majority_sign_method="frequency")
    flagged = parse_config(MergeConfig, values, ["--method_options", '{"density": 0.3}'])  # JSON or YAML text
    assert flagged.method_options == {"density": 0.3} and flagged.merge_method().density == 0.3
    both = parse_config(MergeConfig, {**values, "method_options": {"density": 0.5, "scale": 0.7}}, ["--method_options", "{density: 1}"])
    assert both.merge_method() == TiesMerge(density=1.0, scale=0.7)  # the flag's keys update the recipe's
    assert parse_config(MergeConfig, {**values, "method": "dare", "seed": 7}).merge_method() == DareMerge(seed=7)
    assert parse_config(MergeConfig, {**values, "method": "dare", "seed": 7, "method_options": {"seed": 3}}).merge_method().seed == 3
    for options, message in [({"densty": 0.2}, "no setting 'densty'. Its settings: ['convention', 'density'"),
                             ({"density": "most"}, "'method_options.density' must be float | list[float]"),
                             ({"majority_sign_method": "most"}, "'method_options.majority_sign_method' must be one of ['total', 'frequency']")]:  # fmt: skip
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("|", r"\|")):
            parse_config(MergeConfig, {**values, "method_options": options})
    with pytest.raises(InputError, match="'method_options' must be a mapping"):
        parse_config(MergeConfig, values, ["--method_options", "[0.3]"])


def test_time_vector_job_endpoints_match_year_models(tmp_path):
    from trainers.jobs.time_vectors import TimeVectorExperimentConfig, run_time_vectors

    data = str(DATA / "wmt_newstest_en_2012_2014_2016_150.jsonl.gz")
    m = run_time_vectors(TimeVectorExperimentConfig(
        data_file=data, pretrain_file=data, pretrain_chars=20_000, years=[2012, 2014, 2016], train_sentences=100,
        eval_sentences=50, vocab_size=400, hidden_size=32, num_layers=1, pretrain_steps=4, finetune_steps=3,
        batch_size=4, block_size=32, alphas=[0.0, 0.5, 1.0], output_dir=str(tmp_path / "tv"), base_hub_id="org/tiny-base",
    ))  # fmt: skip
    for year in ("2012", "2014", "2016"):  # α = 1 is the 2012 model, α = 0 the 2016 model
        assert m["interpolation_loss"]["1"][year] == pytest.approx(m["year_model_loss"]["2012"][year], abs=1e-5)
        assert m["interpolation_loss"]["0"][year] == pytest.approx(m["year_model_loss"]["2016"][year], abs=1e-5)
    assert m["interp_best_loss_mid"] <= m["endpoint_best_loss_mid"] + 1e-6  # the α grid includes both ends
    assert m["interp_best_interior_loss_mid"] == pytest.approx(m["interpolation_loss"]["0.5"]["2014"])
    assert (tmp_path / "tv" / "time_vectors.png").is_file()
    card = (tmp_path / "tv" / "time_vectors" / "2014" / "README.md").read_text()
    assert "base_model: org/tiny-base" in card and "period-2014" in card
    # The root card: the metrics' numbers in its tables and verdict, metadata that parses.
    from huggingface_hub import ModelCard

    root = ModelCard.load(tmp_path / "tv" / "README.md")
    assert root.data.base_model == "org/tiny-base" and root.data.base_model_relation == "adapter" and "time-vectors" in root.data.tags
    interp = m["interpolation_loss"]["0.5"]
    assert f"| 0.5 | {interp['2012']:.4f} | {interp['2014']:.4f} | {interp['2016']:.4f} |" in root.text
    year_2014 = m["year_model_loss"]["2014"]
    assert f"| fine-tuned on 2014 | {year_2014['2012']:.4f} | {year_2014['2014']:.4f} | {year_2014['2016']:.4f} |" in root.text
    assert f"{m['interp_best_loss_mid']:.4f} against {m['endpoint_best_loss_mid']:.4f}" in root.text and "time_vectors.png" in root.text


def test_xelm_job_single_expert_and_balanced_clusters(tmp_path):
    from trainers.jobs.xelm import XELMConfig, run_xelm

    m = run_xelm(XELMConfig(
        data_file=str(DATA / "flores200_devtest_5lang_80.jsonl.gz"), languages=["eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl"],
        train_sentences=50, eval_sentences=20, experts=[1, 2], vocab_size=400, hidden_size=32, num_layers=1,
        seed_steps=3, expert_steps=4, batch_size=4, block_size=32, output_dir=str(tmp_path / "x"),
    ))  # fmt: skip
    one = m["by_k"]["1"]
    for lang, value in one["bayesian_ppl"].items():  # one expert: the ensemble is that expert
        assert value == pytest.approx(one["expert_ppl"][0][lang], rel=1e-5)
    two = m["by_k"]["2"]
    assert [sum(c.values()) for c in two["cluster_composition"]] == [100, 100]  # balanced: 200 sentences / 2
    assert set(m["xelm_ppl"]) == set(m["dense_ppl"]) == {"eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl"}
    assert all(math.isfinite(v) and v > 1 for v in m["xelm_ppl"].values())
    assert m["xelm_k"] == 2 and (tmp_path / "x" / "xelm.png").is_file()
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "x" / "README.md")
    assert "x-elm" in card.data.tags and card.data.base_model is None  # the seed was trained here: no Hub id to name
    langs = ["eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl"]
    dense = " | ".join(f"{m['dense_ppl'][lang]:.4f}" for lang in langs)
    assert f"| dense (compute-matched) | {dense} | {m['mean_ppl']['dense']:.4f} |" in card.text
    assert f"X-ELM k=2 {m['mean_ppl']['xelm_k2']:.2f} vs dense {m['mean_ppl']['dense']:.2f}" in card.text
    assert card.text.count("| 2 | ") == 2  # one composition row per cluster of k = 2


def test_replication_seed_loads_through_the_causal_lm_loader(tmp_path):
    from hf_ext.errors import InputError
    from trainers.jobs.common import load_seed

    tok = tiny_tokenizer()
    model = tiny_llama(tokenizer=tok)
    loaded, tokenizer = load_seed(str(save_tiny(tmp_path / "seed", model, tok)))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert tokenizer.get_vocab() == tok.get_vocab()
    with pytest.raises(InputError, match="The seed '.*missing' does not exist"):  # the error says which model
        load_seed(str(tmp_path / "missing"))
