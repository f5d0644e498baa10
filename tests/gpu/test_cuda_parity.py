"""The CPU tests' checks on a CUDA device: the SAE featurizer, the LESS gradient featurizer,
CriticRMTrainer and RankingRewardTrainer (padded = packed), StitchTrainer and a merge.

Each test runs the same computation on the CPU and on the GPU and holds the GPU to the CPU
result (float32, TF32 off), besides the CPU test's own reference. Without CUDA every test is
skipped with that reason. ``make gpu-check`` runs this file and the ``--quick`` benchmarks with
``--device cuda``. ``HF_EXT_TEST_DEVICE=cpu`` runs the same checks CPU-against-CPU, which only
proves the tests themselves run (used where no GPU is lent).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from datasets import Dataset

DEVICE = os.environ.get("HF_EXT_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False); run with make gpu-check on a GPU machine")


@pytest.fixture(autouse=True)
def exact_float32():
    # TF32 matmuls round to 10 mantissa bits: the parity checks compare true float32.
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# -- SAE featurizer (tests/test_sae_featurizer.py) -------------------------------------------------
from test_sae_featurizer import models  # noqa: E402,F401  (the CPU test's fixture: the same models)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_sae_featurizer_ids_on_the_device_equal_the_cpu_reference(models, kind):
    from test_sae_featurizer import ROWS, reference

    from hf_ext.dist import map_features
    from hf_ext.select.sae import SAEFeaturizer

    kw = dict(model=str(models / kind), sae=str(models / "sae"), layer=1, threshold=0.05, max_length=64,
              batch_size=4, max_batch_tokens=96)
    on_device = map_features(Dataset.from_dict(ROWS), SAEFeaturizer(**kw, device=DEVICE), batch_size=4)
    assert next(SAEFeaturizer(**kw, device=DEVICE).load()._model.parameters()).device.type == DEVICE
    expected = reference(models, kind, layer=1, threshold=0.05)
    assert on_device["sae_ids"] == [e[0] for e in expected]
    for got, (_, want) in zip(on_device["sae_values"], expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_sae_featurizer_bfloat16_on_the_device_agrees_with_float32(models):
    from test_sae_featurizer import ROWS

    from hf_ext.select.sae import SAEFeaturizer

    kw = dict(model=str(models / "llama"), sae=str(models / "sae"), layer=1, threshold=0.05, max_length=64, device=DEVICE)
    full = SAEFeaturizer(**kw)(Dataset.from_dict(ROWS)[:])
    half = SAEFeaturizer(**kw, dtype="bfloat16")(Dataset.from_dict(ROWS)[:])
    jaccard = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(full["sae_ids"], half["sae_ids"])]
    assert np.mean(jaccard) > 0.8


# -- LESS gradient featurizer (tests/test_less.py) -------------------------------------------------
@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    from datasets import load_dataset
    from test_less import DATA

    from hf_ext.select.less.warmup import LessWarmupConfig, run_less_warmup
    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    pool = load_dataset("json", data_files=str(DATA / "pool_mixed_424.jsonl.gz"), split="train")
    root = tmp_path_factory.mktemp("gpu_less")
    tok = tiny_tokenizer()
    save_tiny(root / "base", tiny_llama(tokenizer=tok), tok)
    config = LessWarmupConfig(model_name_or_path=str(root / "base"), output_dir=str(root / "warmup"), lora_r=4, lora_alpha=16,
                              num_train_epochs=1, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                              learning_rate=1e-3, warmup_fraction=0.1, max_length=96, seed=0)
    metrics = run_less_warmup(config, dataset=pool.select(range(200)))
    return {"base": str(root / "base"), "checkpoints": metrics["checkpoints"], "pool": pool.select(range(200, 224))}


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_gradient_features_on_the_device_equal_the_cpu_features(warm, kind):
    from hf_ext.select.less import GradientFeaturizer
    from hf_ext.select.less.gradients import FEATURE_COLUMN

    batch = warm["pool"][:]
    feats = {}
    for device in ("cpu", DEVICE):
        fn = GradientFeaturizer(warm["base"], warm["checkpoints"], kind=kind, proj_dim=256, max_length=96, micro_batch_size=4,
                                device=device)
        out = fn(batch)
        feats[device] = np.stack(out[FEATURE_COLUMN])
        assert next(fn._load()["model"].parameters()).device.type == device
    cpu, dev = feats["cpu"], feats[DEVICE]
    assert cpu.shape == dev.shape and np.abs(cpu).sum() > 0
    cos = (cpu * dev).sum(-1) / np.maximum(np.linalg.norm(cpu, axis=-1) * np.linalg.norm(dev, axis=-1), 1e-12)
    assert cos[np.linalg.norm(cpu, axis=-1) > 0].min() > 0.9999


# -- reward trainers (tests/test_critic_rm.py, tests/test_ranking_rm.py) ---------------------------
def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    loss.backward()
    return loss.item(), {n: p.grad.detach().cpu() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _same(a, b, atol):
    assert a[0] == pytest.approx(b[0], abs=atol)
    assert a[1].keys() == b[1].keys() and len(a[1]) > 5
    for name in a[1]:
        assert torch.allclose(a[1][name], b[1][name], atol=atol), name


def test_critic_rm_padded_and_packed_on_the_device_equal_the_cpu_loss_and_gradients(tmp_path):
    from test_critic_rm import config, uneven_dataset

    from hf_ext.testing import tiny_llama, tiny_tokenizer
    from trainers.critic_rm import CriticRMTrainer

    tok = tiny_tokenizer()
    kw = dict(critique_weight_schedule="constant", critique_weight_start=0.5, fast_path_weight=0.5, center_rewards_coefficient=0.01)
    out = {}
    for device in ("cpu", DEVICE):
        for packed in (False, True):
            trainer = CriticRMTrainer(tiny_llama(tokenizer=tok, seed=7), config(tmp_path, padding_free=packed, use_cpu=device == "cpu", **kw),
                                      train_dataset=uneven_dataset(), processing_class=tok)
            assert trainer.args.device.type == device
            out[device, packed] = _loss_and_grads(trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    _same(out[DEVICE, True], out[DEVICE, False], 1e-5)  # packed = padded on the device
    _same(out[DEVICE, False], out["cpu", False], 1e-4)  # the device = the CPU


def test_ranking_rm_padded_and_packed_on_the_device_equal_the_cpu_loss_and_gradients(tmp_path):
    from test_ranking_rm import UNEVEN, _args

    from hf_ext.testing import tiny_sequence_classifier, tiny_tokenizer
    from trainers.ranking_rm import RankingRewardTrainer

    out = {}
    for device in ("cpu", DEVICE):
        for packed in (False, True):
            tok = tiny_tokenizer()
            trainer = RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok, seed=4),
                                           _args(tmp_path, padding_free=packed, center_rewards_coefficient=0.01, use_cpu=device == "cpu"),
                                           train_dataset=Dataset.from_dict(UNEVEN), processing_class=tok)
            assert trainer.args.device.type == device
            out[device, packed] = _loss_and_grads(trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(2)]))
    _same(out[DEVICE, True], out[DEVICE, False], 1e-5)
    _same(out[DEVICE, False], out["cpu", False], 1e-4)


# -- StitchTrainer (tests/test_stitch_trainer.py) ---------------------------------------------------
def test_stitch_trainer_on_the_device_follows_the_cpu_loss_sequence(tmp_path):
    from test_stitch_trainer import TEXTS, _args, _losses

    from hf_ext.lm import pack_texts
    from hf_ext.testing import tiny_llama, tiny_tokenizer
    from trainers.stitch import StitchTrainer

    tok = tiny_tokenizer()
    blocks = pack_texts(tok, TEXTS, block_size=32)
    losses, frozen = {}, {}
    for device in ("cpu", DEVICE):
        seed = tiny_llama(tokenizer=tok, num_layers=2)
        experts = {"a": tiny_llama(tokenizer=tok, num_layers=2, seed=1), "b": tiny_llama(tokenizer=tok, num_layers=2, seed=2)}
        before = {n: p.detach().clone() for n, p in experts["a"].named_parameters()}
        trainer = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path / device, use_cpu=device == "cpu", save_strategy="no"),
                                train_dataset=blocks, processing_class=tok)
        trainer.train()
        losses[device] = _losses(trainer)
        frozen[device] = all(torch.equal(p.detach().cpu(), before[n].cpu()) for n, p in experts["a"].named_parameters())
    assert len(losses[DEVICE]) == 6 and losses[DEVICE][0] != losses[DEVICE][-1]
    assert losses[DEVICE] == pytest.approx(losses["cpu"], rel=1e-3, abs=1e-4)
    assert frozen["cpu"] and frozen[DEVICE]  # experts stay bit-identical


# -- merge (tests/test_merge.py) -------------------------------------------------------------------
def test_merge_methods_on_device_tensors_equal_the_cpu_merge():
    from hf_ext.merge import LinearMerge, TaskArithmetic, TiesMerge, average_models
    from hf_ext.testing import tiny_llama

    gen = torch.Generator().manual_seed(0)
    base, a, b = (torch.randn(64, 48, generator=gen) for _ in range(3))
    w = torch.tensor([0.5, 2.0])
    for method in (LinearMerge(), TaskArithmetic(scale=0.3), TiesMerge(density=0.4)):
        cpu = method.merge([a, b], w, base, key="model.layers.0.mlp.up_proj.weight")
        dev = method.merge([a.to(DEVICE), b.to(DEVICE)], w.to(DEVICE), base.to(DEVICE), key="model.layers.0.mlp.up_proj.weight")
        assert dev.device.type == DEVICE
        torch.testing.assert_close(dev.cpu(), cpu, rtol=1e-6, atol=1e-6)
    models = [tiny_llama(seed=s).to(DEVICE) for s in (0, 1)]
    soup = average_models(models)
    for name, p in soup.state_dict().items():
        torch.testing.assert_close(p.cpu(), (models[0].state_dict()[name].cpu() + models[1].state_dict()[name].cpu()) / 2, rtol=0, atol=1e-7)
