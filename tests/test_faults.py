"""Faults: a SIGKILL in the middle of a job's write, for every job that writes a folder, and a
resume from a half-written Trainer checkpoint.

Each kill test forks the test process (the imports are already loaded, so a child costs no
start-up); in the child a watcher thread sends SIGKILL to its own process as soon as the first
file appears in the job's temporary folder (``.NAME.tmp-PID-*``), a real kill mid-write with no
``finally`` and no cleanup (or, for a writer faster than the watcher, at the point where the
finished temporary folder would move into place). Then:

1. the previous output folder (an earlier hf_ext run's, with its marker) is byte-for-byte intact;
2. the killed run's temporary folder is still there (the kill really happened mid-write);
3. the next run of the same job succeeds, its folder holds exactly its own files (the previous
   run's are gone, a marker and ``metrics.json`` are there), and no temporary folder is left.
"""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hf_ext.config import JOBS, import_path, parse_config
from hf_ext.outputs import MARKER, SafeResumeMixin, last_complete_checkpoint
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork")

TESTS = Path(__file__).parent
POOL_ROWS = [{"instruction": f"Question {i}?", "input": "", "output": "An answer " + "word " * (i % 7 + 1), "category": "qa"}
             for i in range(24)]  # fmt: skip
CPU = {"use_cpu": True, "report_to": "none", "bf16": False, "save_strategy": "no", "logging_steps": 1, "seed": 0}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tiny local inputs shared by the jobs: a model, a pool, a BTS data folder, a selection folder."""
    root = tmp_path_factory.mktemp("fault_inputs")
    tok = tiny_tokenizer()
    model = save_tiny(root / "model", tiny_llama(vocab_size=len(tok), max_position_embeddings=2048), tok)
    other = save_tiny(root / "other", tiny_llama(vocab_size=len(tok), max_position_embeddings=2048, seed=1), tok)
    pool = root / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in POOL_ROWS))
    bts = root / "bts_data"
    bts.mkdir()
    words = "the of a river stone light water green small house north cold".split()
    lines = lambda k: "".join(json.dumps({"text": " ".join(words[(i * j) % len(words)] for j in range(40))}) + "\n" for i in range(k))  # noqa: E731
    (bts / "general.jsonl").write_text(lines(60))
    (bts / "math.jsonl").write_text(lines(60))
    target = root / "target.jsonl"
    target.write_text(json.dumps({"question": "Question 3?", "answer": "An answer word word"}) + "\n")
    return {"model": str(model), "other": str(other), "pool": str(pool), "bts": str(bts), "tok": tok, "target": str(target)}


@pytest.fixture(scope="module")
def judge_server():
    """An OpenAI-compatible judge for quality_judge (tests/openai_server.py, on 127.0.0.1)."""
    from openai_server import OpenAICompatibleServer

    server = OpenAICompatibleServer(lambda body: "Educational score: 4" if "Alice" in str(body) else "Educational score: 1")
    with server:
        yield server.base_url


def _values(job: str, a: dict, out: Path) -> dict:
    """Tiny recipe values for `job` (output_dir added by the caller)."""
    data = TESTS / "data"
    if job == "select":
        return {"dataset": a["pool"], "budget": 4, "compare_methods": []}
    if job == "curate":
        return {"dataset": str(data / "web" / "c4_en_train_first150.jsonl.gz"), "pipeline": "dclm_heuristics", "max_docs": 30}
    if job == "audit":
        return {"dataset": str(data / "web" / "c4_en_train_first150.jsonl.gz"), "url_column": "url", "derived_groups": ["url_site_type"],
                "filters": ["gopher_quality"], "n_boot": 20, "min_group_size": 1, "max_docs": 40}
    if job == "merge":
        return {"models": [a["model"], a["other"]], "input_hub_ids": ["org/a", "org/b"]}
    if job == "less_warmup":
        return {"model_name_or_path": a["model"], "dataset": a["pool"], "lora_r": 2, "lora_alpha": 4, "lora_target_modules": ["q_proj"],
                "num_train_epochs": 1.0, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "warmup_fraction": 0.5,
                "max_length": 48, "use_cpu": True, "report_to": "none", "bf16": False}
    if job == "less_select":
        warm = out.parent / "warm_for_select"
        if not warm.exists():
            import_path(JOBS["less_warmup"][1])(parse_config(import_path(JOBS["less_warmup"][0]), {**_values("less_warmup", a, out),
                                                                                                    "output_dir": str(warm)}))
        return {"model_name_or_path": a["model"], "warmup_dir": str(warm), "dataset": a["pool"],
                "target_dataset": str(data / "less" / "gsm8k_test_24.jsonl.gz"), "target_split": "train", "proj_dim": 32,
                "target_instruction_column": "instruction", "target_input_column": "input", "target_response_column": "output",
                "max_length": 256, "percent": None, "budget": 4}
    if job == "critic_rm":
        pref = data / "preference"
        return {"model_name_or_path": a["model"], "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "train_file": str(pref / "alpaca_eval_gpt4_slice.jsonl.gz"), "critiques_file": str(pref / "alpaca_eval_smollm2_critiques.jsonl.gz"),
                "num_critiques": 1, "eval_pairs": 2, "eval_num_critiques": 0, "max_chars": 2000, "max_length": 2048, "train_pairs": 4,
                "max_steps": 1, "per_device_train_batch_size": 2, **CPU}
    if job == "bts":
        return {"data_dir": a["bts"], "general_data": "general.jsonl", "expert_data": {"math": "math.jsonl"},
                "expert_templates": {"math": "{text}"}, "expert_filters": {}, "group_rows": {}, "dataset_ids": [],
                "mix_ratios": {"math": 0.5, "general": 0.5}, "max_texts": 40, "eval_max_texts": 4, "vocab_size": 300, "hidden_size": 16,
                "num_layers": 2, "num_heads": 2, "intermediate_size": 32, "block_size": 16, "batch_size": 2, "seed_steps": 1,
                "expert_steps": 1, "stitch": {"num_stitch_layers": 1}, "stitch_training": {"max_steps": 1, "gate_offset_final": None},
                "baselines": []}
    if job == "time_vectors":
        f = str(data / "merge" / "wmt_newstest_en_2012_2014_2016_150.jsonl.gz")
        return {"data_file": f, "pretrain_file": f, "pretrain_chars": 5000, "years": [2012, 2014, 2016], "train_sentences": 20,
                "eval_sentences": 10, "vocab_size": 300, "hidden_size": 16, "num_layers": 1, "pretrain_steps": 1, "finetune_steps": 1,
                "batch_size": 2, "block_size": 16, "alphas": [0.0, 1.0], "base_hub_id": "org/tiny-base"}
    if job == "xelm":
        return {"data_file": str(data / "merge" / "flores200_devtest_5lang_80.jsonl.gz"), "languages": ["eng_Latn", "deu_Latn"],
                "train_sentences": 20, "eval_sentences": 10, "experts": [1], "vocab_size": 300, "hidden_size": 16, "num_layers": 1,
                "seed_steps": 0, "expert_steps": 1, "batch_size": 2, "block_size": 16}
    if job == "scaling_tiny":
        return {"data_dir": str(data / "scaling"), "corpus_files": ["tinyshakespeare_head.txt.gz"], "hidden_sizes": [8, 16, 24],
                "num_layers": 1, "token_multipliers": [0.2, 0.4], "vocab_size": 300, "tokenizer_chars": 20000, "block_size": 16,
                "batch_size": 4, "eval_fraction": 0.1, "max_eval_blocks": 8, "bootstrap": 0, "num_threads": 1}
    if job == "sft":
        return {"model_name_or_path": a["model"], "dataset": a["pool"], "max_length": 64, "per_device_train_batch_size": 2,
                "max_steps": 1, "dataset_num_proc": None, **CPU}
    if job == "evaluate":
        # the response NLL only: the lm-eval tasks are covered in test_evaluate.py, the output folder is the same
        return {"model_name_or_path": a["model"], "tasks": [], "response_nll_dataset": a["pool"], "response_nll_limit": 4,
                "chat_template": False}
    if job == "embedding_select":
        return {"dataset": a["pool"], "target_dataset": a["target"], "target_split": "train", "budget": 3, "percent": None}
    if job in ("quality_classifier", "quality_judge"):
        if job == "quality_classifier":
            return {"scorer": "fasttext", "data_dir": str(data), "heldout": [], "fasttext": {"epoch": 2}, "heuristic_negatives": None,
                    "positives": [{"path": "web/wikipedia_demo_first6.jsonl.gz", "name": "wikipedia", "chunk": True}],
                    "negatives": [{"path": "web/c4_en_train_first150.jsonl.gz", "name": "c4_train", "max_docs": 30}]}
        return {"data_dir": str(data), "negatives": [{"path": "web/c4_en_train_first150.jsonl.gz", "max_docs": 10}],
                "pages": [{"path": "quality/gutenberg_alice.jsonl.gz", "chunk": True, "max_pages": 10, "name": "alice"}],
                "heldout": [], "sample_size": 12, "judge_backend": "openai", "judge": {"base_url": a["judge"], "model": "judge"},
                "judge_max_chars": 200, "embedder": {"max_length": 32}}
    if job == "compare":
        return {"pool": a["pool"], "heldout_size": 3, "selections": {"longest": {"job": "select", "method": "longest"}},
                "selection_defaults": {"budget": 4, "compare_methods": [], "tokenizer": a["model"], "dataset_license": "other"},
                "sft": {"model_name_or_path": a["model"], "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_length": 64,
                        "per_device_train_batch_size": 2, "max_steps": 1, **CPU},
                "evaluate": {"tasks": [], "response_nll_dataset": a["pool"], "response_nll_limit": 3, "chat_template": False},
                "bootstrap_samples": 20,
                "baseline": "longest"}
    raise KeyError(job)


FOLDER_JOBS = ["select", "curate", "audit", "merge", "less_warmup", "less_select", "critic_rm", "bts", "time_vectors", "xelm",
               "scaling_tiny", "sft", "evaluate", "embedding_select", "quality_classifier", "quality_judge", "compare"]


def test_every_folder_writing_job_is_covered():
    assert sorted(FOLDER_JOBS) == sorted(JOBS), "a new job: add it to FOLDER_JOBS with tiny values in _values"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-") or p.name.startswith(f".{out.name}.old-")]


def _private_tqdm_locks() -> None:
    """Give this (forked child) process tqdm write locks of its own memory.

    Every `TqdmDefaultWriteLock` holds the class-wide, process-shared `mp_lock` that the fork
    inherits: a child killed while it holds it deadlocks the test process at its next progress bar.
    The lock is owned by whichever tqdm class asked first (`datasets.utils.tqdm.tqdm` owns one of
    its own once a `datasets` bar has run), so every class and every existing lock is rebound.
    """
    import gc

    import tqdm.std

    tqdm.std.TqdmDefaultWriteLock.mp_lock = threading.RLock()
    for obj in gc.get_objects():
        if isinstance(obj, tqdm.std.TqdmDefaultWriteLock):
            obj.locks = [threading.RLock()]
    todo = [tqdm.std.tqdm]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        cls.set_lock(threading.RLock())


def _kill_at_first_file(job: str, values: dict, out: Path) -> int:
    """Run `job` in a forked child that SIGKILLs itself once a file appears in its temporary folder."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            torch.set_num_threads(1)
            _private_tqdm_locks()

            def watch():
                while True:
                    for tmp in out.parent.glob(f".{out.name}.tmp-{os.getpid()}-*"):
                        if any(p.is_file() for p in tmp.rglob("*")):
                            os.kill(os.getpid(), signal.SIGKILL)
                    time.sleep(0.002)

            threading.Thread(target=watch, daemon=True).start()
            # A fast writer can finish before the watcher runs: then the kill comes at the named point
            # where the finished temporary folder would move into place.
            import hf_ext.outputs

            hf_ext.outputs._move_into_place = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
            config_cls, runner = import_path(JOBS[job][0]), import_path(JOBS[job][1])
            runner(parse_config(config_cls, values))
        except BaseException as exc:  # noqa: BLE001 - report, then leave without pytest's cleanup
            print(f"child failed: {exc!r}", file=sys.stderr)
            os._exit(3)
        os._exit(0)  # the job finished before any file appeared: the test fails on the exit code
    deadline = time.time() + 120
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the {job} child did not finish in 120 s")


def test_a_child_killed_inside_a_progress_bar_leaves_the_parent_s_bars_usable():
    """The fault tests' forked children must not hold the parent's process-shared tqdm lock."""
    import datasets
    import tqdm.std
    from datasets.utils.tqdm import tqdm as datasets_tqdm

    datasets.Dataset.from_dict({"a": [1, 2]}).map(lambda row: row)  # a datasets bar: its class owns a lock
    pid = os.fork()
    if pid == 0:
        _private_tqdm_locks()
        datasets_tqdm.get_lock().acquire()  # killed while "writing" a datasets bar
        os.kill(os.getpid(), signal.SIGKILL)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WTERMSIG(status) == signal.SIGKILL
    shared = tqdm.std.TqdmDefaultWriteLock.mp_lock
    assert shared.acquire(timeout=10), "the killed child still holds the parent's tqdm lock"
    shared.release()


@pytest.mark.parametrize("job", FOLDER_JOBS)
def test_sigkill_mid_write_keeps_the_previous_output(job, assets, judge_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assets = {**assets, "judge": judge_server}
    out = tmp_path / "out"
    out.mkdir()  # the previous run's output, as an earlier hf_ext run leaves it
    (out / "model.safetensors").write_bytes(b"previous weights")
    (out / "metrics.json").write_text('{"run": "previous"}\n')
    (out / MARKER).write_text(json.dumps({"written_by": job, "files": ["metrics.json", "model.safetensors"]}) + "\n")
    before = _snapshot(out)
    values = {**_values(job, assets, out), "output_dir": str(out)}

    status = _kill_at_first_file(job, values, out)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{job} was not killed mid-write (status {status})"
    assert _snapshot(out) == before  # 1. the previous output is intact
    assert _temporaries(out)  # 2. the kill left its half-written temporary folder

    config_cls, runner = import_path(JOBS[job][0]), import_path(JOBS[job][1])
    runner(parse_config(config_cls, values))  # 3. the next run succeeds...
    assert _temporaries(out) == []  # ...and removes the killed run's temporary folder
    marker = json.loads((out / MARKER).read_text())
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    assert files == marker["files"] and "metrics.json" in files  # exactly what this run wrote
    assert json.loads((out / "metrics.json").read_text()) != {"run": "previous"}
    assert not (out / "model.safetensors").exists() or (out / "model.safetensors").read_bytes() != b"previous weights"


def test_a_killed_file_write_keeps_the_previous_file(tmp_path):
    """Single-file writers inside folders others manage (stitch weights, SAE): atomic_file."""
    from hf_ext.outputs import atomic_file

    target = tmp_path / "stitch.safetensors"
    target.write_bytes(b"old")
    pid = os.fork()
    if pid == 0:
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WTERMSIG(status) == signal.SIGKILL and target.read_bytes() == b"old"
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["stitch.safetensors"]


# -- resume from a half-written checkpoint ---------------------------------------------------------------

def test_resume_falls_back_to_the_last_complete_checkpoint(tmp_path, caplog):
    from transformers import Trainer, TrainingArguments, default_data_collator

    from hf_ext.lm import pack_texts

    tok = tiny_tokenizer()
    data = pack_texts(tok, ["a few words of text to train on, again and again " * 8] * 8, 16)

    class SafeTrainer(SafeResumeMixin, Trainer):
        pass

    def trainer(steps: int) -> Trainer:
        args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=steps, save_steps=1, per_device_train_batch_size=2,
                                 save_only_model=False, **{k: v for k, v in CPU.items() if k != "save_strategy"})
        return SafeTrainer(model=tiny_llama(vocab_size=len(tok)), args=args, train_dataset=data, data_collator=default_data_collator)

    trainer(2).train()
    second = tmp_path / "run" / "checkpoint-2"
    weights = second / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a kill during the save of step 2
    assert last_complete_checkpoint(tmp_path / "run") == str(tmp_path / "run" / "checkpoint-1")
    caplog.set_level("WARNING", logger="hf_ext.outputs")
    resumed = trainer(3)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3
    assert any("checkpoint-2 is incomplete" in r.getMessage() for r in caplog.records)
    # Resumed at step 1 (its logged loss comes back with its state), so steps 2 and 3 were trained again, once.
    assert [h["step"] for h in resumed.state.log_history if "loss" in h] == [1, 2, 3]

    for state in (tmp_path / "run").glob("checkpoint-*/trainer_state.json"):  # no complete checkpoint at all
        state.unlink()
    from hf_ext.errors import InputError

    with pytest.raises(InputError, match="holds no complete checkpoint-N"):
        trainer(4).train(resume_from_checkpoint=True)


def test_hf_ext_trainers_resume_safely():
    from trainers.critic_rm import CriticRMTrainer
    from trainers.ranking_rm import RankingRewardTrainer
    from trainers.stitch import StitchTrainer

    assert all(issubclass(t, SafeResumeMixin) for t in (CriticRMTrainer, RankingRewardTrainer, StitchTrainer))
