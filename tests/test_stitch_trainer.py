"""StitchTrainer: only stitch parameters train and are saved; frozen models stay bit-identical;
resuming from a checkpoint continues the same loss sequence; two processes under torchrun; a
default run learns and logs its gates; save_model / push_to_hub write the stitch card; bad input.
FutureWarnings (deprecated names) raised on these code paths fail the tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_ext.adapters.stitch import CONFIG_NAME, WEIGHTS_NAME, StitchConfig, StitchedModel
from hf_ext.lm import pack_texts
from hf_ext.testing import tiny_llama, tiny_tokenizer
from trainers.stitch import StitchTrainer, StitchTrainingConfig

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("error::FutureWarning")
TEXTS = [f"Question: what is {i} plus {i + 1}? Answer: {2 * i + 1}. The quick brown fox jumps over the lazy dog." for i in range(120)]


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    seed = tiny_llama(tokenizer=tok, num_layers=2)
    experts = {"a": tiny_llama(tokenizer=tok, num_layers=2, seed=1), "b": tiny_llama(tokenizer=tok, num_layers=2, seed=2)}
    return tok, seed, experts, pack_texts(tok, TEXTS, block_size=32)


def _args(tmp_path, **kw):
    values = dict(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, logging_steps=1, save_steps=3,
                  use_cpu=True, seed=0, data_seed=0, learning_rate=5e-2)
    values.update(kw)
    return StitchTrainingConfig(**values)


def _layers(**kw):
    """The stitch layers of these tests, given to StitchTrainer as stitch_config (TRL's peft_config way)."""
    return StitchConfig(**{"num_stitch_layers": 2, "gate_offset": 2.0, **kw})


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_only_stitch_parameters_train_and_are_saved(setup, tmp_path):
    tok, seed, experts, blocks = setup
    frozen = {f"{name}.{k}": v.clone() for name, m in {"seed": seed, **experts}.items() for k, v in m.state_dict().items()}
    trainer = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path), stitch_config=_layers(), train_dataset=blocks,
                            processing_class=tok)
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
    anneal = dict(gate_offset_final=1.0, gate_offset_anneal_steps=4)  # the β schedule resumes too (from β = 6)
    full = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path / "full", **anneal), stitch_config=_layers(gate_offset=6.0),
                         train_dataset=blocks, processing_class=tok)
    full.train()
    reference = _losses(full)
    resumed = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path / "resumed", **anneal), stitch_config=_layers(gate_offset=6.0),
                            train_dataset=blocks, processing_class=tok)
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
        "from hf_ext.adapters.stitch import StitchConfig\n"
        "from trainers.stitch import StitchTrainer, StitchTrainingConfig\n"
        "tok = tiny_tokenizer(); seed = tiny_llama(tokenizer=tok, num_layers=2)\n"
        "experts = {'a': tiny_llama(tokenizer=tok, num_layers=2, seed=1)}\n"
        "before = {k: v.clone() for k, v in seed.state_dict().items()}\n"
        f"blocks = pack_texts(tok, {TEXTS[:40]!r}, block_size=32)\n"
        "args = StitchTrainingConfig(output_dir=sys.argv[1], max_steps=3, per_device_train_batch_size=2, use_cpu=True,\n"
        "    learning_rate=5e-2, save_strategy='no', ddp_backend='gloo')\n"
        "trainer = StitchTrainer(model=seed, experts=experts, args=args, train_dataset=blocks,\n"
        "    stitch_config=StitchConfig(num_stitch_layers=2, gate_offset=2.0))\n"
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


def test_bts_config_carries_the_stitch_settings_checked_by_their_own_dataclasses(tmp_path):
    import dataclasses

    from hf_ext.config import load_recipe, parse_config
    from trainers.jobs.bts import BTSConfig

    values = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "bts_tiny.yaml")
    values.pop("job")
    config = parse_config(BTSConfig, {**values, "output_dir": str(tmp_path / "out")})
    layers, args = config.stitch_config(), config.stitch_training_args(tmp_path / "ckpt")
    # The recipe's stitch settings reach the model's StitchConfig and the trainer's config unchanged.
    assert (layers.num_stitch_layers, layers.gate_offset, layers.expert_names) == (2, 16.0, ["math", "code", "german"])
    assert (args.max_steps, args.learning_rate, args.gate_offset_final, args.gate_offset_anneal_steps) == (200, 0.003, 2.0, 0.3)
    assert (args.optim.value, args.lr_scheduler_type.value, args.warmup_steps, args.per_device_train_batch_size, args.seed) == (
        "adafactor", "cosine", 10, 16, 0)
    # one value, one place: the stitch layers are StitchConfig's alone, not mirrored in the training arguments
    assert not any(hasattr(args, name) for name in ("num_stitch_layers", "stitch_after", "stitch_dropout", "stitch_init", "gate_offset"))
    # One default per setting: what the recipe leaves out is the component's own default.
    bare = BTSConfig(output_dir=str(tmp_path / "bare"))
    own = bare.stitch_config()
    for f in dataclasses.fields(StitchConfig):
        if f.name not in ("expert_names", "seed_model", "expert_models"):
            assert getattr(own, f.name) == getattr(StitchConfig(), f.name), f.name
    trained = bare.stitch_training_args(tmp_path / "ckpt")
    reference = StitchTrainingConfig(output_dir=str(tmp_path / "ref"))
    for name in ("learning_rate", "optim", "adam_epsilon", "gate_offset_final", "gate_offset_anneal_steps"):
        assert getattr(trained, name) == getattr(reference, name), name
    assert bare.stitch == {} and bare.stitch_training == {"max_steps": 200}  # building them changes nothing


def test_the_stitch_mix_has_the_configured_ratios_and_bad_ratios_fail(tmp_path):
    import datasets

    from hf_ext.errors import InputError
    from trainers.jobs.bts import BTSConfig, mixed_blocks, run_bts

    blocks = {name: datasets.Dataset.from_dict({"input_ids": [[i, i] for i in range(size)], "domain": [name] * size})
              for name, size in {"math": 5, "code": 50, "german": 50, "general": 500}.items()}
    mix = mixed_blocks(blocks, {"math": 0.15, "code": 0.15, "german": 0.15, "general": 0.55}, 200, seed=0)
    counts = {name: mix["domain"].count(name) for name in blocks}
    assert counts == {"math": 30, "code": 30, "german": 30, "general": 110}  # math: 5 blocks, drawn with replacement
    with pytest.raises(InputError, match="sum to 1"):
        BTSConfig(mix_ratios={"math": 0.5, "code": 0.5, "german": 0.5, "general": 0.5})
    with pytest.raises(InputError, match="BTSConfig.stitch_training.gate_offset_final=20.0 is larger .* sharpen the gates"):
        BTSConfig(stitch_training={"max_steps": 10, "gate_offset_final": 20.0})
    with pytest.raises(InputError, match="exactly the keys"):
        BTSConfig(mix_ratios={"math": 1.0})
    with pytest.raises(InputError, match="data_dir is not set"):
        run_bts(BTSConfig(output_dir=str(tmp_path)))  # no default folder: the staged data lives outside the repo


# ---- defaults that learn, gate logging, the stitch card ---------------------------------------
@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """A README-style run from Hub ids (resolved to local folders): default StitchTrainingConfig,
    text datasets packed by the trainer, 20 steps, held-out loss before and after."""
    import datasets

    from hf_ext import models

    root = tmp_path_factory.mktemp("default_run")
    tok = tiny_tokenizer()
    saved = dict(models._REGISTRY)
    for name, seed in {"seed": 0, "expert-a": 1, "expert-b": 2}.items():
        tiny_llama(tokenizer=tok, num_layers=4, seed=seed).save_pretrained(root / name)
        models.register_local_model(f"org/tiny-{name}", root / name)
    try:
        args = StitchTrainingConfig(output_dir=str(root / "out"), max_steps=20, per_device_train_batch_size=4, max_length=32,
                                    logging_steps=1, use_cpu=True, hub_model_id="user/tiny-stitch")
        text = datasets.Dataset.from_dict({"text": TEXTS[:100]})
        held_out = datasets.Dataset.from_dict({"text": TEXTS[100:]})
        # seed by Hub id, one expert by id, the other by the local path the resolver maps it to
        trainer = StitchTrainer(model="org/tiny-seed", experts={"a": "org/tiny-expert-a", "b": str(root / "expert-b")}, args=args,
                                train_dataset=text, eval_dataset=held_out, processing_class=tok)
        before = trainer.evaluate()["eval_loss"]
        trainer.train()
        after = trainer.evaluate()["eval_loss"]
        yield trainer, before, after, root
    finally:
        models._REGISTRY.clear()
        models._REGISTRY.update(saved)


def test_a_default_run_learns_and_logs_its_gates(default_run):
    trainer, before, after, _ = default_run
    assert after < before - 1e-3  # frozen gates (gate_offset_final=None) keep the seed's loss: see the next test
    args, model = trainer.args, trainer.model
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == list(range(1, 21))
    # beta follows the BTS schedule: 16 -> 2 over the first 30% of the steps; the configs keep the start value
    assert [h["stitch/gate_offset"] for h in logs] == pytest.approx([16 - 14 * min(1.0, (s - 1) / 6) for s in range(1, 21)])
    assert model.stitch_config.gate_offset == 16.0 and model.gate_offset == 2.0 and not hasattr(args, "gate_offset")
    assert json.loads((trainer.args.output_dir and Path(args.output_dir) / "checkpoint-20" / CONFIG_NAME).read_text())["gate_offset"] == 2.0
    # beta is runtime state of the run: the trainer state holds it (saved with every checkpoint), not a config
    state = json.loads((Path(args.output_dir) / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["GateOffsetAnneal"]["attributes"] == {"gate_offset": 2.0}
    assert state["stateful_callbacks"]["GateOffsetAnneal"]["args"] == {"start": 16.0, "final": 2.0, "steps": 0.3}
    for k, layer in enumerate(model.stitch):
        names = ["hub", "a", "b"] if layer.kind == "e2h" else ["a", "b"]
        assert all(f"stitch/{k}/{layer.kind}_{n}" in h for h in logs for n in names)
        if layer.kind == "e2h":  # softmax weights: hub + experts = 1 at every step
            assert all(sum(h[f"stitch/{k}/e2h_{n}"] for n in names) == pytest.approx(1.0, abs=1e-5) for h in logs)
        opened = [h[f"stitch/{k}/{layer.kind}_a"] for h in logs]
        assert opened[0] < 1e-5 < 0.01 < opened[-1]  # closed at the identity start (~e^-16), open once beta is 2
    assert trainer.model.stitch_config.seed_model == "org/tiny-seed"
    assert trainer.model.stitch_config.expert_models == ["org/tiny-expert-a", "org/tiny-expert-b"]


def test_frozen_identity_start_keeps_the_seed_loss(default_run, tmp_path):
    trainer, before, _, _ = default_run
    model = trainer.model
    args = _args(tmp_path, max_steps=3, gate_offset_final=None, save_strategy="no", learning_rate=1e-3)
    frozen = StitchTrainer(model=model.seed, experts=dict(model.experts), args=args, train_dataset=trainer.train_dataset,
                           stitch_config=_layers(num_stitch_layers=4, gate_offset=16.0),
                           eval_dataset=trainer.eval_dataset, processing_class=trainer.processing_class)
    frozen.train()
    assert frozen.evaluate()["eval_loss"] == pytest.approx(before, abs=1e-5)
    assert {h["stitch/gate_offset"] for h in frozen.state.log_history if "loss" in h} == {16.0}


def test_save_model_writes_the_stitch_card_with_the_gate_plot(default_run, tmp_path):
    import yaml

    trainer, _, after, _ = default_run
    trainer.save_model(str(tmp_path / "final"))
    card = (tmp_path / "final" / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == ["org/tiny-seed", "org/tiny-expert-a", "org/tiny-expert-b"]
    assert front["base_model_relation"] == "adapter" and front["library_name"] == "hf-ext"
    assert "generated_from_trainer" not in card  # not Trainer's generic card
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(after)
    assert "![" in card and "(gates.png)" in card
    assert (tmp_path / "final" / "gates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "final" / CONFIG_NAME).read_text())
    assert saved["seed_model"] == "org/tiny-seed" and saved["expert_models"] == ["org/tiny-expert-a", "org/tiny-expert-b"]


def test_push_to_hub_uploads_the_stitch_card(default_run, local_hub):
    from hf_ext.hub import pull

    trainer, _, _, _ = default_run
    trainer.push_to_hub()
    folder = pull("user/tiny-stitch", repo_type="model")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    assert {"README.md", "gates.png", CONFIG_NAME, WEIGHTS_NAME} <= names and "model.safetensors" not in names
    assert "base_model:\n- org/tiny-seed" in (folder / "README.md").read_text(encoding="utf-8")
    _assert_stitch_card(folder / "README.md")
    loaded = StitchedModel.from_pretrained(trainer.model.seed, dict(trainer.model.experts), folder)
    assert loaded.gate_offset == trainer.model.gate_offset == 2.0


def _assert_stitch_card(path):
    import yaml

    from hf_ext.hub.cards import LIBRARY_NAME

    card = path.read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == ["org/tiny-seed", "org/tiny-expert-a", "org/tiny-expert-b"]  # the seed first, then the experts
    assert front["base_model_relation"] == "adapter" and front["library_name"] == LIBRARY_NAME and "branch-train-stitch" in front["tags"]
    assert "generated_from_trainer" not in card and "Stitch layers (Branch-Train-Stitch)" in card  # not Trainer's generic card


def test_push_to_hub_true_runs_push_the_stitch_card_on_save_model(default_run, local_hub, tmp_path, monkeypatch):
    import transformers.utils.hub
    from huggingface_hub import HfApi

    from hf_ext.hub import pull

    # Trainer creates the repo (push_to_hub=True) through transformers' shared HfApi, made before the test set HF_ENDPOINT
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", HfApi(endpoint=local_hub.endpoint))
    trainer, _, _, _ = default_run
    args = _args(tmp_path / "auto", max_steps=2, save_strategy="no", push_to_hub=True, hub_model_id="user/auto-stitch",
                 gate_offset_final=None)
    run = StitchTrainer(model=trainer.model, args=args, train_dataset=trainer.train_dataset, processing_class=trainer.processing_class)
    run.train()
    run.save_model(str(tmp_path / "final"))  # Trainer's push_to_hub=True path: save_model pushes, through StitchTrainer.push_to_hub
    folder = pull("user/auto-stitch", repo_type="model")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    assert {"README.md", CONFIG_NAME, WEIGHTS_NAME} <= names and not names & {"model.safetensors", "pytorch_model.bin"}
    _assert_stitch_card(folder / "README.md")
    from safetensors.torch import load_file

    pushed, saved = load_file(folder / WEIGHTS_NAME), load_file(tmp_path / "final" / WEIGHTS_NAME)
    assert pushed.keys() == saved.keys() and all(torch.equal(pushed[k], saved[k]) for k in saved)  # this run's stitch weights


def test_bad_input_gets_one_clear_error(setup, tmp_path):
    import datasets

    from hf_ext.errors import InputError

    tok, seed, experts, blocks = setup
    with pytest.raises(InputError, match="peft_config.*only trainable parameters"):
        StitchTrainer(model=seed, experts=experts, args=_args(tmp_path), train_dataset=blocks, peft_config=object())
    with pytest.raises(InputError, match="gate_offset_final=4.0 is larger than gate_offset=2.0.*sharpen the gates"):
        StitchTrainer(model=seed, experts=experts, args=_args(tmp_path, gate_offset_final=4.0), stitch_config=_layers(), train_dataset=blocks)
    stitched = StitchedModel(seed, experts, StitchConfig(num_stitch_layers=2, gate_offset=1.0))
    with pytest.raises(InputError, match="larger than the model's gate offset beta=1.0.*sharpen"):
        StitchTrainer(model=stitched, args=_args(tmp_path, gate_offset_final=1.5), train_dataset=blocks)
    in_memory = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path, hub_model_id="user/x"), stitch_config=_layers(),
                              train_dataset=blocks)
    with pytest.raises(InputError, match="Set stitch_config.seed_model and stitch_config.expert_models"):
        in_memory.push_to_hub()  # models built in memory have no Hub ids: refused before anything is written or sent
    assert not (tmp_path / "README.md").exists()
    with pytest.raises(InputError, match=r"eval_dataset has neither .*'input_ids'.* nor the text column 'text'.*\['prompt'\]"):
        StitchTrainer(model=seed, experts=experts, args=_args(tmp_path), stitch_config=_layers(), train_dataset=blocks,
                      processing_class=tok, eval_dataset=datasets.Dataset.from_dict({"prompt": ["no text column"]}))


def test_stitch_layer_settings_live_in_stitch_config_and_moved_fields_say_where(setup, tmp_path):
    from hf_ext.config import parse_config
    from hf_ext.errors import InputError

    tok, seed, experts, blocks = setup
    message = r"num_stitch_layers moved to StitchConfig: pass StitchTrainer\(stitch_config=StitchConfig\(num_stitch_layers=\.\.\.\)\)"
    with pytest.raises(InputError, match=message):
        _args(tmp_path, num_stitch_layers=2)
    with pytest.raises(InputError, match=r"stitch_dropout moved to StitchConfig: pass StitchTrainer\(stitch_config=StitchConfig\(dropout="
                                         r".*gate_offset moved to StitchConfig: pass StitchTrainer\(stitch_config=StitchConfig\(gate_offset="):
        _args(tmp_path, stitch_dropout=0.1, gate_offset=4.0)
    with pytest.raises(InputError, match=message):  # a recipe or flag gets the same error, not "unknown key"
        parse_config(StitchTrainingConfig, {"output_dir": str(tmp_path), "num_stitch_layers": 2})
    # the layers come from stitch_config (or StitchConfig's defaults), or from an already-stitched model
    built = StitchTrainer(model=seed, experts=experts, args=_args(tmp_path), stitch_config=_layers(stitch_after=[1]), train_dataset=blocks)
    assert built.model.stitch_after == [1] and built.model.gate_offset == 2.0
    with pytest.raises(InputError, match=r"num_stitch_layers=4 exceeds the model depth \(2 layers\)"):  # StitchConfig's default K
        StitchTrainer(model=seed, experts=experts, args=_args(tmp_path), train_dataset=blocks)
    with pytest.raises(InputError, match="Pass `stitch_config` only with a seed model"):
        StitchTrainer(model=built.model, args=_args(tmp_path), stitch_config=_layers(), train_dataset=blocks)
