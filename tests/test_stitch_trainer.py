"""StitchTrainer: only stitch parameters train and are saved; frozen models stay bit-identical;
resuming from a checkpoint continues the same loss sequence; two processes under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_ext.adapters.stitch import CONFIG_NAME, WEIGHTS_NAME, StitchedModel
from hf_ext.lm import pack_texts
from hf_ext.testing import tiny_llama, tiny_tokenizer
from trainers.stitch import StitchTrainer, StitchTrainingConfig

REPO = Path(__file__).resolve().parents[1]
TEXTS = [f"Question: what is {i} plus {i + 1}? Answer: {2 * i + 1}. The quick brown fox jumps over the lazy dog." for i in range(120)]


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    seed = tiny_llama(tokenizer=tok, num_layers=2)
    experts = {"a": tiny_llama(tokenizer=tok, num_layers=2, seed=1), "b": tiny_llama(tokenizer=tok, num_layers=2, seed=2)}
    return tok, seed, experts, pack_texts(tok, TEXTS, block_size=32)


def _args(tmp_path, **kw):
    values = dict(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, logging_steps=1, save_steps=3,
                  num_stitch_layers=2, use_cpu=True, seed=0, data_seed=0, learning_rate=5e-2, gate_offset=2.0)
    values.update(kw)
    return StitchTrainingConfig(**values)


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_only_stitch_parameters_train_and_are_saved(setup, tmp_path):
    tok, seed, experts, blocks = setup
    frozen = {f"{name}.{k}": v.clone() for name, m in {"seed": seed, **experts}.items() for k, v in m.state_dict().items()}
    trainer = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path), train_dataset=blocks, processing_class=tok)
    model = trainer.model
    start = {k: v.clone() for k, v in model.stitch_state_dict().items()}
    trainer.train()
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.stitch.parameters()}
    assert sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"]) == model.expected_trainable_parameters()
    now = {f"{name}.{k}": v for name, m in {"seed": seed, **experts}.items() for k, v in m.state_dict().items()}
    assert all(torch.equal(frozen[k], now[k]) for k in frozen)  # seed and experts bit-identical
    assert any(not torch.equal(start[k], v) for k, v in model.stitch_state_dict().items())  # stitch layers moved
    checkpoint = tmp_path / "checkpoint-3"
    names = {p.name for p in checkpoint.iterdir()}
    assert {WEIGHTS_NAME, CONFIG_NAME} <= names and not names & {"model.safetensors", "pytorch_model.bin"}
    weights = (checkpoint / WEIGHTS_NAME).stat().st_size
    seed_bytes = 4 * sum(p.numel() for p in seed.parameters())
    assert weights < 4 * model.num_trainable_parameters() + 4096 < seed_bytes
    # Adafactor (the default) keeps a row and a column per matrix: its state is a fraction of the
    # weights (AdamW's would be twice them). The seed's tokenizer goes only into the final save.
    assert trainer.args.optim == "adafactor"
    assert (checkpoint / "optimizer.pt").stat().st_size < 0.5 * weights
    assert not any(n.startswith("tokenizer") for n in names)
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "tokenizer_config.json").is_file()
    loaded = StitchedModel.from_pretrained(seed, experts, tmp_path / "final")
    batch = torch.tensor(blocks[:2]["input_ids"])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=batch).logits, model(input_ids=batch).logits)


def test_resume_from_checkpoint_continues_the_same_loss_sequence(setup, tmp_path):
    tok, seed, experts, blocks = setup
    anneal = dict(gate_offset=6.0, gate_offset_final=1.0, gate_offset_anneal_steps=4)  # the β schedule resumes too
    full = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path / "full", **anneal), train_dataset=blocks, processing_class=tok)
    full.train()
    reference = _losses(full)
    resumed = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path / "resumed", **anneal), train_dataset=blocks, processing_class=tok)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    assert len(reference) == 6 and reference[0] != reference[-1]
    assert _losses(resumed)[-3:] == pytest.approx(reference[3:], rel=1e-5, abs=1e-6)
    assert full.model.gate_offset == resumed.model.gate_offset == 1.0
    assert json.loads((tmp_path / "full" / "checkpoint-6" / CONFIG_NAME).read_text())["gate_offset"] == 1.0


def test_two_processes_under_torchrun(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(
        "import json, os, sys, torch\n"
        "from hf_ext.lm import pack_texts\n"
        "from hf_ext.testing import tiny_llama, tiny_tokenizer\n"
        "from trainers.stitch import StitchTrainer, StitchTrainingConfig\n"
        "tok = tiny_tokenizer(); seed = tiny_llama(tokenizer=tok, num_layers=2)\n"
        "experts = {'a': tiny_llama(tokenizer=tok, num_layers=2, seed=1)}\n"
        "before = {k: v.clone() for k, v in seed.state_dict().items()}\n"
        f"blocks = pack_texts(tok, {TEXTS[:40]!r}, block_size=32)\n"
        "args = StitchTrainingConfig(output_dir=sys.argv[1], max_steps=3, per_device_train_batch_size=2, use_cpu=True,\n"
        "    num_stitch_layers=2, learning_rate=5e-2, gate_offset=2.0, save_strategy='no', ddp_backend='gloo')\n"
        "trainer = StitchTrainer(model=seed, experts=experts, args=args, train_dataset=blocks)\n"
        "trainer.train()\n"
        "flat = torch.cat([p.detach().flatten() for p in trainer.model.stitch.parameters()])\n"
        "gathered = [torch.zeros_like(flat) for _ in range(2)]\n"
        "torch.distributed.all_gather(gathered, flat)\n"
        "same = all(torch.equal(before[k], v) for k, v in seed.state_dict().items())\n"
        "print('RESULT', json.dumps({'world': trainer.args.world_size, 'equal_ranks': torch.equal(*gathered), 'frozen': same}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert results and all(r.endswith('{"world": 2, "equal_ranks": true, "frozen": true}') for r in results)


def test_the_stitch_mix_has_the_configured_ratios_and_bad_ratios_fail(tmp_path):
    import datasets

    from hf_ext.errors import InputError
    from trainers.bts import BTSConfig, mixed_blocks, run_bts

    blocks = {name: datasets.Dataset.from_dict({"input_ids": [[i, i] for i in range(size)], "domain": [name] * size})
              for name, size in {"math": 5, "code": 50, "german": 50, "general": 500}.items()}
    mix = mixed_blocks(blocks, {"math": 0.15, "code": 0.15, "german": 0.15, "general": 0.55}, 200, seed=0)
    counts = {name: mix["domain"].count(name) for name in blocks}
    assert counts == {"math": 30, "code": 30, "german": 30, "general": 110}  # math: 5 blocks, drawn with replacement
    with pytest.raises(InputError, match="sum to 1"):
        BTSConfig(mix_ratios={"math": 0.5, "code": 0.5, "german": 0.5, "general": 0.5})
    with pytest.raises(InputError, match="exactly the keys"):
        BTSConfig(mix_ratios={"math": 1.0})
    with pytest.raises(InputError, match="data_dir is not set"):
        run_bts(BTSConfig(output_dir=str(tmp_path)))  # no default folder: the staged data lives outside the repo
