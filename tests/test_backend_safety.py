"""Judge scores on the 0–5 scale only, a selection job that survives "nothing passed", the
critique cache keyed on the backend, OpenAIBackend's deadline / Retry-After / content checks,
and credentials kept out of errors and cards (issue 13 items 9, 10, 14, 15)."""

import json
import time

import pytest
from datasets import Dataset
from openai_server import OpenAICompatibleServer

from hf_ext.critique.backends import BackendError, OpenAIBackend, TransformersBackend
from hf_ext.critique.generate import generate_critiques
from hf_ext.errors import redact
from hf_ext.select.judge import JudgeScorer, parse_alpagasus_score
from hf_ext.select.selectors import get_selector

HI = [[{"role": "user", "content": "hi"}]]


# -- item 9: judge scores are range-checked -------------------------------------------------------
@pytest.mark.parametrize("text", ["99", "inf", "nan", "-3", "5.5", "Score: 42", "1e9\nexcellent"])
def test_off_scale_judge_scores_are_unparsable(text):
    assert parse_alpagasus_score(text) == -1.0


@pytest.mark.parametrize("text, score", [("0", 0.0), ("5", 5.0), ("4.5\nok", 4.5), ("Score: 5", 5.0)])
def test_on_scale_scores_still_parse(text, score):
    assert parse_alpagasus_score(text) == score


def test_a_judge_answering_99_is_not_selected():
    answers = {"a": "99", "b": "4.6", "c": "inf", "d": "4.5"}
    with OpenAICompatibleServer(lambda body: answers[body["messages"][1]["content"].split("Response: ")[1][0]]) as server:
        scorer = JudgeScorer(backend=OpenAIBackend(base_url=server.base_url, max_retries=0), input_column=None)
        ds = Dataset.from_dict({"instruction": ["q"] * 4, "output": ["a", "b", "c", "d"]}).map(scorer, batched=True)
    assert ds["judge_score"] == [-1.0, 4.6, -1.0, 4.5]
    assert get_selector("alpagasus").select(ds, 4, threshold=4.5) == [1, 3]


def _pool(path, n=10):
    rows = [{"instruction": f"Question {i}?", "input": "", "output": "word " * (i + 1), "category": "qa"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_selection_job_finishes_when_no_example_passes_the_threshold(tmp_path):
    from hf_ext.select.pipeline import SelectionConfig, run_selection

    with OpenAICompatibleServer(lambda body: "3\nmediocre") as server:
        config = SelectionConfig(dataset=_pool(tmp_path / "pool.jsonl"), method="alpagasus", compare_methods=["random"],
                                 budget=3, judge_backend="openai", judge={"base_url": server.base_url},
                                 output_dir=str(tmp_path / "out"))
        metrics = run_selection(config)
        assert len(server.requests) == 10  # every judge call made once, and the job still finished
    assert metrics["selected_size"] == 0
    assert metrics["judge"] == {"scored": 10, "unparsable": 0, "threshold": 4.5, "at_or_above_threshold": 0, "max_score": 3.0}
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["judge"]["max_score"] == 3.0 and (tmp_path / "out" / "selection.png").is_file()


# -- item 10: the critique cache is keyed on the backend --------------------------------------------
class _Named:
    def __init__(self, name, temperature=0.0):
        self.name, self.temperature, self.calls = name, temperature, 0

    def identity(self):
        return {"model": self.name, "temperature": self.temperature}

    def generate(self, conversations, on_result=None):
        self.calls += len(conversations)
        return [f"{self.name} says fine.\nScore: 7" for _ in conversations]


def test_critique_cache_is_not_reused_across_backends(tmp_path):
    ds = Dataset.from_dict({"prompt": ["Hi"], "chosen": ["Hello!"], "rejected": ["Go away."]})
    cache = tmp_path / "critiques.jsonl"
    out, stats = generate_critiques(ds, _Named("model-a"), num_critiques=2, cache_path=cache, progress=False)
    assert stats["requests"] == 4
    again, stats = generate_critiques(ds, _Named("model-a"), num_critiques=2, cache_path=cache, progress=False)
    assert stats["requests"] == 0 and again[0]["chosen_critiques"] == out[0]["chosen_critiques"]
    for other in (_Named("model-b"), _Named("model-a", temperature=0.7)):
        new, stats = generate_critiques(ds, other, num_critiques=2, cache_path=cache, progress=False)
        assert stats["requests"] == 4 and other.calls == 4
        assert new[0]["chosen_critiques"] == [f"{other.name} says fine.\nScore: 7"] * 2


def test_backend_identities_name_model_server_and_sampling():
    base = OpenAIBackend(base_url="http://a:1/v1", model="m")
    changed = [OpenAIBackend(base_url="http://b:1/v1", model="m"), OpenAIBackend(base_url="http://a:1/v1", model="n"),
               OpenAIBackend(base_url="http://a:1/v1", model="m", temperature=0.5),
               OpenAIBackend(base_url="http://a:1/v1", model="m", max_new_tokens=7)]
    assert all(c.identity() != base.identity() for c in changed)
    assert OpenAIBackend(base_url="http://a:1/v1", model="m", concurrency=2, timeout=5).identity() == base.identity()
    local = TransformersBackend(model="x")
    assert local.identity() != TransformersBackend(model="x", temperature=0.3).identity() != TransformersBackend(model="y").identity()


# -- item 15: deadline, Retry-After, content type ---------------------------------------------------
def test_a_dripping_server_cannot_hold_a_request_past_the_timeout():
    with OpenAICompatibleServer(lambda body: "5", drip=0.1) as server:  # ~200 bytes: ~20 s if we waited
        backend = OpenAIBackend(base_url=server.base_url, timeout=1.0, max_retries=0)
        start = time.monotonic()
        with pytest.raises(BackendError, match="deadline"):
            backend.generate(HI)
        assert time.monotonic() - start < 2.5


def test_retry_after_is_honoured():
    with OpenAICompatibleServer(lambda body: "5", fail_first=1, fail_status=429, fail_headers={"Retry-After": "1"}) as server:
        backend = OpenAIBackend(base_url=server.base_url, max_retries=1, backoff=0.0)
        start = time.monotonic()
        assert backend.generate(HI) == ["5"]
        assert 0.9 <= time.monotonic() - start < 5


@pytest.mark.parametrize("content", [None, ["5"], 5, {"text": "5"}])
def test_non_string_content_is_an_error(content):
    with OpenAICompatibleServer(lambda body: content) as server:
        backend = OpenAIBackend(base_url=server.base_url, max_retries=0)
        with pytest.raises(BackendError, match="message.content is .* not a string"):
            backend.generate(HI)


# -- item 14: credentials never printed or published -----------------------------------------------
def test_redact_patterns():
    text = redact("GET https://bob:hunter2@api.example.com/v1?api-version=1&key=abc123 failed: "
                  "Incorrect API key provided: Bearer sk-proj-AbCdEf0123456789; token hf_abcdefghijklmnopqrstuvwx")
    for secret in ("hunter2", "abc123", "sk-proj-AbCdEf0123456789", "hf_abcdefghijklmnopqrstuvwx"):
        assert secret not in text
    assert "api.example.com/v1?api-version=1&key=***" in text


def test_server_errors_echoing_the_key_are_redacted(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789abcdef")
    with OpenAICompatibleServer(lambda body: "5", fail_first=1, fail_status=401,
                                fail_message="Incorrect API key: Bearer sk-live-0123456789abcdef") as server:
        url = server.base_url.replace("http://", "http://alice:pa55word@") + "?key=topsecret"
        with pytest.raises(BackendError) as err:
            OpenAIBackend(base_url=url, max_retries=0).generate(HI)
    message = str(err.value)
    assert "HTTP 401" in message and "chat/completions" in message
    for secret in ("sk-live-0123456789abcdef", "pa55word", "topsecret"):
        assert secret not in message


def test_card_and_metrics_hold_no_credentials(tmp_path, monkeypatch):
    from hf_ext.select.pipeline import SelectionConfig, run_selection

    with OpenAICompatibleServer(lambda body: "5") as server:
        url = server.base_url.replace("http://", "http://alice:pa55word@") + "?key=topsecret"
        config = SelectionConfig(dataset=_pool(tmp_path / "pool.jsonl", 4), method="alpagasus", compare_methods=[],
                                 budget=2, judge_backend="openai", judge={"base_url": url}, output_dir=str(tmp_path / "out"))
        run_selection(config)
        assert server.requests[0]["headers"]["Authorization"].startswith("Basic ")  # userinfo still used to log in
    for name in ("README.md", "metrics.json"):
        text = (tmp_path / "out" / name).read_text()
        assert "pa55word" not in text and "topsecret" not in text
    assert "?key=***" in (tmp_path / "out" / "README.md").read_text()


def test_every_jobs_metrics_json_is_redacted(tmp_path):
    from dataclasses import dataclass

    from hf_ext.jobs import job_output

    @dataclass
    class Config:
        output_dir: str

    with job_output(Config(str(tmp_path / "out"))) as out:
        out.metrics = {"settings": {"critique_base_url": "https://bob:hunter2@api.example.com/v1?key=s3cr3t"},
                       "log": ["server said: Bearer sk-abcdefgh12345678"]}
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "hunter2" not in text and "s3cr3t" not in text and "sk-abcdefgh12345678" not in text
    assert json.loads(text)["settings"]["critique_base_url"] == "https://***@api.example.com/v1?key=***"


def test_log_lines_are_redacted(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        logging.getLogger("hf_ext.critique.generate").warning("retrying %s", "https://bob:hunter2@h/v1?key=s3cr3t")
    assert caplog.records and "hunter2" not in caplog.text and "s3cr3t" not in caplog.text
    assert "https://***@h/v1?key=***" in caplog.text


def test_cli_output_is_redacted(tmp_path, monkeypatch, capsys):
    from hf_ext.cli import main
    from hf_ext.config import JOBS, register_job

    (tmp_path / "leaky_job.py").write_text(
        "from dataclasses import dataclass, field\n"
        "@dataclass\nclass LeakyConfig:\n    url: str = field(default='', metadata={'help': 'A URL.'})\n"
        "def run(c):\n    return {'method': c.url}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(JOBS, "leaky", JOBS["select"])
    register_job("leaky", "leaky_job:LeakyConfig", "leaky_job:run")
    (tmp_path / "r.yaml").write_text("job: leaky\nurl: https://bob:hunter2@h/v1?key=s3cr3t\n")
    assert main(["run", str(tmp_path / "r.yaml")]) == 0
    out = capsys.readouterr().out
    assert "https://***@h/v1?key=***" in out and "hunter2" not in out and "s3cr3t" not in out
