"""CriticRMTrainer: parity with TRL's RewardTrainer, the critique loss, reward position,
λ schedules, PEFT, resume, inference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from hf_ext.errors import InputError
from hf_ext.testing import tiny_llama, tiny_sequence_classifier, tiny_tokenizer
from trainers.critic_rm import (
    CriticRewardModel,
    CriticRMConfig,
    CriticRMTrainer,
    attach_reward_head,
    critique_weight,
    forward_rewards,
    load_critic_lm,
)

PROMPTS = ["What is the capital of France?", "Name a prime number.", "How many legs has a spider?", "Spell cat."]
CHOSEN = ["Paris is the capital of France.", "Seven is prime.", "A spider has eight legs.", "c a t"]
REJECTED = ["London.", "Nine is prime.", "Six legs.", "k a t"]
CRIT_C = ["The answer is correct and direct. Score: 9", "Correct, 7 is prime. Score: 8",
          "Right, eight legs. Score: 9", "Correct spelling. Score: 8"]
CRIT_R = ["Wrong city. Score: 2", "Nine is 3 times 3. Score: 1", "Insects have six legs. Score: 2", "Misspelled. Score: 2"]


def text_dataset(n: int = 8, margin: bool = False) -> Dataset:
    rows = {"prompt": [], "chosen": [], "rejected": [], "chosen_critique": [], "rejected_critique": []}
    for i in range(n):
        j = i % 4
        for key, values in zip(rows, (PROMPTS, CHOSEN, REJECTED, CRIT_C, CRIT_R)):
            rows[key].append(values[j])
    if margin:
        rows["margin"] = [0.5 * (i % 3) for i in range(n)]
    return Dataset.from_dict(rows)


def config(tmp_path, **kw) -> CriticRMConfig:
    defaults = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                    report_to="none", bf16=False, activation_checkpointing=False, use_cpu=True, logging_steps=1,
                    save_strategy="no", seed=0, max_length=512)
    defaults.update(kw)
    return CriticRMConfig(**defaults)


def twin_models(seed: int = 0):
    """A LlamaForSequenceClassification and a causal LM + reward head with identical weights."""
    tok = tiny_tokenizer()
    seq = tiny_sequence_classifier(tokenizer=tok, seed=seed)
    causal = tiny_llama(tokenizer=tok, seed=seed + 1)
    causal.model.load_state_dict(seq.model.state_dict())
    attach_reward_head(causal)
    causal.score.weight.data.copy_(seq.score.weight.data)
    return seq, causal, tok


def test_lambda_zero_equals_trl_reward_loss_with_margin_and_centering(tmp_path):
    seq, causal, tok = twin_models()
    ids = Dataset.from_dict({
        "chosen_ids": [tok(p + c)["input_ids"] + [tok.eos_token_id] for p, c in zip(PROMPTS, CHOSEN)],
        "rejected_ids": [tok(p + r)["input_ids"] + [tok.eos_token_id] for p, r in zip(PROMPTS, REJECTED)],
        "margin": [0.0, 0.5, 1.0, 2.0],
    })
    common = dict(output_dir=str(tmp_path / "o"), report_to="none", bf16=False, activation_checkpointing=False,
                  use_cpu=True, center_rewards_coefficient=0.01, per_device_train_batch_size=4)
    trl_trainer = RewardTrainer(seq, RewardConfig(**common), train_dataset=ids, processing_class=tok)
    ours = CriticRMTrainer(causal, CriticRMConfig(**common, critique_weight_start=0.0, critique_weight_end=0.0),
                           train_dataset=ids, processing_class=tok)
    rows = [ids[i] for i in range(4)]
    ref = trl_trainer.compute_loss(trl_trainer.model, trl_trainer.data_collator(rows))
    got = ours.compute_loss(ours.model, ours.data_collator(rows))
    assert ours.critique_weight() == 0.0
    assert got.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert ours._metrics["train"]["accuracy"][-1] == pytest.approx(trl_trainer._metrics["train"]["accuracy"][-1])


def test_bradley_terry_at_equal_rewards_is_ln2(tmp_path):
    tok = tiny_tokenizer()
    model = attach_reward_head(tiny_llama(tokenizer=tok))
    model.score.weight.data.zero_()  # every reward is 0
    args = config(tmp_path, critique_weight_start=0.0, critique_weight_end=0.0, center_rewards_coefficient=0.1)
    trainer = CriticRMTrainer(model, args, train_dataset=text_dataset(4), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(2), abs=1e-6)


def test_critique_loss_counts_only_critique_tokens(tmp_path):
    tok = tiny_tokenizer()
    args = config(tmp_path, critique_weight_schedule="constant", critique_weight_start=1.0)
    trainer = CriticRMTrainer(tiny_llama(tokenizer=tok), args, train_dataset=text_dataset(4), processing_class=tok)
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    # Reference: full logits, cross-entropy on exactly the positions whose NEXT token is a critique token.
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["input_ids"][:, 1:].masked_fill(batch["critique_mask"][:, 1:] == 0, -100)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    n_critique = sum(len(r["chosen_ids"]) - sum(1 - m for m in r["chosen_critique_mask"]) for r in rows)
    assert int(batch["critique_mask"][:4].sum()) == n_critique  # mask covers critique + EOS of chosen rows only
    for r in rows:  # the mask is a suffix: prompt/response tokens never count
        mask = r["chosen_critique_mask"]
        first = mask.index(1)
        assert set(mask[:first]) == {0} and set(mask[first:]) == {1}
        assert r["chosen_ids"][-1] == tok.eos_token_id


def test_reward_is_read_at_last_non_pad_token():
    tok = tiny_tokenizer()
    model = attach_reward_head(tiny_llama(tokenizer=tok)).eval()
    rm = CriticRewardModel(model, tok)
    seqs = [tok("a short one")["input_ids"], tok("a much longer sequence of several more words")["input_ids"]]
    batched = rm.rewards(seqs)
    alone = [rm.rewards([s])[0] for s in seqs]
    assert batched == pytest.approx(alone, abs=1e-5)
    with torch.no_grad():  # reference: the head on the last hidden state of the unpadded sequence
        hidden = model.model(input_ids=torch.tensor([seqs[0]])).last_hidden_state[0, -1]
        assert model.score(hidden).item() == pytest.approx(alone[0], abs=1e-5)


def test_lambda_schedules():
    assert critique_weight("constant", 0.7, 0.1, 0.5) == 0.7
    assert critique_weight("linear", 0.9, 0.1, 0.5) == pytest.approx(0.5)
    assert critique_weight("cosine", 0.9, 0.1, 0.0) == pytest.approx(0.9)
    assert critique_weight("cosine", 0.9, 0.1, 0.5) == pytest.approx(0.5)
    assert critique_weight("cosine", 0.9, 0.1, 1.0) == pytest.approx(0.1)
    assert critique_weight("cosine", 0.9, 0.1, 0.25) > critique_weight("linear", 0.9, 0.1, 0.25)
    with pytest.raises(InputError, match="critique_weight_start"):
        CriticRMConfig("/tmp/x", critique_weight_start=1.5, report_to="none", use_cpu=True, bf16=False)


def test_training_logs_both_losses_accuracy_and_lambda(tmp_path):
    tok = tiny_tokenizer()
    trainer = CriticRMTrainer(tiny_llama(tokenizer=tok), config(tmp_path, max_steps=3, critique_weight_schedule="linear"),
                              train_dataset=text_dataset(12, margin=True), eval_dataset=text_dataset(4), processing_class=tok)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for key in ("reward_loss", "critique_loss", "accuracy", "critique_weight", "margin"):
        assert key in logs[0]
    lams = [h["critique_weight"] for h in logs]
    assert lams == pytest.approx([0.9, 0.9 - 0.8 / 3, 0.9 - 1.6 / 3])  # linear, t = step / max_steps
    for h in logs:  # logged loss is exactly λ·critique + (1 − λ)·BT
        lam = h["critique_weight"]
        assert h["loss"] == pytest.approx(lam * h["critique_loss"] + (1 - lam) * h["reward_loss"], rel=1e-3, abs=1e-4)
    from trainers.critic_rm import compute_reward_accuracy
    trainer.compute_metrics = compute_reward_accuracy
    metrics = trainer.evaluate()
    assert metrics["eval_critique_loss"] > 0
    preds = trainer.predict(trainer.eval_dataset).predictions
    assert preds.shape == (4, 2)
    assert metrics["eval_accuracy"] == pytest.approx(float((preds[:, 0] > preds[:, 1]).mean()))


def test_m_critique_score_is_mean_of_per_critique_rewards():
    tok = tiny_tokenizer()
    rm = CriticRewardModel(attach_reward_head(tiny_llama(tokenizer=tok)).eval(), tok, max_new_tokens=6)
    critiques = rm.critique(PROMPTS[0], CHOSEN[0], num_critiques=3, seed=1)
    per_critique = rm.reward_with_critiques(PROMPTS[0], CHOSEN[0], critiques)
    assert len(critiques) == 3 and len(set(per_critique)) > 1
    assert rm.score(PROMPTS[0], CHOSEN[0], num_critiques=3, seed=1) == pytest.approx(sum(per_critique) / 3, abs=1e-5)
    # batched scoring (left-padded generation) gives each pair the mean of its own critiques' rewards
    batch = rm.score_batch(PROMPTS[:2], CHOSEN[:2], num_critiques=1)
    for p, c, got in zip(PROMPTS[:2], CHOSEN[:2], batch):
        (crit,) = rm.critique(p, c, num_critiques=1)
        assert got == pytest.approx(rm.reward_with_critiques(p, c, [crit])[0], abs=1e-4)
    fast = rm.score(PROMPTS[0], CHOSEN[0], num_critiques=0)
    from trainers.critic_rm import critique_context
    assert fast == pytest.approx(rm.rewards([critique_context(tok, PROMPTS[0], CHOSEN[0])])[0])


def test_bad_inputs(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(InputError, match="rejected_critique"):
        CriticRMTrainer(tiny_llama(tokenizer=tok), config(tmp_path), processing_class=tok,
                        train_dataset=text_dataset(4).remove_columns("rejected_critique"))
    with pytest.raises(InputError, match="chosen"):
        CriticRMTrainer(tiny_llama(tokenizer=tok), config(tmp_path), processing_class=tok,
                        train_dataset=text_dataset(4).remove_columns("chosen"))
    with pytest.raises(InputError, match="num_labels=1"):
        model = tiny_llama(tokenizer=tok)
        model.add_module("score", torch.nn.Linear(32, 2, bias=False))
        CriticRMTrainer(model, config(tmp_path), train_dataset=text_dataset(4), processing_class=tok)
    with pytest.raises(InputError, match="causal LM"):
        CriticRMTrainer(tiny_sequence_classifier(tokenizer=tok), config(tmp_path), train_dataset=text_dataset(4), processing_class=tok)


def test_tokenizer_without_pad_token_uses_eos(tmp_path):
    tok = tiny_tokenizer()
    tok.pad_token = None
    trainer = CriticRMTrainer(tiny_llama(tokenizer=tok), config(tmp_path, max_steps=1), train_dataset=text_dataset(4), processing_class=tok)
    assert tok.pad_token == tok.eos_token and trainer.data_collator.pad_token_id == tok.eos_token_id
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_peft_trains_and_saves_reward_head(tmp_path):
    from peft import LoraConfig

    tok = tiny_tokenizer()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    args = config(tmp_path, max_steps=2, activation_checkpointing=True, learning_rate=5e-2)
    model = tiny_llama(tokenizer=tok)
    model.config._name_or_path = str(tmp_path / "base")
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    trainer = CriticRMTrainer(model, args, train_dataset=text_dataset(8), processing_class=tok, peft_config=lora)
    assert lora.modules_to_save is None  # the user's config is not mutated
    head_before = trainer.model.base_model.model.score.modules_to_save["default"].weight.detach().clone()
    trainer.train()
    head_after = trainer.model.base_model.model.score.modules_to_save["default"].weight.detach()
    assert not torch.equal(head_before, head_after)  # the head trained (not frozen at its init)
    trainer.save_model(str(tmp_path / "adapter"))
    from safetensors import safe_open
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert any("score" in k for k in f.keys())
    reloaded = CriticRewardModel(load_critic_lm(str(tmp_path / "adapter")).eval(), tok)
    live = CriticRewardModel(trainer.model.eval(), tok)
    seq = [tok("check this reward")["input_ids"]]
    assert reloaded.rewards(seq)[0] == pytest.approx(live.rewards(seq)[0], abs=1e-5)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    tok = tiny_tokenizer()
    data = text_dataset(16)

    def run(out, max_steps, resume=None):
        args = config(tmp_path, output_dir=str(out), max_steps=2, save_strategy="steps", save_steps=1, per_device_train_batch_size=2)
        trainer = CriticRMTrainer(tiny_llama(tokenizer=tok, seed=3), args, train_dataset=data, processing_class=tok)
        if max_steps < 2:
            trainer.add_callback(_StopAt(max_steps))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full", 2)
    run(tmp_path / "cut", 1)
    resumed = run(tmp_path / "cut", 2, resume=str(tmp_path / "cut" / "checkpoint-1"))
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    reloaded = load_critic_lm(str(tmp_path / "cut" / "checkpoint-2"))
    assert torch.allclose(reloaded.score.weight, full.model.score.weight, atol=1e-6)


class _StopAt:
    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):  # every other callback event is a no-op
        return lambda *a, **k: None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control


def test_forward_rewards_skip_vocabulary_head_without_critique():
    tok = tiny_tokenizer()
    model = attach_reward_head(tiny_llama(tokenizer=tok))
    from trainers.critic_rm import _HiddenTap
    tap = _HiddenTap(model)
    model.model.register_forward_hook(tap)
    ids = torch.tensor([tok("hello there")["input_ids"]])
    _, out = forward_rewards(model, tap, ids, torch.ones_like(ids), logits_to_keep=1)
    assert out.logits.shape[1] == 1


def test_fast_path_weight_trains_the_reward_before_the_critique(tmp_path):
    tok = tiny_tokenizer()
    args = config(tmp_path, critique_weight_start=0.0, critique_weight_end=0.0, fast_path_weight=1.0)
    trainer = CriticRMTrainer(tiny_llama(tokenizer=tok), args, train_dataset=text_dataset(4), processing_class=tok)
    rows = [trainer.train_dataset[i] for i in range(4)]
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    rm = CriticRewardModel(trainer.model, tok)
    contexts = [r[f"{side}_ids"][: r[f"{side}_critique_mask"].index(1)] for side in ("chosen", "rejected") for r in rows]
    fast = torch.tensor(rm.rewards(contexts))
    ref = -F.logsigmoid(fast[:4] - fast[4:]).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


# ---- issue 13.7: the reward head survives every usual save/load, or loading refuses


def _trained(tmp_path, tok, **kw):
    trainer = CriticRMTrainer(tiny_llama(tokenizer=tok, seed=5), config(tmp_path, max_steps=1, learning_rate=5e-2),
                              train_dataset=text_dataset(4), processing_class=tok, **kw)
    trainer.train()
    return trainer


def _live_rewards(model, tok):
    rm = CriticRewardModel(model.eval(), tok)
    return [rm.score(p, c, num_critiques=0) for p, c in zip(PROMPTS, CHOSEN)]


@pytest.mark.parametrize("max_shard_size", [None, "20KB"])
def test_save_pretrained_round_trip_keeps_the_reward(tmp_path, max_shard_size):
    tok = tiny_tokenizer()
    trainer = _trained(tmp_path, tok)
    live = _live_rewards(trainer.model, tok)
    saved = tmp_path / "saved"
    trainer.model.save_pretrained(saved, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    tok.save_pretrained(saved)
    assert not (saved / "reward_head.safetensors").exists()  # the head is only in the model's safetensors
    assert (saved / "model.safetensors.index.json").is_file() == (max_shard_size is not None)
    reloaded = CriticRewardModel.from_pretrained(str(saved))
    assert [reloaded.score(p, c, num_critiques=0) for p, c in zip(PROMPTS, CHOSEN)] == pytest.approx(live, abs=1e-6)
    assert torch.equal(reloaded.model.score.weight, trainer.model.score.weight.detach())


def test_peft_save_pretrained_round_trip_keeps_the_reward(tmp_path):
    from peft import LoraConfig

    tok = tiny_tokenizer()
    base = tiny_llama(tokenizer=tok, seed=5)
    base.config._name_or_path = str(tmp_path / "base")
    base.save_pretrained(tmp_path / "base")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = CriticRMTrainer(base, config(tmp_path, max_steps=1, learning_rate=5e-2), train_dataset=text_dataset(4),
                              processing_class=tok, peft_config=lora)
    trainer.train()
    live = _live_rewards(trainer.model, tok)
    trainer.model.save_pretrained(tmp_path / "adapter")  # PEFT's own save: no reward_head.safetensors
    tok.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "reward_head.safetensors").exists()
    reloaded = CriticRewardModel.from_pretrained(str(tmp_path / "adapter"))
    assert [reloaded.score(p, c, num_critiques=0) for p, c in zip(PROMPTS, CHOSEN)] == pytest.approx(live, abs=1e-6)


def test_loading_without_a_saved_head_refuses(tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    tok = tiny_tokenizer()
    plain = tmp_path / "plain"  # a causal LM that never had a reward head
    tiny_llama(tokenizer=tok).save_pretrained(plain)
    tok.save_pretrained(plain)
    with pytest.raises(InputError, match="plain causal LM.*CriticRMTrainer"):
        CriticRewardModel.from_pretrained(str(plain))
    assert load_critic_lm(str(plain)).score.weight.shape == (1, 32)  # training from a base LM adds a new head

    headless = tmp_path / "headless"  # a Critic-RM checkpoint whose head was stripped from its weights
    attach_reward_head(tiny_llama(tokenizer=tok)).save_pretrained(headless)
    weights = load_file(str(headless / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "score.weight"}, str(headless / "model.safetensors"), {"format": "pt"})
    with pytest.raises(InputError, match="critic_rm.*score.weight"):
        load_critic_lm(str(headless))

    adapter = tmp_path / "adapter"  # LoRA without the head in modules_to_save: the head would be random
    base = attach_reward_head(load_critic_lm(str(plain)))
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(adapter)
    with pytest.raises(InputError, match="carries no reward head.*modules_to_save"):
        load_critic_lm(str(adapter))

    wrong = tmp_path / "wrong"  # a head of the wrong shape
    model = attach_reward_head(tiny_llama(tokenizer=tok))
    model.save_pretrained(wrong)
    save_file({"score.weight": torch.zeros(2, 32)}, str(wrong / "reward_head.safetensors"))
    with pytest.raises(InputError, match=r"shape \(2, 32\)"):
        load_critic_lm(str(wrong))


# ---- issue 19: current names only (transformers' activation_checkpointing, no TRL pad_token)


@pytest.mark.filterwarnings("error::FutureWarning", "error::DeprecationWarning", "error::PendingDeprecationWarning")
def test_critic_rm_paths_raise_no_deprecation_warnings(tmp_path):
    tok = tiny_tokenizer()
    default = CriticRMConfig(str(tmp_path / "d"), report_to="none", use_cpu=True)  # TRL's defaults, current names
    assert default.activation_checkpointing is True and default.gradient_checkpointing is True
    args = config(tmp_path, max_steps=1, activation_checkpointing=True, eval_strategy="steps", eval_steps=1)
    trainer = CriticRMTrainer(tiny_llama(tokenizer=tok), args, train_dataset=text_dataset(4), eval_dataset=text_dataset(4),
                              processing_class=tok)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    tok.save_pretrained(tmp_path / "saved")
    rm = CriticRewardModel.from_pretrained(str(tmp_path / "saved"), max_new_tokens=4)
    assert math.isfinite(rm.score(PROMPTS[0], CHOSEN[0], num_critiques=2))
    assert math.isfinite(rm.score_batch(PROMPTS[:2], CHOSEN[:2], num_critiques=1)[0])


def test_deprecated_names(tmp_path):
    with pytest.raises(InputError, match="pad_token.*tokenizer.pad_token"):
        config(tmp_path, pad_token="<pad>")
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):  # the user's deprecated name still works, loudly
        old = config(tmp_path, activation_checkpointing=None, gradient_checkpointing=False)
    assert old.activation_checkpointing is False and old.gradient_checkpointing is False


# ---- issue 18.1: padding-free (packed) batches give the padded path's loss and gradients


def uneven_dataset() -> Dataset:
    """Pairs of very different lengths (4 to ~60 tokens of response, short and long critiques)."""
    rows = text_dataset(4, margin=True).to_dict()
    rows["chosen"][1] = " ".join(["Seven is prime because its only divisors are one and itself."] * 6)
    rows["rejected_critique"][2] = " ".join(["The answer is wrong: spiders are arachnids with eight legs."] * 5)
    rows["rejected"][3] = "k"
    return Dataset.from_dict(rows)


def _loss_and_grads(trainer, rows):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("with_critiques", [True, False])
def test_padding_free_loss_and_gradients_equal_padded(tmp_path, with_critiques):
    tok = tiny_tokenizer()
    data = uneven_dataset() if with_critiques else uneven_dataset().remove_columns(["chosen_critique", "rejected_critique"])
    kw = dict(critique_weight_schedule="constant", critique_weight_start=0.5, fast_path_weight=0.5, center_rewards_coefficient=0.01)
    out = {}
    for packed in (False, True):
        trainer = CriticRMTrainer(tiny_llama(tokenizer=tok, seed=7), config(tmp_path, padding_free=packed, **kw),
                                  train_dataset=uneven_dataset(), eval_dataset=data, processing_class=tok)
        rows = [trainer.eval_dataset[i] for i in range(4)]
        batch = trainer.data_collator(rows)
        if packed:
            assert trainer.model.config._attn_implementation == "sdpa_packed"  # per-sequence sdpa, not a total² mask
            assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
            assert batch["input_ids"].shape[1] == sum(len(r[f"{s}_ids"]) for s in ("chosen", "rejected") for r in rows)
        else:
            lengths = batch["attention_mask"].sum(-1)
            assert lengths.max() >= 2 * lengths.min()  # very different lengths (the critique prompt alone is ~220 tokens)
        out[packed] = _loss_and_grads(trainer, rows)
        out[packed] += (trainer._metrics["train"]["critique_tokens"][-1], trainer._metrics["train"]["num_tokens"][-1])
    (loss_a, grads_a, crit_a, tok_a), (loss_b, grads_b, crit_b, tok_b) = out[False], out[True]
    assert loss_b.item() == pytest.approx(loss_a.item(), abs=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5), name
    assert crit_a == crit_b and tok_a == tok_b  # same critique and real-token counts


def test_padding_free_gradient_accumulation_is_exact(tmp_path):
    tok = tiny_tokenizer()
    data = Dataset.from_dict({k: v * 2 for k, v in uneven_dataset().to_dict().items()})

    def train(packed, batch, accumulation, critique_weight):
        args = config(tmp_path, padding_free=packed, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                      optim="sgd", learning_rate=0.1, max_steps=1, critique_weight_schedule="constant",
                      critique_weight_start=critique_weight, fast_path_weight=0.3)
        trainer = CriticRMTrainer(tiny_llama(tokenizer=tok, seed=2), args, train_dataset=data, processing_class=tok)
        trainer.train()
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    start = torch.cat([p.detach().flatten() for p in attach_reward_head(tiny_llama(tokenizer=tok, seed=2)).parameters()])
    padded, packed = train(False, 2, 2, 0.5), train(True, 2, 2, 0.5)
    assert (padded - start).abs().max() > 1e-3  # it trained
    assert torch.allclose(packed, padded, atol=1e-5)  # accumulation over packed micro-batches = over padded ones
    # The Bradley–Terry loss is a mean over pairs: 2 micro-batches of 2 pairs = 1 batch of 4 pairs, exactly.
    assert torch.allclose(train(True, 2, 2, 0.0), train(True, 4, 1, 0.0), atol=1e-6)


def test_padding_free_refuses_attention_that_mixes_packed_sequences(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    with pytest.raises(InputError, match="pad_to_multiple_of"):
        config(tmp_path, padding_free=True, pad_to_multiple_of=8)
    model = tiny_llama(tokenizer=tok)
    model.set_attn_implementation("eager")  # (sdpa models are switched to per-sequence sdpa_packed)
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)  # attention without packing support
    with pytest.raises(InputError, match="padding_free=True.*attend to each other"):
        CriticRMTrainer(model, config(tmp_path, padding_free=True), train_dataset=text_dataset(4), processing_class=tok)
