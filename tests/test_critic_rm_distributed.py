"""CriticRMTrainer under 2 processes (torchrun, gloo on CPU): DDP keeps the replicas equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, os, sys, torch
    from datasets import Dataset
    from hf_ext.testing import tiny_llama, tiny_tokenizer
    from trainers.critic_rm import CriticRMConfig, CriticRMTrainer
    out = sys.argv[1]
    ds = Dataset.from_dict({"prompt": ["Capital of France?", "2+2?"] * 4, "chosen": ["Paris.", "4"] * 4,
                            "rejected": ["Rome.", "5"] * 4, "chosen_critique": ["Right. Score: 9", "Correct. Score: 9"] * 4,
                            "rejected_critique": ["Wrong. Score: 2", "Wrong sum. Score: 1"] * 4})
    tok = tiny_tokenizer()
    args = CriticRMConfig(out, max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, report_to="none",
                          bf16=False, activation_checkpointing=True, use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = CriticRMTrainer(tiny_llama(tokenizer=tok), args, train_dataset=ds, processing_class=tok)
    before = trainer.model.score.weight.detach().clone()
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    rank = trainer.accelerator.process_index
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"world": trainer.accelerator.num_processes, "sum": flat.double().sum().item(),
                   "sq": (flat.double() ** 2).sum().item(), "head_moved": (model.score.weight - before).abs().max().item(),
                   "loss": [h["loss"] for h in trainer.state.log_history if "loss" in h]}, f)
    torch.distributed.destroy_process_group()  # clean shutdown of the gloo group
''')


# Padded, then padding-free (packed) training of the same model on pairs of very different
# lengths, SGD so the parameters show the gradients directly.
PACKED_SCRIPT = textwrap.dedent('''
    import os, sys, torch
    from datasets import Dataset
    from hf_ext.testing import tiny_llama, tiny_tokenizer
    from trainers.critic_rm import CriticRMConfig, CriticRMTrainer
    out = sys.argv[1]
    long = " ".join(["Paris has been the capital of France for centuries."] * 6)
    ds = Dataset.from_dict({"prompt": ["Capital of France?", "2+2?"] * 4, "chosen": [long, "4"] * 4,
                            "rejected": ["Rome.", "5"] * 4, "chosen_critique": ["Right. Score: 9", "Correct. Score: 9"] * 4,
                            "rejected_critique": ["Wrong. Score: 2", "Wrong sum, it is four. " * 8 + "Score: 1"] * 4,
                            "margin": [0.0, 0.5] * 4})
    tok = tiny_tokenizer()
    params = {}
    for packed in (False, True):
        args = CriticRMConfig(out, max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2, optim="sgd",
                              learning_rate=0.1, report_to="none", bf16=False, activation_checkpointing=False, use_cpu=True,
                              save_strategy="no", padding_free=packed, fast_path_weight=0.3, seed=0)
        trainer = CriticRMTrainer(tiny_llama(tokenizer=tok, seed=1), args, train_dataset=ds, processing_class=tok)
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model)
        params[packed] = torch.cat([p.detach().flatten() for p in model.parameters()])
    from safetensors.torch import save_file
    save_file({"world": torch.tensor(trainer.accelerator.num_processes), "padded": params[False], "packed": params[True]},
              os.path.join(out, f"packed_rank{trainer.accelerator.process_index}.safetensors"))
    torch.distributed.destroy_process_group()
''')


def _torchrun(tmp_path, source):
    script = tmp_path / "train.py"
    script.write_text(source)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000), str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_keep_replicas_in_sync(tmp_path):
    _torchrun(tmp_path, SCRIPT)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["head_moved"] > 0  # the reward head trained
    assert ranks[0]["sum"] == ranks[1]["sum"] and ranks[0]["sq"] == ranks[1]["sq"]  # identical replicas
    assert len(ranks[0]["loss"]) == 2


def test_two_processes_padding_free_equals_padded(tmp_path):
    import torch
    from safetensors.torch import load_file

    _torchrun(tmp_path, PACKED_SCRIPT)
    ranks = [load_file(str(tmp_path / f"packed_rank{r}.safetensors")) for r in (0, 1)]
    assert int(ranks[0]["world"]) == 2
    for rank in ranks:  # DDP + gradient accumulation over packed micro-batches = over padded ones
        assert torch.allclose(rank["packed"], rank["padded"], atol=1e-5)
    assert torch.equal(ranks[0]["packed"], ranks[1]["packed"])  # identical replicas
