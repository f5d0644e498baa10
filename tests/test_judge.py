"""AlpaGasus judge: the parser on real-looking judge outputs, the prompt, and both backends
(a local transformers model and an OpenAI-compatible server on 127.0.0.1)."""

import pytest
import torch
from datasets import Dataset
from openai_server import OpenAICompatibleServer

from hf_ext.critique.backends import BackendError, OpenAIBackend, TransformersBackend
from hf_ext.errors import InputError
from hf_ext.select.judge import ALPAGASUS_SYSTEM_PROMPT, JudgeScorer, alpagasus_conversation, parse_alpagasus_score


@pytest.mark.parametrize(
    "text, score",
    [
        ("4.5\nThe response accurately answers the question about Paul Newman.", 4.5),
        ("5\n\nThe assistant's answer is correct and complete.", 5.0),
        ("  3.0  \nPartially correct: the second episode is wrong.", 3.0),
        ("Score: 4\nThe answer is mostly accurate.", 4.0),
        ("I would rate this response.\nScore: 2.5 because it misses the input.", 2.5),
        ("The response deserves a score of 3 out of 5.", -1.0),  # only "Score: x" counts, as in the reference
        ("Assistant 1: 4\nAssistant 2: 3", -1.0),
        ("This answer is fine.", -1.0),
        ("", -1.0),
    ],
)
def test_parser_on_real_looking_outputs(text, score):
    assert parse_alpagasus_score(text) == score


def test_parser_garbage_types():
    assert parse_alpagasus_score(None) == -1.0


def test_prompt_has_the_paper_wording_and_the_example():
    conv = alpagasus_conversation("Name a colour.", "", "Blue.")
    assert conv[0] == {"role": "system", "content": ALPAGASUS_SYSTEM_PROMPT}
    user = conv[1]["content"]
    assert "###Instruction: Name a colour." in user and "### Response: Blue." in user
    assert "rate according to the accuracy" in user and "scale of 0 to 5" in user


def _scored_responder(body):
    # A deterministic "judge": rates long answers 4.5 and short ones with a "Score:" line.
    user = body["messages"][1]["content"]
    response = user.split("### Response: ", 1)[1].split("\n\nPlease rate", 1)[0]
    return "4.5\nDetailed and accurate." if len(response.split()) > 3 else "The answer is terse.\nScore: 2"


def test_openai_backend_end_to_end_through_datasets_map(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-secret")
    ds = Dataset.from_dict({
        "instruction": ["Explain rain.", "Capital of France?"],
        "input": ["", ""],
        "output": ["Water vapour condenses into droplets that fall.", "Paris."],
    })
    with OpenAICompatibleServer(_scored_responder) as server:
        backend = OpenAIBackend(base_url=server.base_url, model="judge-model", api_key_env="MY_JUDGE_KEY", max_new_tokens=7)
        out = ds.map(JudgeScorer(backend=backend), batched=True)
    assert out["judge_score"] == [4.5, 2.0]
    assert out["judge_raw"][1].endswith("Score: 2")
    first = server.requests[0]
    assert first["headers"]["Authorization"] == "Bearer sk-test-secret"
    assert first["body"]["model"] == "judge-model" and first["body"]["max_tokens"] == 7
    assert first["body"]["messages"][0]["content"] == ALPAGASUS_SYSTEM_PROMPT
    # The key is read from the environment at request time and never stored on the object.
    assert "sk-test-secret" not in repr(backend) and "sk-test-secret" not in str(backend.__dict__)


def test_openai_backend_retries_server_errors():
    with OpenAICompatibleServer(lambda body: "5", fail_first=2) as server:
        backend = OpenAIBackend(base_url=server.base_url, max_retries=2, backoff=0.01)
        assert backend.generate([[{"role": "user", "content": "hi"}]]) == ["5"]
    assert len(server.requests) == 3


def test_openai_backend_gives_up_with_a_clear_error():
    with OpenAICompatibleServer(lambda body: "5", fail_first=10) as server:
        backend = OpenAIBackend(base_url=server.base_url, model="m", max_retries=1, backoff=0.01)
        with pytest.raises(BackendError, match=r"chat/completions \(model 'm'\) failed after 2 tries: HTTP 500"):
            backend.generate([[{"role": "user", "content": "hi"}]])


def test_openai_backend_timeout():
    with OpenAICompatibleServer(lambda body: "5", delay=1.0) as server:
        backend = OpenAIBackend(base_url=server.base_url, timeout=0.2, max_retries=0)
        with pytest.raises(BackendError, match="ReadTimeout"):
            backend.generate([[{"role": "user", "content": "hi"}]])


def test_openai_backend_rejects_bad_url():
    with pytest.raises(InputError, match="must start with http"):
        OpenAIBackend(base_url="localhost:8000")


def test_transformers_backend_batched_equals_one_by_one(tmp_path):
    """Left-padded batched greedy generation gives what each conversation gets alone."""
    from hf_ext.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(tokenizer=tok, seed=3)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    convs = [  # longest first: the backend batches by length and must answer in this order
        [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": "Rate this much longer answer now, please."}],
        [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": "Rate this much longer answer now."}],
        [{"role": "user", "content": "Rate this answer."}],
    ]
    seen = {}
    batched = TransformersBackend(model=str(tmp_path), max_new_tokens=6, batch_size=2, device="cpu").generate(
        convs, on_result=lambda i, text: seen.setdefault(i, text))
    single = TransformersBackend(model=str(tmp_path), max_new_tokens=6, batch_size=1, device="cpu").generate(convs)
    assert batched == single
    assert seen == dict(enumerate(batched))
    # Reference: plain greedy generate on the unpadded prompt.
    prompt = tok.apply_chat_template(convs[1], tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        ref = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert batched[1] == tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_judge_scorer_missing_and_bad_columns():
    scorer = JudgeScorer(backend=OpenAIBackend())
    with pytest.raises(InputError, match="needs a column 'output'"):
        scorer({"instruction": ["x"], "input": [""]})
    with pytest.raises(InputError, match="Column 'instruction' must hold strings"):
        scorer({"instruction": [None], "input": [""], "output": ["y"]})


def test_selection_job_builds_the_judge_from_its_judge_mapping():
    """`judge` is the backend's own fields, over the job's defaults (model, 32 new tokens, the job's seed)."""
    from hf_ext.critique.backends import OpenAIBackend, TransformersBackend
    from hf_ext.select.featurize import FEATURIZERS
    from hf_ext.select.pipeline import SelectionConfig

    served = SelectionConfig(judge_backend="openai", seed=7,
                             judge={"base_url": "http://localhost:9/v1", "concurrency": 3, "api_key_env": "MY_JUDGE_KEY"})
    backend = served.judge_settings()
    assert type(backend) is OpenAIBackend
    assert (backend.base_url, backend.concurrency, backend.api_key_env) == ("http://localhost:9/v1", 3, "MY_JUDGE_KEY")
    assert (backend.model, backend.max_new_tokens) == ("HuggingFaceTB/SmolLM2-135M-Instruct", 32)
    local = SelectionConfig(judge_backend="transformers", seed=7, judge={"batch_size": 2, "max_new_tokens": 5})
    scorer = FEATURIZERS["judge_score"](local)
    assert type(scorer.backend) is TransformersBackend
    assert (scorer.backend.batch_size, scorer.backend.max_new_tokens, scorer.backend.seed) == (2, 5, 7)
    assert SelectionConfig(judge_backend="transformers", seed=7, judge={"seed": 1}).judge_settings().seed == 1


def test_method_options_reach_the_selector():
    """`method_options.alpagasus.threshold` is select_alpagasus's `threshold`: scores 3.5 and 4 pass at 3, not at 4.5."""
    from hf_ext.select.pipeline import SelectionConfig
    from hf_ext.select.selectors import get_selector

    scores = {"judge_score": [3.5, 5.0, 2.0, 4.0, -1.0]}
    default = SelectionConfig().selector_options("alpagasus")
    lowered = SelectionConfig(method_options={"alpagasus": {"threshold": 3}}).selector_options("alpagasus")
    assert default == {"threshold": 4.5} and lowered == {"threshold": 3.0}
    assert get_selector("alpagasus").select(scores, 4, **default) == [1]
    assert get_selector("alpagasus").select(scores, 4, **lowered) == [1, 3, 0]
    assert SelectionConfig(method_options={"sae_simscale": {"similarity": "cosine"}}).selector_options("sae_simscale") == {
        "similarity": "cosine"}
