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
from hf_ext.testing import tiny_llama, tiny_tokenizer

from contract_common import CPU, assets, judge_server  # noqa: F401 (pytest fixtures)
from contract_common import job_values as _values

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork")

FOLDER_JOBS = ["select", "curate", "audit", "merge", "less_warmup", "less_select", "critic_rm", "bts", "time_vectors", "xelm",
               "scaling_tiny", "sft", "evaluate", "embedding_select", "quality_classifier", "quality_judge", "compare"]


def test_every_folder_writing_job_is_covered():
    assert sorted(FOLDER_JOBS) == sorted(JOBS), "a new job: add it to FOLDER_JOBS with tiny values in contract_common.job_values"


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
