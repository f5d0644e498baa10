import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # also set by conftest.py; harmless twice

import doctest
import math
import string

import pytest
import torch

import hf_ext.testing as testing
from hf_ext.errors import InputError
from hf_ext.testing import tiny_bert, tiny_llama, tiny_sequence_classifier, tiny_tokenizer

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, of course!"},
]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = _state(tiny_llama(seed=0)), _state(tiny_llama(seed=0))
    assert torch.equal(torch.get_rng_state(), before)  # building does not consume the caller's RNG
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = _state(tiny_llama(seed=1))
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])
    for build in (tiny_sequence_classifier, tiny_bert):
        x, y, z = _state(build(seed=0)), _state(build(seed=0)), _state(build(seed=2))
        assert all(torch.equal(x[k], y[k]) for k in x)
        assert any(not torch.equal(x[k], z[k]) for k in x if x[k].is_floating_point() and x[k].std() > 0)


def test_tokenizer_deterministic_fresh_copies_and_special_tokens():
    text = "The model reads a small text. Question: What is 2 + 2?"
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a is not b and a(text)["input_ids"] == b(text)["input_ids"]
    assert a.get_vocab() == b.get_vocab() and len(a) == 512
    a.add_tokens(["<extra>"])  # mutating one copy leaves the cache alone
    assert len(tiny_tokenizer()) == 512
    assert tiny_tokenizer(seed=1).get_vocab() != b.get_vocab()
    assert (b.bos_token, b.eos_token, b.pad_token, b.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    for tok in ("<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"):
        ids = b(tok, add_special_tokens=False)["input_ids"]
        assert ids == [b.convert_tokens_to_ids(tok)] and ids[0] != b.unk_token_id
    assert len(set(b.all_special_ids)) == 6
    with pytest.raises(InputError):
        tiny_tokenizer(vocab_size=100)


@pytest.mark.parametrize("text", [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew lines\n\n",
    "zebra quixotic 12345 {json: [1, 2.5]} a_b-c",
    string.printable,
])
def test_tokenizer_round_trips_ascii(text):
    tok = tiny_tokenizer()
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.unk_token_id not in tok(text)["input_ids"]  # byte-level: nothing is unknown


def test_chat_template_generation_prompt_and_assistant_mask():
    tok = tiny_tokenizer()
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are terse.<|im_end|>\n"
                      "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert not tok.apply_chat_template(CHAT[:2], tokenize=False).endswith("assistant\n")

    text = tok.apply_chat_template(CHAT, tokenize=False)
    out = tok.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    assert out["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    # Expected mask from character spans: each assistant content plus its <|im_end|>.
    spans, start = [], 0
    for m in CHAT:
        if m["role"] == "assistant":
            s = text.index("<|im_start|>assistant\n" + m["content"], start) + len("<|im_start|>assistant\n")
            spans.append((s, s + len(m["content"] + "<|im_end|>")))
            start = spans[-1][1]
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    expected = [int(any(a <= s and e <= b for a, b in spans)) for s, e in offsets]
    assert out["assistant_masks"] == expected
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(masked) == "Paris.<|im_end|>Rome, of course!<|im_end|>"

    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tok.chat_template) and is_chat_template_stop_token_trained(tok)


def test_tiny_llama_forward_shape_and_initial_loss():
    tok = tiny_tokenizer()
    model = tiny_llama(tokenizer=tok)
    cfg = model.config
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (
        len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    assert cfg.tie_word_embeddings is False and model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    batch = tok(["The quick brown fox jumps over the lazy dog.", "A reward model compares answers."],
                padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    assert out.logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    assert torch.isfinite(out.loss) and abs(out.loss.item() - math.log(len(tok))) < 0.1
    out.loss.backward()
    assert model.lm_head.weight.grad is not None
    assert tiny_llama(vocab_size=600).config.vocab_size == 600
    with pytest.raises(InputError):
        tiny_llama(vocab_size=100)


def test_sequence_classifier_is_a_padding_aware_reward_model():
    tok = tiny_tokenizer()
    rm = tiny_sequence_classifier(tokenizer=tok).eval()
    texts = ["Paris is the capital of France.", "No."]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        scores = rm(**batch).logits
        alone = rm(**tok(texts[1:], return_tensors="pt")).logits
    assert scores.shape == (2, 1) and rm.config.pad_token_id == tok.pad_token_id
    torch.testing.assert_close(scores[1:], alone)  # the padded row scores its last real token
    assert tiny_sequence_classifier(num_labels=3).score.out_features == 3


def test_tiny_bert_encoder():
    tok = tiny_tokenizer()
    bert = tiny_bert(tokenizer=tok, hidden_size=48)
    batch = tok(["encode this", "and this longer sentence too"], padding=True, return_tensors="pt")
    out = bert(**batch)
    assert out.last_hidden_state.shape == (2, batch["input_ids"].shape[1], 48)
    assert bert.config.vocab_size == len(tok) and bert.config.pad_token_id == tok.pad_token_id


def test_save_tiny_round_trips_through_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = tiny_tokenizer(), tiny_llama(seed=3)
    testing.save_tiny(tmp_path, model, tok)
    tok2, model2 = AutoTokenizer.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)
    assert tok2.chat_template == tok.chat_template and tok2.pad_token == "<pad>"
    assert tok2.apply_chat_template(CHAT, tokenize=False) == tok.apply_chat_template(CHAT, tokenize=False)
    ids = tok("The model reads a small text.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, model2.eval()(ids).logits)


def test_docstring_examples_run():
    result = doctest.testmod(testing)
    assert result.attempted >= 5 and result.failed == 0
