"""The evaluate job: lm-eval on an in-memory model against log-likelihoods computed by hand,
DCLM centring, the model-index round trip, and bad input."""

import gzip
import json
from pathlib import Path

import pytest
import torch

from hf_ext.curate.dclm_eval import centered
from hf_ext.errors import InputError
from hf_ext.evaluation import LOCAL_TASKS, EvaluateConfig, evaluate_model, local_task_config, resolve_tasks
from hf_ext.evaluation.job import run_evaluate
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

DATA = Path(__file__).parent / "data" / "eval"


def _rows(name):
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _loglik(model, tok, context, continuation):
    """Sum of log p(continuation tokens | everything before), tokens of context+continuation
    split after the context's tokens (the usual definition, as lm-eval's docs state it)."""
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))


def test_every_data_file_has_a_local_task_and_subset():
    assert set(LOCAL_TASKS) == {"arc_easy", "arc_challenge", "boolq", "copa", "commonsense_qa", "lambada_openai", "mmlu_redux",
                                "openbook_qa", "piqa", "siqa", "winogrande", "bbh", "gsm8k"}
    for name in LOCAL_TASKS:
        config = local_task_config(name, DATA)
        assert Path(config["dataset_kwargs"]["data_files"]).is_file()
        assert len(_rows(Path(config["dataset_kwargs"]["data_files"]).name)) <= 30


def test_accuracy_equals_hand_computed_loglikelihoods(tiny_lm, tok):
    model = tiny_lm
    metrics = evaluate_model(model, tok, EvaluateConfig(tasks=["arc_easy", "copa", "winogrande"], eval_data_dir=str(DATA)))
    # ARC-Easy: "{query}\nAnswer:" then " choice"; acc = argmax log-likelihood, acc_norm = argmax per character.
    correct, correct_norm = [], []
    for row in _rows("arc_easy.jsonl.gz"):
        ll = [_loglik(model, tok, row["query"] + "\nAnswer:", " " + c) for c in row["choices"]]
        norm = [v / len(c) for v, c in zip(ll, row["choices"])]
        correct.append(float(max(range(len(ll)), key=ll.__getitem__) == row["gold"]))
        correct_norm.append(float(max(range(len(ll)), key=norm.__getitem__) == row["gold"]))
    arc = metrics["tasks"]["arc_easy"]
    assert metrics["items"]["arc_easy"] == correct
    assert arc["acc"] == pytest.approx(sum(correct) / len(correct), abs=1e-12)
    assert arc["acc_norm"] == pytest.approx(sum(correct_norm) / len(correct_norm), abs=1e-12)
    n = len(correct)
    p = sum(correct) / n
    assert arc["acc_stderr"] == pytest.approx((p * (1 - p) / (n - 1)) ** 0.5, rel=1e-9)  # lm-eval's sample stderr
    # COPA: the premise then " choice".
    copa = [float(max(range(2), key=lambda j: _loglik(model, tok, r["query"], " " + r["choices"][j])) == r["gold"])
            for r in _rows("copa.jsonl.gz")]
    assert metrics["items"]["copa"] == copa
    # WinoGrande, partial scoring: the same continuation after each filled-in context.
    wino = [float(max(range(2), key=lambda j: _loglik(model, tok, r["context_options"][j], " " + r["continuation"])) == r["gold"])
            for r in _rows("winogrande.jsonl.gz")]
    assert metrics["items"]["winogrande"] == wino
    # DCLM centring over the tasks present (v2 baselines: ARC 25%, COPA 50%, WinoGrande 50%).
    dclm = metrics["dclm"]
    assert dclm["centered"]["arc_easy"] == pytest.approx(centered(arc["acc"], 25))
    assert dclm["core"] is None and "piqa" in dclm["missing_core"]
    expected = (centered(arc["acc"], 25) + centered(sum(copa) / len(copa), 50) + centered(sum(wino) / len(wino), 50)) / 3
    assert dclm["core_over_present"] == pytest.approx(expected)


def test_response_nll_matches_hand_computed(tiny_lm, tok, tmp_path):
    model = tiny_lm
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five."}]
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    metrics = evaluate_model(model, tok, EvaluateConfig(tasks=[], response_nll_dataset=str(path), chat_template=False))
    expected = []
    for r in rows:
        # lm-eval moves the context's trailing whitespace ("\n\n") to the continuation's front.
        context = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
        continuation = "\n\n" + r["output"] + tok.eos_token
        n = len(tok(context + continuation, add_special_tokens=False)["input_ids"]) - len(tok(context, add_special_tokens=False)["input_ids"])
        expected.append(-_loglik(model, tok, context, continuation) / n)
    assert metrics["items"]["response_nll"] == pytest.approx(expected, rel=1e-4)
    assert metrics["response_nll"]["mean"] == pytest.approx(sum(expected) / 2, rel=1e-4)
    plain = tiny_tokenizer()
    plain.chat_template = None
    with pytest.raises(InputError, match="chat template"):
        evaluate_model(model, plain, EvaluateConfig(tasks=[], response_nll_dataset=str(path), chat_template=True))
    with pytest.raises(InputError, match="response_column"):
        evaluate_model(model, tok, EvaluateConfig(tasks=[], response_nll_dataset=str(path), chat_template=False, response_column="answer"))


def test_job_writes_metrics_and_model_index_that_round_trips(tiny_lm, tok, tmp_path):
    from huggingface_hub import ModelCard

    model = tiny_lm
    folder = save_tiny(tmp_path / "model", model, tok)
    out = tmp_path / "eval"
    metrics = run_evaluate(EvaluateConfig(model_name_or_path=str(folder), tasks=["copa", "piqa"], eval_data_dir=str(DATA),
                                          limit=10, output_dir=str(out)))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tasks"]["copa"]["acc"] == metrics["tasks"]["copa"]["acc"]
    assert saved["tasks"]["copa"]["n"] == 10
    assert len(json.loads((out / "items.json").read_text())["piqa"]) == 10
    card = ModelCard.load(out / "README.md")
    results = {r.dataset_name: r for r in card.data.eval_results}
    assert results["copa"].metric_value == round(metrics["tasks"]["copa"]["acc"], 4)
    assert results["piqa"].dataset_type == "ybisk/piqa" and results["piqa"].metric_type == "acc"
    again = ModelCard(str(card))  # serialise and parse again: the model-index survives
    assert [(r.dataset_name, r.metric_value) for r in again.data.eval_results] == [(r.dataset_name, r.metric_value) for r in card.data.eval_results]


def test_bad_input(tmp_path):
    (tmp_path / "arc_easy.jsonl.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"piqa\.jsonl\.gz.*eval_data_dir"):
        resolve_tasks(["arc_easy", "piqa"], tmp_path)
    with pytest.raises(InputError, match="arc_challenge, arc_easy"):
        resolve_tasks(["not_a_task"], tmp_path)
    with pytest.raises(InputError, match="eval_data_dir"):
        resolve_tasks(["arc_easy"], None)  # offline (conftest): a local name needs its files
    with pytest.raises(InputError, match="not a folder"):
        EvaluateConfig(eval_data_dir=str(tmp_path / "missing"))
    tok_less = save_tiny(tmp_path / "no_tok", tiny_llama(vocab_size=512))
    with pytest.raises(InputError, match="tokenizer"):
        run_evaluate(EvaluateConfig(model_name_or_path=str(tok_less), tasks=["copa"], eval_data_dir=str(DATA), output_dir=str(tmp_path / "o")))
