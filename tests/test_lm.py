"""Small-LM utilities: packing invariants, held-out loss against the model's own loss,
training lowers loss, and branched experts specialise and carry cards naming the seed."""

import pytest
import torch
import yaml

from hf_ext.errors import InputError
from hf_ext.lm import branch_experts, eval_loss, pack_texts, train_bpe_tokenizer, train_causal_lm
from hf_ext.testing import tiny_llama

ENGLISH = [f"The cat number {i} sat on the mat and looked at the {c} bird." for i, c in zip(range(60), ["red", "blue", "green"] * 20)]
MATH = [f"{a} plus {b} equals {a + b}. {a} times {b} equals {a * b}." for a, b in zip(range(2, 62), range(5, 65))]


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(ENGLISH + MATH, vocab_size=400)


def test_pack_texts_concatenates_with_eos_and_drops_the_tail(tok):
    texts = ENGLISH[:5]
    ids = [t for text in texts for t in (*tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id)]
    blocks = pack_texts(tok, texts, block_size=16)
    assert len(blocks) == len(ids) // 16
    assert [t for b in blocks["input_ids"] for t in b] == ids[: len(blocks) * 16]
    assert blocks["labels"] == blocks["input_ids"]


def test_pack_texts_bad_input(tok):
    with pytest.raises(InputError, match="fewer than one block of 4096"):
        pack_texts(tok, ["short"], block_size=4096)
    with pytest.raises(InputError, match="Text 1 is int"):
        pack_texts(tok, ["fine", 3], block_size=4)


def test_eval_loss_equals_the_models_own_loss(tok):
    model = tiny_llama(tokenizer=tok, seed=1)
    blocks = torch.tensor(pack_texts(tok, ENGLISH, block_size=32)["input_ids"])
    with torch.no_grad():
        reference = model(input_ids=blocks, labels=blocks).loss.item()  # mean over all predicted tokens
    assert eval_loss(model, tok, ENGLISH, block_size=32, batch_size=3) == pytest.approx(reference, rel=1e-5)


def test_training_lowers_loss_and_branching_specialises(tok, tmp_path):
    seed = tiny_llama(tokenizer=tok, seed=0, hidden_size=48)
    args = {"output_dir": str(tmp_path / "seed"), "num_train_epochs": 3, "per_device_train_batch_size": 8,
            "learning_rate": 3e-3, "seed": 0}
    before = eval_loss(seed, tok, ENGLISH, block_size=32)
    train_causal_lm(seed, tok, ENGLISH + MATH, args, block_size=32)
    after = eval_loss(seed, tok, ENGLISH, block_size=32)
    assert after < before - 0.5

    paths = branch_experts(seed, {"math": MATH}, tokenizer=tok, output_dir=tmp_path / "experts",
                           args={**args, "num_train_epochs": 4}, block_size=32, seed_hub_id="org/tiny-seed")
    from transformers import AutoModelForCausalLM

    expert = AutoModelForCausalLM.from_pretrained(paths["math"])
    assert eval_loss(expert, tok, MATH, block_size=32) < eval_loss(seed, tok, MATH, block_size=32)
    front = yaml.safe_load((paths["math"] / "README.md").read_text().split("---\n", 2)[1])
    assert front["base_model"] == "org/tiny-seed" and front["base_model_relation"] == "finetune"
    assert not (paths["math"] / "checkpoints").exists()
    # The seed itself was not modified by branching.
    assert eval_loss(seed, tok, ENGLISH, block_size=32) == pytest.approx(after)
