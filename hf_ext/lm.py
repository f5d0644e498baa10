"""Small causal-LM utilities shared by the composition methods (Branch-Train-Stitch, time
vectors, X-ELM) and the scaling testbed: train a tokenizer on real text, pack text into
blocks, (continue to) pretrain with the standard `Trainer`, measure held-out loss, and
branch experts from a seed model.

>>> from hf_ext.lm import train_bpe_tokenizer, pack_texts
>>> tok = train_bpe_tokenizer(["a small text about cats", "another text about dogs"] * 20, vocab_size=300)
>>> blocks = pack_texts(tok, ["a small text about cats"] * 10, block_size=16)
>>> len(blocks[0]["input_ids"])
16
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .outputs import output_folder

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]

# ChatML with TRL's {% generation %} markers around what the assistant says (its <|im_end|>
# included, so a model trained with assistant_only_loss learns to stop).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def bpe_tokenizer_json(texts: Iterable[str], vocab_size: int) -> str:
    """Train a byte-level BPE with the `tokenizers` library; returns its JSON.

    Args:
        texts (`Iterable[str]`):
            Training text.
        vocab_size (`int`):
            Upper bound on the vocabulary (256 byte tokens and the special tokens `SPECIAL_TOKENS` and
            `CHAT_TOKENS` included).

    Returns:
        `str`: the trained tokenizer as ``tokenizers`` JSON (see :func:`tokenizer_from_json`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()) + CHAT_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.to_str()


def tokenizer_from_json(tokenizer_json: str, *, chat_template: bool = True):
    """Wrap a `tokenizers` JSON as a transformers fast tokenizer with our special tokens.

    Args:
        tokenizer_json (`str`):
            A tokenizer serialised by ``tokenizers`` (e.g. :func:`bpe_tokenizer_json`) that holds the special tokens.
        chat_template (`bool`, *optional*, defaults to `True`):
            Attach the ChatML chat template `CHAT_TEMPLATE` (with ``{% generation %}`` markers).

    Returns:
        `PreTrainedTokenizerFast`: the tokenizer, with `SPECIAL_TOKENS` as its bos/eos/pad/unk tokens.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json),
        additional_special_tokens=CHAT_TOKENS,
        clean_up_tokenization_spaces=False,
        **SPECIAL_TOKENS,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048, *, chat_template: bool = True):
    """A byte-level BPE tokenizer trained on `texts` (any language: bytes are the fallback).

    Special tokens ``<s> </s> <pad> <unk> <|im_start|> <|im_end|>``; a ChatML chat template
    with ``{% generation %}`` markers when `chat_template`.

    Args:
        texts (`Iterable[str]`):
            Training text.
        vocab_size (`int`, *optional*, defaults to `2048`):
            Upper bound on the vocabulary (256 byte tokens and the special tokens included).
        chat_template (`bool`, *optional*, defaults to `True`):
            Attach the ChatML chat template.
    """
    if vocab_size < 262:
        raise InputError(f"vocab_size must be >= 262 (256 bytes + 6 special tokens), got {vocab_size}.")
    return tokenizer_from_json(bpe_tokenizer_json(texts, vocab_size), chat_template=chat_template)


def _as_texts(texts: Sequence[str] | Any, text_column: str = "text") -> list[str]:
    if hasattr(texts, "column_names"):  # a datasets.Dataset
        if text_column not in texts.column_names:
            raise InputError(f"The dataset has no {text_column!r} column (columns: {texts.column_names}); pass text_column=.")
        texts = texts[text_column]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"Text {i} is {type(t).__name__}, not str; convert the column to strings first.")
    return texts


def pack_texts(tokenizer, texts: Sequence[str] | Any, block_size: int = 128, *, text_column: str = "text"):
    """Tokenise, append EOS to each text, concatenate, and cut into `block_size` blocks.

    Returns a `datasets.Dataset` with ``input_ids`` and ``labels`` (equal; the model shifts).
    The tail shorter than a block is dropped. Raises `InputError` when not one block fits.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            Tokenises the texts; its EOS token ends each one.
        texts (`Sequence[str]` or `datasets.Dataset`):
            The texts, or a dataset holding them in `text_column`.
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per block.
        text_column (`str`, *optional*, defaults to `"text"`):
            Column with the text when `texts` is a dataset.
    """
    import datasets
    import numpy as np

    texts = _as_texts(texts, text_column)
    if block_size < 2:
        raise InputError(f"block_size must be at least 2, got {block_size}.")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    flat = np.fromiter((t for seq in ids for t in (*seq, eos)), dtype=np.int64)
    n_blocks = len(flat) // block_size
    if n_blocks == 0:
        raise InputError(f"The texts give {len(flat)} tokens, fewer than one block of {block_size}; pass more text or a smaller block_size.")
    blocks = flat[: n_blocks * block_size].reshape(n_blocks, block_size)
    return datasets.Dataset.from_dict({"input_ids": blocks.tolist(), "labels": blocks.tolist()})


def _training_args(args: Any, output_dir: str | os.PathLike | None = None):
    from transformers import TrainingArguments

    if isinstance(args, TrainingArguments):
        return args if output_dir is None else dataclasses.replace(args, output_dir=str(output_dir))
    if is_dataclass(args):
        args = asdict(args)
    if not isinstance(args, dict):
        raise InputError(f"args must be TrainingArguments or a dict of its fields, got {type(args).__name__}.")
    values = {"report_to": "none", "save_strategy": "no", "logging_steps": 10, "use_cpu": not torch.cuda.is_available(), **args}
    if output_dir is not None:
        values["output_dir"] = str(output_dir)
    return TrainingArguments(**values)


def train_causal_lm(model, tokenizer, train_texts, args: Any, *, block_size: int = 128, eval_texts=None, callbacks=None):
    """(Continue to) pretrain `model` on `train_texts` with the standard `Trainer`.

    Args:
        model (`PreTrainedModel`):
            A causal LM (trained in place).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer (EOS separates texts).
        train_texts (`Sequence[str]` or `datasets.Dataset`):
            List of strings or a Dataset with a ``text`` column, packed as :func:`pack_texts` does.
        args (`Any`):
            `TrainingArguments`, or a dict of its fields (defaults: no saving, no reporting).
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per training block.
        eval_texts (`Sequence[str]` or `datasets.Dataset`, *optional*):
            Optional held-out texts; evaluated with the Trainer's eval loop.
        callbacks (`list[TrainerCallback]`, *optional*):
            Passed to the `Trainer`.

    Returns:
        The `Trainer` after ``train()`` (its ``state.log_history`` has the losses).
    """
    from transformers import Trainer, default_data_collator

    train = pack_texts(tokenizer, train_texts, block_size)
    evaluation = pack_texts(tokenizer, eval_texts, block_size) if eval_texts is not None else None
    trainer = Trainer(
        model=model,
        args=_training_args(args),
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


@torch.no_grad()
def eval_loss(model, tokenizer, texts, *, block_size: int = 128, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats per predicted token) on packed held-out blocks.

    Args:
        model (`PreTrainedModel`):
            A causal LM (its training mode is restored afterwards).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        texts (`Sequence[str]` or `datasets.Dataset`):
            Held-out texts, packed as :func:`pack_texts` does.
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per block.
        batch_size (`int`, *optional*, defaults to `16`):
            Blocks per forward pass.
    """
    blocks = torch.tensor(pack_texts(tokenizer, texts, block_size)["input_ids"])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(device)
        logits = model(input_ids=batch).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += batch[:, 1:].numel()
    model.train(was_training)
    return total / count


def perplexity(model, tokenizer, texts, **kwargs: Any) -> float:
    """exp(eval_loss).

    Args:
        model (`PreTrainedModel`):
            A causal LM.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        texts (`Sequence[str]` or `datasets.Dataset`):
            Held-out texts.
        **kwargs:
            ``block_size`` and ``batch_size`` of :func:`eval_loss`.
    """
    return math.exp(eval_loss(model, tokenizer, texts, **kwargs))


def branch_experts(
    seed_model_or_path,
    domains: dict[str, Any],
    *,
    tokenizer,
    output_dir: str | os.PathLike,
    args: Any,
    block_size: int = 128,
    seed_hub_id: str | None = None,
    push_to_hub: dict[str, str] | None = None,
    hub_endpoint: str | None = None,
) -> dict[str, Path]:
    """Branch one expert per domain: copy the seed, continue pretraining on the domain's text.

    Each expert is saved to ``output_dir/<domain>`` with `save_pretrained` (safetensors), the
    tokenizer, and a model card whose ``base_model`` is the seed (relation ``finetune``).

    Args:
        seed_model_or_path (`PreTrainedModel`, `str` or `os.PathLike`):
            The seed causal LM, or a path / Hub id to load it from.
        domains (`dict[str, Any]`):
            Domain name -> texts (list of strings or a Dataset with ``text``).
        tokenizer (`PreTrainedTokenizerBase`):
            The seed's tokenizer (experts share it).
        output_dir (`str` or `os.PathLike`):
            Parent folder of the experts.
        args (`Any`):
            `TrainingArguments` or a dict of its fields; each expert's checkpoints (if any) go to
            ``output_dir/.checkpoints/<domain>``, outside the folder that is pushed.
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per training block.
        seed_hub_id (`str` or `None`, *optional*, defaults to `None`):
            The seed's Hub id for the cards (required when the seed is a local model with no known Hub id; cards
            never carry local paths).
        push_to_hub (`dict[str, str]` or `None`, *optional*, defaults to `None`):
            Optional domain -> repo id to upload each expert to.
        hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL for those uploads; ``None`` means ``HF_ENDPOINT`` or https://huggingface.co.

    Returns:
        domain -> folder of the saved expert.
    """
    from .hub.cards import render_model_card

    if not domains:
        raise InputError("branch_experts needs at least one domain: domains={'math': [...], ...}.")
    if isinstance(seed_model_or_path, (str, os.PathLike)):
        from .models import hub_id_for, load_causal_lm

        seed_hub_id = seed_hub_id or hub_id_for(seed_model_or_path) or (
            str(seed_model_or_path) if not Path(seed_model_or_path).exists() else None
        )
        seed = load_causal_lm(seed_model_or_path, role="seed")
    else:
        seed = seed_model_or_path
    output_dir = Path(output_dir)
    paths: dict[str, Path] = {}
    for domain, texts in domains.items():
        expert = copy.deepcopy(seed)
        domain_dir = output_dir / domain
        trainer = train_causal_lm(expert, tokenizer, texts, _training_args(args, output_dir / ".checkpoints" / domain), block_size=block_size)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        card_data = {"license": "apache-2.0", "tags": ["hf-ext", "expert", f"domain-{domain}"]}
        if seed_hub_id:
            card_data.update(base_model=[seed_hub_id], base_model_relation="finetune")
        card = render_model_card(
            "model_card.md.j2",
            card_data,
            title=f"{domain} expert",
            summary=(
                f"An expert branched from {seed_hub_id or 'a locally trained seed'} by continued pretraining on "
                f"{domain} text ({len(_as_texts(texts))} texts, {trainer.state.global_step} steps, block size {block_size})."
            ),
            base_model=seed_hub_id,
            sections=[{"title": "Training", "body": f"Final training loss: {losses[-1]:.4f}." if losses else "No logged loss."}],
        )
        with output_folder(domain_dir, writer="branch_experts") as tmp:  # a kill leaves the previous expert whole
            expert.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            card.save(str(tmp / "README.md"))
        if push_to_hub and domain in push_to_hub:
            from .hub import push_folder

            push_folder(domain_dir, push_to_hub[domain], repo_type="model", endpoint=hub_endpoint,
                        commit_message=f"hf_ext: {domain} expert")
        paths[domain] = domain_dir
        del trainer
    return paths
