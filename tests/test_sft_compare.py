"""The compare job end to end on a tiny model: selections -> sft -> evaluate -> one table,
paired bootstrap CIs, plot and verdict; and the compare recipes parse."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_ext.config import JOBS, import_path, parse_config
from hf_ext.errors import InputError, RecipeError
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer
from trainers.jobs.compare import CompareConfig, paired_bootstrap, run_compare

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "eval"
SFT = dict(bf16=False, gradient_checkpointing=False, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
           per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, seed=0, max_length=96)


def test_paired_bootstrap_against_formula():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 400).astype(float), rng.integers(0, 2, 400).astype(float)
    d = paired_bootstrap(list(a), list(b), 4000, 0)
    assert d["diff"] == pytest.approx((a - b).mean())
    se = (a - b).std(ddof=1) / np.sqrt(a.size)  # the CI's half-width is ~1.96 standard errors
    assert (d["ci_high"] - d["ci_low"]) / 2 == pytest.approx(1.96 * se, rel=0.1)
    same = paired_bootstrap(list(a), list(a), 100, 0)
    assert same == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 400}


def test_compare_end_to_end(tmp_path):
    tok = tiny_tokenizer()
    model = save_tiny(tmp_path / "base", tiny_llama(vocab_size=len(tok)), tok)
    pool = tmp_path / "pool.jsonl"
    rows = [{"instruction": f"Question {i}: say something about {w}.", "input": "", "output": f"{w.capitalize()} " + "is nice. " * (1 + i % 5),
             "category": "open_qa" if i % 2 else "brainstorming"} for i, w in enumerate("apples rivers clouds trees stones birds lamps roads books cups ships maps".split())]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "cmp"
    metrics = run_compare(CompareConfig(
        pool=str(pool), heldout_size=3,
        selections={"longest": {"job": "select", "method": "longest"}, "random": {"job": "select", "method": "random"}},
        selection_defaults={"budget": 4, "compare_methods": [], "tokenizer": str(model), "dataset_license": "other"},
        sft={"model_name_or_path": str(model), "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", **SFT},
        evaluate={"tasks": ["copa", "arc_easy"], "limit": 8, "chat_template": True}, eval_data_dir=str(DATA),
        output_dir=str(out), bootstrap_samples=200))
    assert set(metrics["table"]) == {"base", "longest", "random"}
    assert metrics["selections"]["longest"]["budget"] == 4 and metrics["sft"]["random"]["global_step"] == 2
    assert metrics["table"]["longest"]["response_nll"]["n"] == 3
    # The longest selection really holds the 4 longest selectable responses.
    import datasets

    picked = datasets.load_dataset(str(out / "selections" / "longest"), split="train")
    assert len(picked) == 4
    # Table values are the per-item means the bootstrap resamples.
    items = json.loads((out / "sft" / "longest" / "items.json").read_text())
    assert metrics["table"]["longest"]["tasks"]["copa"]["score"] == pytest.approx(np.mean(items["copa"]))
    comp = metrics["comparisons"]["longest"]["tasks"]["copa"]
    base_items = json.loads((out / "sft" / "random" / "items.json").read_text())
    assert comp["diff"] == pytest.approx(np.mean(items["copa"]) - np.mean(base_items["copa"]))
    assert len(metrics["verdict"]) == 4  # base and longest, each on accuracy and response NLL
    assert [v.split(":")[0] for v in metrics["verdict"]] == ["base vs random"] * 2 + ["longest vs random"] * 2
    card = (out / "README.md").read_text()
    assert "Verdict" in card and "| longest |" in card and "comparison.png" in card
    assert (out / "comparison.png").stat().st_size > 1000
    assert "held out" in card and not list(tmp_path.glob(".cmp.tmp-*"))


def _markdown_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables, current = tables + [current], []
    return tables


@pytest.mark.parametrize("tasks", [[], ["copa"]])
def test_card_tables_have_one_cell_per_column(tasks):
    # compare_less_cpu scores the response NLL only: no task columns, no macro mean.
    from trainers.jobs.compare import _table_markdown

    nll = lambda m: {"mean": m, "stderr": 0.01, "n": 3}
    row = lambda m: {"tasks": {t: {"score": 0.5, "stderr": 0.1, "metric": "acc"} for t in tasks}, "response_nll": nll(m),
                     "macro_mean": 0.5 if tasks else None}
    diff = {"diff": -0.1, "ci_low": -0.2, "ci_high": 0.0, "n": 3}
    comp = {"tasks": {t: diff for t in tasks}, "response_nll": diff, **({"macro_mean": diff} if tasks else {})}
    text = _table_markdown({"base": row(1.3), "less": row(1.1), "random": row(1.2)}, tasks, {"base": comp, "less": comp}, "random")
    scores, diffs = _markdown_tables(text)
    for table, rows in ((scores, 3), (diffs, 2)):
        assert len(table) == 2 + rows and all(c for c in table[0])
        assert {len(r) for r in table} == {len(table[0])} and set(table[1]) == {"---"}
    assert scores[0] == ["model", *(["copa (acc)", "macro mean"] if tasks else []), "response NLL ↓"]
    assert scores[3] == ["less", *(["0.500 ± 0.100", "0.500"] if tasks else []), "1.1000 ± 0.0100"]
    assert diffs[3][-1] == "-0.1000 [-0.2000, +0.0000]"


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="selections"):
        CompareConfig(selections={})
    with pytest.raises(InputError, match="job:. one of"):
        CompareConfig(selections={"a": {"method": "random"}})
    with pytest.raises(InputError, match="baseline 'random'"):
        CompareConfig(selections={"a": {"job": "select", "method": "longest"}})
    with pytest.raises(RecipeError, match="Unknown key 'budgett'"):
        CompareConfig(selections={"random": {"job": "select", "budgett": 3}})
    with pytest.raises(InputError, match="takes only `path`"):
        CompareConfig(selections={"random": {"job": "existing", "path": "x", "method": "random"}})
    assert CompareConfig(selections={"random": {"job": "existing", "path": "x"}}).selections["random"]["path"] == "x"
    with pytest.raises(InputError, match="sft.dataset"):
        CompareConfig(selections={"random": {"job": "select"}}, sft={"dataset": "x"})


@pytest.mark.parametrize("name", ["compare_selection_smollm2.yaml", "compare_selection_smollm2_quick.yaml", "compare_less_cpu.yaml", "compare_selection_llama3.yaml",
                                  "compare_less_llama2.yaml"])
def test_compare_recipes_parse(name):
    values = yaml.safe_load((REPO / "recipes" / name).read_text())
    job = values.pop("job")
    assert job == "compare"
    config = parse_config(import_path(JOBS[job].config), values)
    assert config.baseline in config.selections


def test_embedding_scores_aggregation():
    from hf_ext.select.embedding_target import embedding_scores

    rng = np.random.default_rng(0)
    pool, target = rng.normal(size=(5, 8)), rng.normal(size=(6, 8))
    subtasks = ["a", "a", "b", "b", "b", "c"]
    sims = pool @ target.T
    expected = np.max([sims[:, :2].mean(1), sims[:, 2:5].mean(1), sims[:, 5]], axis=0)
    assert np.allclose(embedding_scores(pool, target, subtasks), expected)
    assert np.allclose(embedding_scores(pool, target), sims.mean(1))


def test_embedding_select_job_picks_the_target_like_rows(tmp_path):
    from hf_ext.select.embedding_target import EmbeddingSelectConfig, run_embedding_select

    math = [{"instruction": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?", "input": "",
             "output": f"He has {i} + {i + 2} = {2 * i + 2} apples. #### {2 * i + 2}", "source": "math"} for i in range(3)]
    other = [{"instruction": t, "input": "", "output": o, "source": "chat"} for t, o in [
        ("Write a haiku about autumn leaves.", "Red leaves drift and fall / quiet paths in golden light / the year breathes out slow"),
        ("Who painted the Mona Lisa?", "Leonardo da Vinci painted it."), ("Translate 'good morning' to Spanish.", "Buenos días."),
        ("Name three programming languages.", "Python, Rust and Go."), ("What is the capital of France?", "Paris."),
        ("Describe a cat in one sentence.", "A cat is a small, curious animal that loves naps.")]]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in other[:3] + math + other[3:]), encoding="utf-8")
    target = tmp_path / "target.jsonl"
    target.write_text(json.dumps({"question": "Sara has 5 pencils and gets 4 more. How many pencils now?",
                                  "answer": "5 + 4 = 9 pencils. #### 9"}) + "\n", encoding="utf-8")
    out = tmp_path / "emb"
    metrics = run_embedding_select(EmbeddingSelectConfig(dataset=str(pool), target_dataset=str(target), target_split="train",
                                                         budget=3, percent=None, source_column="source", output_dir=str(out)))
    assert metrics["method"] == "embedding" and metrics["selected_source_counts"] == {"math": 3}
    assert json.loads((out / "metrics.json").read_text())["budget"] == 3
    with pytest.raises(InputError, match="target_response_column"):
        run_embedding_select(EmbeddingSelectConfig(dataset=str(pool), target_dataset=str(target), target_split="train",
                                                   target_response_column="solution", output_dir=str(tmp_path / "x")))
