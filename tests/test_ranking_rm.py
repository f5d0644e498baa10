"""Ranking RM (Llama 3): all ordered pairs, no margin, and exact reduction to TRL's pairwise loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from hf_ext.errors import InputError
from hf_ext.testing import tiny_sequence_classifier, tiny_tokenizer
from trainers.ranking_rm import RankingRewardConfig, RankingRewardTrainer, ranked_pairs

ROWS = {
    "prompt": ["What is 3 times 4?", "Name a colour of the sky."],
    "edited": [" 3 times 4 is 12, because 4 + 4 + 4 = 12.", " The sky is usually blue on a clear day."],
    "chosen": [" It is 12.", " Blue."],
    "rejected": [" It is 7.", " Loud."],
}


def _args(tmp_path, **kw):
    kw = {"report_to": "none", "bf16": False, "activation_checkpointing": False, "use_cpu": True,
          "per_device_train_batch_size": 2, **kw}
    return RankingRewardConfig(str(tmp_path / "o"), **kw)


def test_three_response_rows_are_all_ordered_pairs(tmp_path):
    assert ranked_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    tok = tiny_tokenizer()
    trainer = RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok), _args(tmp_path),
                                   train_dataset=Dataset.from_dict(ROWS), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].shape[0] == 6  # 2 rows x 3 responses, one forward each
    assert batch["better_index"].tolist() == [0, 0, 1, 3, 3, 4]
    assert batch["worse_index"].tolist() == [1, 2, 2, 4, 5, 5]
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():  # reference: rewards of each response alone, BT over every ordered pair
        rewards = [trainer.model(input_ids=torch.tensor([ids])).logits.item()
                   for row in trainer.train_dataset for ids in row["ranked_ids"]]
    ref = torch.stack([-F.logsigmoid(torch.tensor(rewards[3 * r + i] - rewards[3 * r + j]))
                       for r in range(2) for i, j in ranked_pairs(3)]).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_two_responses_reduce_to_trl_pairwise_loss(tmp_path):
    tok = tiny_tokenizer()
    pairwise = Dataset.from_dict({k: v for k, v in ROWS.items() if k != "edited"})
    ours = RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok, seed=2), _args(tmp_path, center_rewards_coefficient=0.05),
                                train_dataset=pairwise, processing_class=tok)
    trl = RewardTrainer(tiny_sequence_classifier(tokenizer=tok, seed=2),
                        RewardConfig(str(tmp_path / "t"), report_to="none", bf16=False, activation_checkpointing=False,
                                     use_cpu=True, center_rewards_coefficient=0.05),
                        train_dataset=pairwise, processing_class=tok)
    assert [r["ranked_ids"] for r in ours.train_dataset] == [[r["chosen_ids"], r["rejected_ids"]] for r in trl.train_dataset]
    got = ours.compute_loss(ours.model, ours.data_collator([ours.train_dataset[i] for i in range(2)]))
    ref = trl.compute_loss(trl.model, trl.data_collator([trl.train_dataset[i] for i in range(2)]))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def test_ranking_bad_inputs(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(InputError, match="no margin"):
        RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok), _args(tmp_path), processing_class=tok,
                             train_dataset=Dataset.from_dict({**ROWS, "margin": [1.0, 1.0]}))
    with pytest.raises(InputError, match="at least two"):
        RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok), _args(tmp_path), processing_class=tok,
                             train_dataset=Dataset.from_dict({"prompt": ["a"], "chosen": ["b"]}))
    with pytest.raises(ValueError, match="num_labels=1"):  # TRL's own check, kept
        RankingRewardTrainer(tiny_sequence_classifier(num_labels=2, tokenizer=tok), _args(tmp_path), processing_class=tok,
                             train_dataset=Dataset.from_dict(ROWS))


@pytest.mark.filterwarnings("error::FutureWarning", "error::DeprecationWarning", "error::PendingDeprecationWarning")
def test_ranking_paths_raise_no_deprecation_warnings(tmp_path):
    tok = tiny_tokenizer()
    default = RankingRewardConfig(str(tmp_path / "d"), report_to="none", use_cpu=True)
    assert default.activation_checkpointing is True
    trainer = RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok), _args(tmp_path, max_steps=2, activation_checkpointing=True),
                                   train_dataset=Dataset.from_dict(ROWS), eval_dataset=Dataset.from_dict(ROWS), processing_class=tok)
    trainer.train()
    assert trainer.evaluate()["eval_loss"] > 0
    with pytest.raises(InputError, match="pad_token"):
        _args(tmp_path, pad_token="<pad>")


UNEVEN = {**ROWS, "edited": [ROWS["edited"][0] * 6, " Blue."], "rejected": [" 7", " Loud, and the sky is green." * 4]}


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_padding_free_loss_and_gradients_equal_padded(tmp_path, pad_is_eos):
    out = {}
    for packed in (False, True):
        tok = tiny_tokenizer()
        if pad_is_eos:  # the classifier then pools at the token before the final EOS: packed must read the same token
            tok.pad_token = tok.eos_token
        trainer = RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok, seed=4), _args(tmp_path, padding_free=packed,
                                       center_rewards_coefficient=0.01), train_dataset=Dataset.from_dict(UNEVEN), processing_class=tok)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
        assert ("attention_mask" in batch) != packed
        if not packed:
            lengths = batch["attention_mask"].sum(-1)
            assert lengths.max() > 4 * lengths.min()
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        out[packed] = loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    assert out[True][0] == pytest.approx(out[False][0], abs=1e-5)
    for name, grad in out[False][1].items():
        assert torch.allclose(out[True][1][name], grad, atol=1e-5), name


def test_padding_free_gradient_accumulation_matches_padded(tmp_path):
    data = Dataset.from_dict({k: v * 2 for k, v in UNEVEN.items()})

    def train(packed):
        tok = tiny_tokenizer()
        args = _args(tmp_path, padding_free=packed, per_device_train_batch_size=1, gradient_accumulation_steps=2, optim="sgd",
                     learning_rate=0.1, max_steps=2, seed=0)
        trainer = RankingRewardTrainer(tiny_sequence_classifier(tokenizer=tok, seed=4), args, train_dataset=data, processing_class=tok)
        trainer.train()
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    padded, packed = train(False), train(True)
    start = torch.cat([p.detach().flatten() for p in tiny_sequence_classifier(seed=4).parameters()])
    assert (padded - start).abs().max() > 1e-3
    assert torch.allclose(packed, padded, atol=1e-5)
