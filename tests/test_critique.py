"""Critique generation (Critic-RM stage 1): parsing, the consistency filter, Summ / Rank, the
HTTP backend against a real local OpenAI-compatible server (timeouts, retries, resume), and the
real SmolLM2 critiques committed in tests/data/preference."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_dataset

from hf_ext.critique import (
    BackendError,
    OpenAIBackend,
    consistency_filter,
    generate_critiques,
    parse_ranking,
    parse_score,
    rank_critiques,
    summarize_critiques,
    to_training_pairs,
)
from hf_ext.critique.data import alpaca_eval_pairs, hh_rlhf_pairs, split_by_prompt
from hf_ext.errors import InputError
from hf_ext.testing import tiny_llama, tiny_tokenizer
from tests.openai_server import OpenAICompatibleServer

DATA = Path(__file__).parent / "data" / "preference"
PAIRS = Dataset.from_dict({
    "prompt": ["What is the capital of France?", "Name a prime number.", "Spell cat."],
    "chosen": ["Paris.", "Seven.", "c a t"],
    "rejected": ["London.", "Nine.", "k a t"],
})


def test_parse_score_and_ranking():
    assert parse_score("Good.\nScore: 8") == 8.0
    assert parse_score("Score: 3 at first... no wait.\nScore: 6") == 6.0  # the LAST score counts
    assert parse_score("Overall 7/10.") == 7.0
    assert parse_score("**Score:** 9") == 9.0
    assert parse_score("Score: 0") is None and parse_score("Score: 11") is None  # outside 1..10
    assert parse_score("no number here") is None and parse_score(None) is None
    assert parse_ranking("Ranking: 3 > 1 > 2", 3) == [2, 0, 1]
    assert parse_ranking("Ranking: 2", 3) == [1, 0, 2]  # unranked reviews follow in order
    assert parse_ranking("Ranking: 9 > 2 > 2", 2) == [1, 0]  # out-of-range and repeats ignored
    assert parse_ranking("I like them all", 2) is None


def test_consistency_filter_keeps_exactly_the_agreeing_critiques():
    rng = random.Random(0)
    rows = {k: [] for k in ("chosen_critiques", "chosen_scores", "rejected_critiques", "rejected_scores")}
    for r in range(200):
        for side in ("chosen", "rejected"):
            n = rng.randint(1, 4)
            scores = [rng.choice([None, *range(1, 11)]) for _ in range(n)]
            rows[f"{side}_scores"].append([float(s) if s is not None else None for s in scores])
            rows[f"{side}_critiques"].append([f"{side}-{r}-{i}" for i in range(n)])
    ds = Dataset.from_dict({"prompt": ["p"] * 200, "chosen": ["c"] * 200, "rejected": ["r"] * 200, **rows})
    kept, stats = consistency_filter(ds)
    expected, n_unparsable = {}, 0
    for r in range(200):  # reference, written out directly from the definition
        valid = {s: [(c, x) for c, x in zip(rows[f"{s}_critiques"][r], rows[f"{s}_scores"][r]) if x is not None]
                 for s in ("chosen", "rejected")}
        n_unparsable += sum(x is None for s in ("chosen", "rejected") for x in rows[f"{s}_scores"][r])
        if not valid["chosen"] or not valid["rejected"]:
            continue
        mc = sum(x for _, x in valid["chosen"]) / len(valid["chosen"])
        mr = sum(x for _, x in valid["rejected"]) / len(valid["rejected"])
        good_c = [c for c, x in valid["chosen"] if x > mr]
        good_r = [c for c, x in valid["rejected"] if x < mc]
        if good_c and good_r:
            expected[r] = (good_c, good_r)
    got = {int(row["chosen_critiques"][0].split("-")[1]): (row["chosen_critiques"], row["rejected_critiques"]) for row in kept}
    assert got == expected
    assert stats["rows_kept"] == len(expected) and stats["unparsable"] == n_unparsable
    assert stats["critiques_kept"] == sum(len(a) + len(b) for a, b in expected.values())
    assert stats["critiques_in"] == stats["unparsable"] + sum(len(v) for side in ("chosen", "rejected")
                                                              for v in [[x for x in s if x is not None] for s in rows[f"{side}_scores"]])
    pairs = to_training_pairs(kept, per_row=2)
    assert len(pairs) == sum(min(len(a), len(b), 2) for a, b in expected.values())


def _counting_backend(texts_by_side):
    class Backend:
        calls = 0

        def generate(self, conversations, on_result=None):
            out = []
            for i, conv in enumerate(conversations):
                Backend.calls += 1
                text = texts_by_side(conv[-1]["content"])
                if on_result:
                    on_result(i, text)
                out.append(text)
            return out
    return Backend()


def test_generation_resumes_from_cache(tmp_path):
    cache = tmp_path / "cache.jsonl"
    backend = _counting_backend(lambda content: "Bad.\nScore: 2" if "London" in content or "Nine" in content else "Fine.\nScore: 8")
    out, stats = generate_critiques(PAIRS, backend, num_critiques=2, cache_path=cache, progress=False)
    assert stats == {"rows": 3, "critiques": 12, "requests": 12, "unparsable": 0}
    assert out[0]["chosen_scores"] == [8.0, 8.0] and out[0]["rejected_scores"] == [2.0, 2.0]
    assert len(cache.read_text().splitlines()) == 12
    again, stats = generate_critiques(PAIRS, backend, num_critiques=2, cache_path=cache, progress=False)
    assert stats["requests"] == 0 and backend.calls == 12 and again["chosen_critiques"] == out["chosen_critiques"]
    more, stats = generate_critiques(PAIRS, backend, num_critiques=3, cache_path=cache, progress=False)
    assert stats["requests"] == 6  # only the new third sample per response


def test_missing_columns_are_named():
    with pytest.raises(InputError, match="'rejected'"):
        generate_critiques(PAIRS.remove_columns("rejected"), _counting_backend(lambda c: ""), progress=False)
    with pytest.raises(InputError, match="chosen_critiques"):
        consistency_filter(PAIRS)


@pytest.fixture(scope="module")
def tiny_server_model():
    """A tiny local causal LM the test server generates with (greedy, 6 new tokens)."""
    tok, model = tiny_tokenizer(), tiny_llama(seed=4).eval()

    def respond(body):
        text = body["messages"][-1]["content"]
        ids = torch.tensor([tok(text[-200:])["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        critique = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        # The tiny model's text carries no score; the server appends one by a fixed rule
        # (good answers 8, wrong ones 3) so the filter downstream has labels to check.
        score = 3 if any(w in text for w in ("London", "Nine", "k a t")) else 8
        return f"{critique}\nScore: {score}"
    return respond


def test_http_backend_against_local_server_with_tiny_model(tiny_server_model, tmp_path):
    with OpenAICompatibleServer(tiny_server_model) as server:
        backend = OpenAIBackend(base_url=server.base_url, model="tiny", concurrency=4, timeout=30)
        out, stats = generate_critiques(PAIRS, backend, num_critiques=2, cache_path=tmp_path / "c.jsonl", progress=False)
        assert stats["requests"] == 12 and len(server.requests) == 12 and stats["unparsable"] == 0
        assert server.requests[0]["body"]["model"] == "tiny"
        kept, fstats = consistency_filter(out)
        assert fstats["rows_kept"] == 3 and fstats["critiques_kept"] == 12
        # Summ through the same backend (merged critiques get the same rule-based scores).
        summ, sstats = summarize_critiques(kept, backend, progress=False)
        assert sstats["summaries"] == 6 and sstats["rows_kept"] == 3
        assert all(len(c) == 1 for c in summ["chosen_critiques"])


def test_rank_variant_keeps_the_judges_top_critique():
    ds = Dataset.from_dict({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"],
                            "chosen_critiques": [["first", "second", "third"]], "chosen_scores": [[7.0, 8.0, 9.0]],
                            "rejected_critiques": [["only"]], "rejected_scores": [[2.0]]})
    with OpenAICompatibleServer(lambda body: "Ranking: 3 > 1 > 2") as server:
        out, stats = rank_critiques(ds, OpenAIBackend(base_url=server.base_url), top_k=1, progress=False)
        assert len(server.requests) == 1  # a response with one critique needs no ranking
    assert out[0]["chosen_critiques"] == ["third"] and out[0]["chosen_scores"] == [9.0]
    assert out[0]["rejected_critiques"] == ["only"] and stats["unranked"] == 0


def test_http_timeout_is_retried_then_named_and_finished_results_resume(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with OpenAICompatibleServer(lambda body: "ok\nScore: 5", delay=1.0) as slow:
        backend = OpenAIBackend(base_url=slow.base_url, timeout=0.2, max_retries=1, backoff=0.01, concurrency=2)
        with pytest.raises(BackendError, match=r"row 0, chosen response, critique 0.*failed after 2 tries"):
            generate_critiques(PAIRS.select([0]), backend, num_critiques=1, cache_path=cache, progress=False)
        assert len(slow.requests) >= 2  # each request was tried twice (1 retry)
    with OpenAICompatibleServer(lambda body: "ok\nScore: 5", fail_first=2) as flaky:
        # two requests fail (HTTP 500, no retries); the other four finish and are written
        backend = OpenAIBackend(base_url=flaky.base_url, max_retries=0, concurrency=1)
        with pytest.raises(BackendError, match="run again to resume"):
            generate_critiques(PAIRS, backend, num_critiques=1, cache_path=cache, progress=False, chunk_size=6)
        assert len(cache.read_text().splitlines()) == 4
        out, stats = generate_critiques(PAIRS, backend, num_critiques=1, cache_path=cache, progress=False)
        assert stats["requests"] == 2 and len(flaky.requests) == 8  # 6 first, then only the 2 unfinished
        assert out["chosen_scores"] == [[5.0]] * 3


def test_data_converters_on_committed_real_slices():
    ae = load_dataset("json", data_files=str(DATA / "alpaca_eval_gpt4_slice.jsonl.gz"), split="train")
    pairs = alpaca_eval_pairs(ae)
    decided = [p for p in ae["preference"] if p is not None and float(p) in (1.0, 2.0)]
    assert len(pairs) == len(decided)
    first = next(i for i, p in enumerate(ae["preference"]) if p is not None and float(p) == 2.0)
    row = pairs[[i for i, p in enumerate(ae["preference"]) if p is not None and float(p) in (1.0, 2.0)].index(first)]
    assert row["chosen"] == ae[first]["output_2"] and row["rejected"] == ae[first]["output_1"]
    train, test = split_by_prompt(pairs, 0.3)
    assert not set(train["prompt"]) & set(test["prompt"]) and len(train) + len(test) == len(pairs)
    hh = hh_rlhf_pairs(load_dataset("json", data_files=str(DATA / "hh_rlhf_harmless_test_slice.jsonl.gz"), split="train"))
    for row in hh:
        assert row["prompt"].endswith("Assistant:") and row["chosen"] != row["rejected"]


@pytest.mark.parametrize("name", ["alpaca_eval_smollm2_critiques", "alpaca_eval_smollm2_critiques_300"])
def test_real_smollm2_critiques_parse_and_filter(name):
    """Critiques written by SmolLM2-135M-Instruct (benchmarks/reward_critiques.py), committed."""
    ds = load_dataset("json", data_files=str(DATA / f"{name}.jsonl.gz"), split="train")
    for side in ("chosen", "rejected"):  # stored scores are what the parser reads from the stored text
        for texts, scores in zip(ds[f"{side}_critiques"], ds[f"{side}_scores"]):
            assert [parse_score(t) for t in texts] == scores
    kept, stats = consistency_filter(ds)
    assert stats["rows_in"] == len(ds) and 0 < stats["rows_kept"] < len(ds)
    # Reference: a chosen critique agrees when it scores above the mean of the parsable rejected
    # scores, a rejected one when below the chosen mean; rows keep both sides or go.
    expected = []
    for row in ds:
        ch = [s for s in row["chosen_scores"] if s is not None]
        rj = [s for s in row["rejected_scores"] if s is not None]
        if ch and rj:
            keep_ch = [s for s in ch if s > sum(rj) / len(rj)]
            keep_rj = [s for s in rj if s < sum(ch) / len(ch)]
            if keep_ch and keep_rj:
                expected.append((keep_ch, keep_rj))
    assert list(zip(kept["chosen_scores"], kept["rejected_scores"])) == expected
    info = json.loads((DATA / f"{name}.stats.json").read_text())
    assert info["consistency_filter"] == stats
