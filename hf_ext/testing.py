"""Tiny tokenizer and models built locally, for tests and examples (nothing from the Hub).

Everything is deterministic given ``seed`` and independent of the global RNG state:

>>> from hf_ext.testing import tiny_tokenizer, tiny_llama
>>> tok = tiny_tokenizer()
>>> model = tiny_llama(tokenizer=tok)
>>> batch = tok(["a tiny model", "reads tiny text"], padding=True, return_tensors="pt")
>>> model(**batch).logits.shape[-1] == len(tok)
True
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from .errors import InputError
from .lm import CHAT_TEMPLATE, SPECIAL_TOKENS, bpe_tokenizer_json, tokenizer_from_json  # shared with hf_ext.lm

__all__ = ["tiny_tokenizer", "tiny_llama", "tiny_sequence_classifier", "tiny_bert", "save_tiny",
           "SPECIAL_TOKENS", "CHAT_TEMPLATE"]

_PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog. A small model reads a small text and learns "
    "which word comes next. Data selection picks the examples that teach the model the most.",
    "Question: What is the capital of France? Answer: The capital of France is Paris. "
    "Question: How many days are in a week? Answer: There are 7 days in a week.",
    "In 2024, researchers trained language models on filtered web pages. They removed duplicated "
    "lines, short documents and pages with too many symbols, then scored the rest for quality.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, 2 * i))\n",
    "A reward model compares two answers to the same prompt and prefers the helpful, honest one. "
    "The critic writes a short critique first, then gives a score from 1 to 10.",
    "Experts are trained on different domains: science, law, medicine, news and code. Stitch "
    "layers connect the experts, and a time vector moves a model from one year to the next.",
]
_WORDS = ("the model data text user assistant answer question score filter train select expert "
          "reward language token layer vector merge scale loss batch example simple helpful").split()


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    generated = [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 12))).capitalize()
        + rng.choice([".", "?", "!"]) + f" {rng.randint(0, 999)}"
        for _ in range(200)
    ]
    return _PARAGRAPHS * 3 + generated


@functools.lru_cache(maxsize=8)
def _tokenizer_json(vocab_size: int, seed: int) -> str:
    return bpe_tokenizer_json(_corpus(seed), vocab_size)


def tiny_tokenizer(vocab_size: int = 512, seed: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained locally on a small built-in English corpus.

    It has ``<s>``/``</s>``/``<pad>``/``<unk>``, the ChatML tokens ``<|im_start|>``/``<|im_end|>``
    and a ChatML chat template with ``{% generation %}`` markers (TRL's ``assistant_only_loss``).
    Training is cached per process; every call returns a fresh copy that callers may mutate.

    Args:
        vocab_size (`int`, *optional*, defaults to `512`):
            Upper bound on the vocabulary (the built-in corpus yields ~900 at most).
        seed (`int`, *optional*, defaults to `0`):
            Seeds the generated part of the corpus; the same seed gives the same vocabulary.

    Example:
        >>> tok = tiny_tokenizer()
        >>> tok.decode(tok("Hello, world!")["input_ids"])
        'Hello, world!'
    """
    if vocab_size < 262:
        raise InputError(f"tiny_tokenizer needs vocab_size >= 262 (256 bytes + 6 special tokens), got {vocab_size}.")
    tokenizer = tokenizer_from_json(_tokenizer_json(vocab_size, seed))
    return tokenizer


def _vocab(vocab_size: int | None, tokenizer: PreTrainedTokenizerFast) -> int:
    if vocab_size is None:
        return len(tokenizer)
    if vocab_size < len(tokenizer):
        raise InputError(f"vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens; "
                         "pass vocab_size=None to use the tokenizer's size.")
    return vocab_size


def _build(model_cls: type, config: Any, seed: int) -> Any:
    # A forked RNG: same seed -> same weights, and the caller's global RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config).float()


def _llama_config(vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
                  max_position_embeddings, tokenizer, **extra) -> tuple[LlamaConfig, PreTrainedTokenizerFast]:
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=_vocab(vocab_size, tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **extra,
    )
    return config, tokenizer


def tiny_llama(vocab_size: int | None = None, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
               num_kv_heads: int = 2, intermediate_size: int = 64, max_position_embeddings: int = 256,
               seed: int = 0, tokenizer: PreTrainedTokenizerFast | None = None) -> LlamaForCausalLM:
    """A tiny randomly initialised fp32 ``LlamaForCausalLM`` matching ``tokenizer`` (default: ``tiny_tokenizer()``).

    Args:
        vocab_size (`int` or `None`, *optional*, defaults to `None`):
            Embedding rows; ``None``: the tokenizer's size.
        hidden_size (`int`, *optional*, defaults to `32`):
            Width of the residual stream.
        num_layers (`int`, *optional*, defaults to `2`):
            Decoder layers.
        num_heads (`int`, *optional*, defaults to `4`):
            Attention heads.
        num_kv_heads (`int`, *optional*, defaults to `2`):
            Key/value heads (grouped-query attention).
        intermediate_size (`int`, *optional*, defaults to `64`):
            Width of the MLP.
        max_position_embeddings (`int`, *optional*, defaults to `256`):
            Longest sequence.
        seed (`int`, *optional*, defaults to `0`):
            Seeds the initial weights (the same seed gives the same model; the global RNG is left untouched).
        tokenizer (`PreTrainedTokenizerFast` or `None`, *optional*, defaults to `None`):
            Tokenizer whose vocabulary and special token ids the model matches; ``None``: ``tiny_tokenizer()``.

    Example:
        >>> model = tiny_llama(seed=1)
        >>> model.config.pad_token_id == tiny_tokenizer().pad_token_id
        True
    """
    config, _ = _llama_config(vocab_size, hidden_size, num_layers, num_heads, num_kv_heads,
                              intermediate_size, max_position_embeddings, tokenizer)
    return _build(LlamaForCausalLM, config, seed)


def tiny_sequence_classifier(num_labels: int = 1, vocab_size: int | None = None, hidden_size: int = 32,
                             num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                             intermediate_size: int = 64, max_position_embeddings: int = 256, seed: int = 0,
                             tokenizer: PreTrainedTokenizerFast | None = None) -> LlamaForSequenceClassification:
    """A tiny ``LlamaForSequenceClassification``; ``num_labels=1`` is a reward model for TRL's ``RewardTrainer``.

    Args:
        num_labels (`int`, *optional*, defaults to `1`):
            Outputs of the classification head (1: a scalar reward).
        vocab_size (`int` or `None`, *optional*, defaults to `None`):
            Embedding rows; ``None``: the tokenizer's size.
        hidden_size (`int`, *optional*, defaults to `32`):
            Width of the residual stream.
        num_layers (`int`, *optional*, defaults to `2`):
            Decoder layers.
        num_heads (`int`, *optional*, defaults to `4`):
            Attention heads.
        num_kv_heads (`int`, *optional*, defaults to `2`):
            Key/value heads (grouped-query attention).
        intermediate_size (`int`, *optional*, defaults to `64`):
            Width of the MLP.
        max_position_embeddings (`int`, *optional*, defaults to `256`):
            Longest sequence.
        seed (`int`, *optional*, defaults to `0`):
            Seeds the initial weights (the same seed gives the same model; the global RNG is left untouched).
        tokenizer (`PreTrainedTokenizerFast` or `None`, *optional*, defaults to `None`):
            Tokenizer whose vocabulary and special token ids the model matches; ``None``: ``tiny_tokenizer()``.

    Example:
        >>> tok = tiny_tokenizer()
        >>> rm = tiny_sequence_classifier(tokenizer=tok)
        >>> rm(**tok(["good", "a bad answer"], padding=True, return_tensors="pt")).logits.shape
        torch.Size([2, 1])
    """
    config, _ = _llama_config(vocab_size, hidden_size, num_layers, num_heads, num_kv_heads,
                              intermediate_size, max_position_embeddings, tokenizer, num_labels=num_labels)
    return _build(LlamaForSequenceClassification, config, seed)


def tiny_bert(vocab_size: int | None = None, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
              intermediate_size: int = 64, max_position_embeddings: int = 256, seed: int = 0,
              tokenizer: PreTrainedTokenizerFast | None = None) -> BertModel:
    """A tiny randomly initialised ``BertModel`` encoder over the tokenizer's vocabulary.

    Args:
        vocab_size (`int` or `None`, *optional*, defaults to `None`):
            Embedding rows; ``None``: the tokenizer's size.
        hidden_size (`int`, *optional*, defaults to `32`):
            Width of the residual stream.
        num_layers (`int`, *optional*, defaults to `2`):
            Encoder layers.
        num_heads (`int`, *optional*, defaults to `4`):
            Attention heads.
        intermediate_size (`int`, *optional*, defaults to `64`):
            Width of the MLP.
        max_position_embeddings (`int`, *optional*, defaults to `256`):
            Longest sequence.
        seed (`int`, *optional*, defaults to `0`):
            Seeds the initial weights (the same seed gives the same model; the global RNG is left untouched).
        tokenizer (`PreTrainedTokenizerFast` or `None`, *optional*, defaults to `None`):
            Tokenizer whose vocabulary and special token ids the model matches; ``None``: ``tiny_tokenizer()``.

    Example:
        >>> tok = tiny_tokenizer()
        >>> tiny_bert(tokenizer=tok)(**tok(["encode me"], return_tensors="pt")).last_hidden_state.shape[-1]
        32
    """
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = BertConfig(
        vocab_size=_vocab(vocab_size, tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
    )
    return _build(BertModel, config, seed)


def save_tiny(path: str | Path, *objects: Any) -> Path:
    """Save models and tokenizers into one folder with ``save_pretrained``; returns the folder.

    Args:
        path (`str` or `Path`):
            The folder (created if needed).
        *objects (`Any`):
            Models, tokenizers or configs: anything with ``save_pretrained``.

    Example:
        >>> import tempfile
        >>> folder = save_tiny(tempfile.mkdtemp(), tiny_llama(), tiny_tokenizer())
        >>> (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
        True
    """
    path = Path(path)
    for obj in objects:
        obj.save_pretrained(path)
    return path
