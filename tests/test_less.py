"""LESS (arXiv 2402.04333): warmup checkpoints, per-example LoRA gradients, Adam features by
parameter name, Rademacher projection, matching and selection, on committed real data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_dataset

from hf_ext.errors import InputError
from hf_ext.select.less import (
    GradientFeaturizer,
    RademacherProjector,
    adam_feature,
    build_datastore,
    checkpoint_weights,
    epoch_learning_rates,
    less_scores,
    load_adam_state,
    normalize_weights,
    select_top,
)
from hf_ext.select.less.warmup import LessWarmupConfig, run_less_warmup
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

DATA = Path(__file__).parent / "data" / "less"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids OpenMP contention (10x here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pool():
    return load_dataset("json", data_files=str(DATA / "pool_mixed_424.jsonl.gz"), split="train")


@pytest.fixture(scope="module")
def target():
    return load_dataset("json", data_files=str(DATA / "gsm8k_test_24.jsonl.gz"), split="train")


@pytest.fixture(scope="module")
def warm(tmp_path_factory, pool):
    """A tiny base model and a 2-epoch LESS warmup on 10% of the real mixed pool."""
    root = tmp_path_factory.mktemp("less")
    tok = tiny_tokenizer()
    save_tiny(root / "base", tiny_llama(tokenizer=tok), tok)
    config = LessWarmupConfig(
        model_name_or_path=str(root / "base"), output_dir=str(root / "warmup"), lora_r=4, lora_alpha=16,
        num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=1e-3,
        warmup_fraction=0.1, max_length=96, seed=0,
    )
    metrics = run_less_warmup(config, dataset=pool)
    return {"root": root, "base": str(root / "base"), "checkpoints": metrics["checkpoints"], "metrics": metrics}


def featurizer(warm, **kwargs):
    kwargs.setdefault("proj_dim", 256)
    kwargs.setdefault("max_length", 96)
    return GradientFeaturizer(warm["base"], warm["checkpoints"], **kwargs)


def test_warmup_follows_the_recipe(warm, pool):
    m = warm["metrics"]
    assert m["warmup_size"] == round(0.1 * len(pool)) and len(m["checkpoints"]) == 2  # one checkpoint per epoch
    from huggingface_hub import ModelCard

    card = ModelCard.load(Path(m["checkpoints"][0]).parent / "README.md")  # the folder's root card
    assert card.data.library_name == "peft" and "less" in card.data.tags
    steps = [int(Path(c).name.split("-")[-1]) for c in m["checkpoints"]]
    assert all(f"| `checkpoint-{s}/` | {s} |" in card.text for s in steps)
    assert f"({m['warmup_size']} of {m['pool_size']} rows" in card.text
    ckpt = Path(m["checkpoints"][0])
    assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "adam_state_by_name.safetensors").is_file()
    config = json.loads((ckpt / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (config["r"], config["lora_alpha"]) == (4, 16)
    # Paper defaults live in the config.
    d = LessWarmupConfig(output_dir=str(warm["root"] / "unused"))
    assert (d.lora_r, d.lora_alpha, d.lora_dropout, d.learning_rate, d.num_train_epochs, d.warmup_steps) == (
        128, 512, 0.1, 2e-5, 4.0, 0.03)


def test_batched_per_example_grads_equal_single_example_backward(warm, pool):
    f = featurizer(warm, kind="sgd")
    state = f._load()
    tok, model = state["tokenizer"], state["model"]
    from hf_ext.select.less import tokenize_example

    rows = [tokenize_example(tok, f.format, pool[i]) for i in range(5)]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [tok.pad_token_id] * (width - len(r["input_ids"])) for r in rows])
    lab = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
    params = state["per_ckpt"][1]["params"]
    assert state["split"] is not None  # the head runs at response positions only (checked against the model's logits)
    batched = f.per_example_grads(ids, lab, params)
    split, state["split"] = state["split"], None  # the full forward (models whose logits are not head(decoder))
    try:
        full_forward = f.per_example_grads(ids, lab, params)
    finally:
        state["split"] = split
    assert torch.allclose(batched, full_forward, rtol=1e-5, atol=1e-7)
    # Reference: the checkpoint's weights in the model, one unpadded example at a time,
    # transformers' own loss (mean over labelled tokens) and a plain backward.
    live = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            live[n].copy_(p)
    for i, r in enumerate(rows):
        model.zero_grad()
        out = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]))
        out.loss.backward()
        single = torch.cat([live[n].grad.reshape(-1) for n in state["names"]])
        assert torch.allclose(batched[i], single, rtol=1e-4, atol=1e-6), (batched[i] - single).abs().max()
        assert torch.allclose(full_forward[i], single, rtol=1e-4, atol=1e-6)
        # Only LoRA parameters carry gradients; the base model stays frozen.
        assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    assert all("lora_" in n for n in state["names"])
    assert batched.shape[1] == sum(live[n].numel() for n in live if "lora_" in n)


def test_adam_moments_read_by_name_whatever_the_file_is_called(warm, tmp_path):
    f = featurizer(warm)
    model, names = f._load()["model"], f._load()["names"]
    ckpt = Path(warm["checkpoints"][0])
    by_name = load_adam_state(ckpt, model)
    assert by_name.source.endswith("adam_state_by_name.safetensors")
    # The Trainer's own optimizer.pt, renamed, without the by-name file: positions -> names.
    other = tmp_path / "ckpt"
    shutil.copytree(ckpt, other)
    (other / "adam_state_by_name.safetensors").unlink()
    (other / "optimizer.pt").rename(other / "opt_state_rank0.bin")
    from_torch = load_adam_state(other, model)
    m1, v1 = by_name.flat(names)
    m2, v2 = from_torch.flat(names)
    assert torch.equal(m1, m2) and torch.equal(v1, v2) and m1.abs().sum() > 0
    assert from_torch.betas == (0.9, 0.999) and from_torch.eps == 1e-8


def test_adam_moments_read_equal_a_hand_computed_first_step(warm, pool, tmp_path):
    # One warmup step on one batch (no dropout): Adam's moments after it are m = (1 - β1)·g and
    # v = (1 - β2)·g², g the gradient of the batch's mean response loss at the initial LoRA
    # weights (B = 0, so only B has a gradient and A has not moved). The moments hf_ext reads for
    # each parameter NAME must be those of that parameter, recomputed here by hand.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from hf_ext.select.less.formatting import tokenize_batch

    rows = pool.select(range(6))
    config = LessWarmupConfig(model_name_or_path=warm["base"], output_dir=str(tmp_path / "w"), lora_r=4, lora_alpha=16,
                              lora_dropout=0.0, num_train_epochs=1, per_device_train_batch_size=6, warmup_fraction=1.0,
                              gradient_accumulation_steps=1, learning_rate=1e-3, max_length=96, seed=0)
    ckpt = run_less_warmup(config, dataset=rows)["checkpoints"][0]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(warm["base"]), ckpt, is_trainable=True)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in named.items():
            if "lora_B" in n:
                p.zero_()  # the initial B; A is unchanged by a step whose A-gradient is zero
    tok = GradientFeaturizer(warm["base"], [ckpt], kind="sgd", proj_dim=64)._load()["tokenizer"]
    enc = tokenize_batch(tok, config.example_format, rows[:])
    batch = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100, padding=True)(
        [{k: enc[k][i] for k in enc} for i in range(len(rows))])
    model(**batch).loss.backward()
    state = load_adam_state(ckpt, model)
    for n, p in named.items():
        if p.requires_grad:
            assert torch.allclose(state.exp_avg[n], 0.1 * p.grad, atol=1e-7, rtol=1e-4), n
            assert torch.allclose(state.exp_avg_sq[n], 0.001 * p.grad**2, atol=1e-10, rtol=1e-3), n
    assert all(named[n].grad.abs().sum() > 0 for n in named if "lora_B" in n)


def test_adam_feature_equals_the_formula(warm):
    g = torch.randn(3, 50)
    m, v = torch.randn(50), torch.rand(50)
    b1, b2, eps = 0.9, 0.999, 1e-8
    expected = (b1 * m.numpy() + (1 - b1) * g.numpy()) / np.sqrt(b2 * v.numpy() + (1 - b2) * g.numpy() ** 2 + eps)
    assert np.allclose(adam_feature(g, m, v, (b1, b2), eps).numpy(), expected, rtol=1e-5)
    # End to end: the featurizer's Adam feature = formula(single-example grad, checkpoint moments), projected.
    fa, fs = featurizer(warm, kind="adam", proj_dim=128), featurizer(warm, kind="sgd", proj_dim=128)
    batch = {"instruction": ["Add 2 and 3."], "input": [""], "output": ["2 + 3 = 5"]}
    feats = np.asarray(fa(batch)["less_grads"][0])
    st = fa._load()
    rows = [__import__("hf_ext.select.less", fromlist=["x"]).tokenize_example(st["tokenizer"], fa.format, {k: v[0] for k, v in batch.items()})]
    for c, entry in enumerate(st["per_ckpt"]):
        gr = fs.per_example_grads(torch.tensor([rows[0]["input_ids"]]), torch.tensor([rows[0]["labels"]]), entry["params"])
        b1, b2 = entry["betas"]
        gamma = (b1 * entry["m"] + (1 - b1) * gr) / torch.sqrt(b2 * entry["v"] + (1 - b2) * gr**2 + entry["eps"])
        proj = st["projector"].dense_matrix()
        want = torch.nn.functional.normalize(gamma @ proj, dim=1)[0].numpy()
        assert np.allclose(feats[c], want, atol=1e-5)
        assert abs(np.linalg.norm(feats[c]) - 1) < 1e-5


def test_projection_preserves_cosines_within_the_paper_bound():
    proj = RademacherProjector(input_dim=3000, proj_dim=8192, seed=3, block_rows=1024)
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(24, 3000, generator=gen), dim=1)
    x[12:] = torch.nn.functional.normalize(x[:12] + 0.8 * x[12:], dim=1)  # some correlated pairs too
    y = torch.nn.functional.normalize(proj(x), dim=1)
    iu = np.triu_indices(24, 1)
    dcos = np.abs((y @ y.T).numpy()[iu] - (x @ x.T).numpy()[iu])
    # JL at d = 8192: |Δcos| ≈ sqrt(2/π)·(1 − cos²)/sqrt(d) ≈ 0.009 at most; the paper measured mean 0.008, max 0.04.
    assert dcos.mean() < 0.011 and dcos.max() < 0.05
    # The matrix is fixed by its seed: blocks drawn in any order, dense or chunked, give the same result.
    again = RademacherProjector(input_dim=3000, proj_dim=8192, seed=3, block_rows=1024, cache_mb=0)
    assert torch.allclose(again(x), x @ proj.dense_matrix(), atol=1e-5)
    assert not torch.allclose(RademacherProjector(3000, 8192, seed=4)(x[:2]), proj(x[:2]))
    assert set(torch.unique(proj.dense_matrix() * np.sqrt(8192)).round().tolist()) == {-1.0, 1.0}


def test_checkpoint_weights_are_mean_epoch_lr_renormalised(warm):
    state = {"log_history": [{"epoch": e, "learning_rate": lr} for e, lr in
                             [(0.5, 4.0), (1.0, 2.0), (1.5, 1.0), (2.0, 1.0), (2.5, 0.5), (3.0, 0.5)]]}
    assert epoch_learning_rates(state) == [3.0, 1.0, 0.5]
    assert np.allclose(normalize_weights([3.0, 1.0, 0.5]), [3 / 4.5, 1 / 4.5, 0.5 / 4.5])
    w = checkpoint_weights(warm["checkpoints"])
    assert w.sum() == pytest.approx(1.0) and w[0] > w[1]  # linear decay: epoch 1 has the higher mean LR
    logs = json.loads((Path(warm["checkpoints"][-1]) / "trainer_state.json").read_text())["log_history"]
    lrs = epoch_learning_rates({"log_history": logs})
    assert np.allclose(w, np.array(lrs) / sum(lrs))
    with pytest.raises(InputError, match="non-negative"):
        normalize_weights([0.0, 0.0])


def test_mean_within_subtask_then_max_with_unequal_interleaved_subtasks():
    rng = np.random.default_rng(0)
    train, target = rng.normal(size=(7, 2, 16)), rng.normal(size=(6, 2, 16))
    labels = ["b", "a", "b", "c", "b", "a"]  # sizes 3, 2, 1, not contiguous
    weights = [3.0, 1.0]
    got = less_scores(train, target, weights, labels)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    tr, tg, w = unit(train), unit(target), np.array(weights) / 4
    for i in range(7):
        per_task = []
        for task in "abc":
            cols = [j for j, t in enumerate(labels) if t == task]
            per_task.append(np.mean([sum(w[c] * tr[i, c] @ tg[j, c] for c in range(2)) for j in cols]))
        assert got[i] == pytest.approx(max(per_task))
    assert np.allclose(less_scores(train, target, weights), [np.mean([sum(w[c] * tr[i, c] @ tg[j, c] for c in range(2))
                                                                       for j in range(6)]) for i in range(7)])


def test_mismatched_projection_dims_fail():
    with pytest.raises(InputError, match="same projector"):
        less_scores(np.ones((3, 2, 16)), np.ones((2, 2, 32)), [1, 1])
    with pytest.raises(InputError, match="same projector"):
        less_scores(np.ones((3, 2, 16)), np.ones((2, 1, 16)), [1, 1])


def test_select_top():
    assert select_top([0.2, 0.9, 0.9, -1.0, 0.5], k=3) == [1, 2, 4]  # ties keep pool order
    assert select_top(np.arange(40.0), percent=5.0) == [39, 38]
    assert select_top([0.2, 0.9, 0.5], k=2, valid=[True, False, True]) == [2, 0]
    with pytest.raises(InputError, match="exactly one"):
        select_top([1.0], k=1, percent=5.0)


def test_missing_optimizer_state_names_the_checkpoint(warm, tmp_path):
    bare = tmp_path / "checkpoint-no-optim"
    shutil.copytree(warm["checkpoints"][0], bare)
    (bare / "optimizer.pt").unlink()
    (bare / "adam_state_by_name.safetensors").unlink()
    f = GradientFeaturizer(warm["base"], [str(bare)], proj_dim=64, max_length=96)
    with pytest.raises(InputError) as err:
        f({"instruction": ["x"], "input": [""], "output": ["y"]})
    assert str(bare) in str(err.value) and "exp_avg" in str(err.value)
    # Plain gradients (target side) need no optimizer state.
    GradientFeaturizer(warm["base"], [str(bare)], kind="sgd", proj_dim=64, max_length=96)._load()


def test_adapters_other_than_plain_lora_fail_clearly(warm, tmp_path):
    # Per-example gradients are formed from each LoRA factor's input and output gradient, which
    # holds for bias-free nn.Linear factors only: a DoRA adapter (magnitude vectors) is refused.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dora = get_peft_model(AutoModelForCausalLM.from_pretrained(warm["base"]),
                          LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], use_dora=True))
    dora.save_pretrained(tmp_path / "dora")
    with pytest.raises(InputError, match="lora_magnitude_vector.*DoRA"):
        GradientFeaturizer(warm["base"], [str(tmp_path / "dora")], kind="sgd", proj_dim=64, max_length=96)._load()


def test_lora_targets_that_the_model_lacks_fail_clearly(warm, pool):
    config = LessWarmupConfig(model_name_or_path=warm["base"], output_dir=str(warm["root"] / "bad"),
                              lora_target_modules=["query", "value"], num_train_epochs=1)
    with pytest.raises(InputError, match=r"\['query', 'value'\].*q_proj"):
        run_less_warmup(config, dataset=pool.select(range(20)))


def test_examples_without_response_tokens_are_skipped_and_counted(warm, tmp_path):
    rows = Dataset.from_dict({
        "instruction": ["What is 2 + 2?", "Say nothing.", "word " * 200, "Name a colour."],
        "input": ["", "", "", ""],
        "output": ["2 + 2 = 4", "", "cut away by truncation", "Blue."],
    })
    store = build_datastore(rows, featurizer(warm), tmp_path / "store", chunk_size=2, batch_size=4, progress=False)
    assert store.num_skipped == 2 and store.valid.tolist() == [True, False, False, True]
    feats = store.features_array()
    assert np.all(feats[1] == 0) and np.allclose(np.linalg.norm(feats[[0, 3]], axis=-1), 1, atol=1e-5)
    assert json.loads((tmp_path / "store" / "datastore.json").read_text())["num_skipped_no_response_tokens"] == 2
    assert select_top(less_scores(feats, feats[[0]], [0.5, 0.5]), k=4, valid=store.valid) == [0, 3]


def test_datastore_resumes_and_keeps_pool_indices(warm, pool, tmp_path):
    rows = pool.select(range(30))
    f = featurizer(warm, float16=True)
    store = build_datastore(rows, f, tmp_path / "s", chunk_size=8, batch_size=8, progress=False)
    assert store.dataset["pool_index"] == list(range(30))
    full = store.features_array()
    assert store.dataset.features["less_grads"].feature.feature.dtype == "float16"
    # Interrupted run: one chunk is lost; a rerun recomputes only that chunk and matches.
    shutil.rmtree(tmp_path / "s" / "shards" / "000000016-000000024")
    calls = []
    class Counting(GradientFeaturizer):
        def __call__(self, batch):
            calls.append(len(batch["output"]))
            return super().__call__(batch)
    counting = Counting(warm["base"], warm["checkpoints"], proj_dim=256, max_length=96, float16=True)
    counting.fingerprint = f.fingerprint
    again = build_datastore(rows, counting, tmp_path / "s", chunk_size=8, batch_size=8, progress=False)
    assert calls == [8] and np.array_equal(again.features_array(), full)
    with pytest.raises(InputError, match="other settings"):
        build_datastore(rows, featurizer(warm, proj_dim=128), tmp_path / "s", chunk_size=8, progress=False)


def test_featurizer_fingerprint_is_cheap_and_tracks_checkpoints(warm, tmp_path):
    from datasets.fingerprint import Hasher

    f1, f2 = featurizer(warm), featurizer(warm)
    assert Hasher.hash(f1) == Hasher.hash(f2) and f1.fingerprint == f2.fingerprint
    f1._load()
    assert Hasher.hash(f1) == Hasher.hash(f2)  # the loaded model is not part of the pickled state
    assert featurizer(warm, seed=1).fingerprint != f1.fingerprint
    moved = tmp_path / "ck"
    shutil.copytree(warm["checkpoints"][0], moved)
    before = GradientFeaturizer(warm["base"], [str(moved)]).fingerprint
    weights = moved / "adapter_model.safetensors"
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 100))  # retrained in place
    assert GradientFeaturizer(warm["base"], [str(moved)]).fingerprint != before


WORKER = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from datasets import load_dataset
from hf_ext.select.less import GradientFeaturizer, build_datastore
base, out, data, *ckpts = sys.argv[1:]
rows = load_dataset("json", data_files=data, split="train").select(range(30))
f = GradientFeaturizer(base, ckpts, proj_dim=256, max_length=96)
store = build_datastore(rows, f, out, chunk_size=4, batch_size=4, progress=False)
np.save(out + f"/features_rank{store.dataset['pool_index'][0]}_{__import__('os').environ['RANK']}.npy", store.features_array())
"""


def test_two_process_datastore_equals_one_process(warm, pool, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), warm["base"], str(out), str(DATA / "pool_mixed_424.jsonl.gz"), *warm["checkpoints"]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 8 chunks of 4 rows (the last has 2) dealt to 2 ranks: rank 0 wrote the first 4 chunks, rank 1 the rest.
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"{lo:09d}-{min(lo + 4, 30):09d}" for lo in range(0, 30, 4)]
    two = [np.load(out / f"features_rank0_{r}.npy") for r in (0, 1)]
    one = build_datastore(pool.select(range(30)), featurizer(warm), tmp_path / "one", chunk_size=4, batch_size=4,
                          progress=False).features_array()
    assert np.allclose(two[0], one, atol=1e-6) and np.array_equal(two[0], two[1])  # both ranks return the merge
    # Indices map back across shards: the same picks from either datastore, pointing at the same rows.
    scores = lambda feats: less_scores(feats, one[:3], [0.5, 0.5])
    assert select_top(scores(two[0]), k=5) == select_top(scores(one), k=5)


def test_less_select_job_writes_selection_card_and_metrics(warm, pool, target, tmp_path):
    from hf_ext.config import JOBS, import_path, parse_config

    small = tmp_path / "pool.jsonl"
    pool.select(range(60)).to_json(str(small))
    tgt = tmp_path / "target.jsonl"
    target.select([0, 1, 2, 3, 4]).add_column("task", ["a", "a", "b", "b", "b"]).to_json(str(tgt))
    config = parse_config(import_path(JOBS["less_select"][0]), {
        "model_name_or_path": warm["base"], "warmup_dir": str(Path(warm["checkpoints"][0]).parent),
        "dataset": str(small), "dataset_license": "other", "source_column": "source", "target_dataset": str(tgt),
        "target_split": "train", "target_instruction_column": "instruction", "target_input_column": "input",
        "target_response_column": "output", "target_subtask_column": "task", "max_length": 96, "proj_dim": 128,
        "percent": 5.0, "output_dir": str(tmp_path / "out"),
    })
    metrics = import_path(JOBS["less_select"][1])(config)
    assert metrics["selected_size"] == 3 and metrics["checkpoint_weights"] == pytest.approx(
        list(checkpoint_weights(warm["checkpoints"])), abs=1e-6)
    picked = load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    # Rows map back to the pool (pool_index) and come best first.
    assert picked["instruction"] == [pool[i]["instruction"] for i in picked["pool_index"]]
    assert picked["less_score"] == sorted(picked["less_score"], reverse=True)
    assert sum(metrics["selected_source_counts"].values()) == 3
    card = (tmp_path / "out" / "README.md").read_text()
    assert "selection-less" in card and "Licence: `other`" in card and str(tmp_path) not in card
    assert (tmp_path / "out" / "scores.png").is_file()


@pytest.mark.parametrize("recipe", ["less_warmup.yaml", "less_cpu_warmup.yaml", "less_cpu_select.yaml", "less_llama2_mmlu.yaml"])
def test_recipes_take_flag_overrides(recipe):
    from hf_ext.config import JOBS, import_path, load_recipe, parse_config

    values = load_recipe(Path(__file__).parents[1] / "recipes" / recipe)
    config = parse_config(import_path(JOBS[values.pop("job")][0]), values, ["--seed", "7", "--max_length", "64"])
    assert (config.seed, config.max_length) == (7, 64)
    if recipe == "less_warmup.yaml":  # the paper's warmup settings
        assert (config.lora_r, config.lora_alpha, config.lora_dropout, config.learning_rate) == (128, 512, 0.1, 2e-5)
        assert (config.num_train_epochs, config.warmup_steps, config.save_strategy) == (4, 0.03, "epoch")
    if recipe == "less_llama2_mmlu.yaml":
        assert (config.proj_dim, config.percent, config.target_subtask_column) == (8192, 5.0, "subject")


def test_decoder_split_only_where_logits_are_head_of_decoder():
    """The response-positions-only head is used when it gives the model's own logits, not when the
    model changes them after the head (soft-capping, logit scales), nor with a LoRA factor outside the decoder."""
    from hf_ext.select.less.gradients import _decoder_split
    from hf_ext.testing import tiny_llama

    model = tiny_llama().eval()
    split = _decoder_split(model, [("model.layers.0.self_attn.q_proj.lora_A.default.weight", None)])
    assert split is not None and split[0] is model.model and split[1] == "model." and split[2] is model.lm_head
    assert _decoder_split(model, [("lm_head.lora_A.default.weight", None)]) is None

    class Scaled(type(model)):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 0.5
            return out

    scaled = Scaled(model.config).eval()
    assert _decoder_split(scaled, []) is None
