"""What the training jobs share beyond :mod:`hf_ext.jobs`: data files, small models, Trainer settings.

One copy each of what the replications used to write three times:

- :func:`read_jsonl`: rows of a JSON Lines file (``.jsonl`` or ``.jsonl.gz``), a missing file one
  :class:`~hf_ext.errors.InputError` naming it and the recipe field to fix;
- :func:`small_llama`: a randomly initialised Llama sized for CPU experiments (on
  :func:`hf_ext.testing.tiny_llama`, so the same seed gives the same weights);
- :func:`load_seed`: a pretrained causal LM and its tokenizer by Hub id or folder (resolved offline
  by :func:`hf_ext.models.resolve_model`, loaded by :func:`hf_ext.models.load_causal_lm`);
- :func:`training_args`: the ``TrainingArguments`` fields of one stage of a job (cosine schedule, no
  saving, no reporting), as a dict for :func:`hf_ext.lm.train_causal_lm` or ``TrainingArguments(**...)``;
- :func:`run_in_output`: a job's work inside :func:`hf_ext.jobs.job_output`, its metrics returned.

>>> args = training_args("out/seed", steps=100, batch_size=8, learning_rate=1e-3, seed=0)
>>> args["max_steps"], args["lr_scheduler_type"], args["save_strategy"], args["logging_steps"]
(100, 'cosine', 'no', 20)
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_ext.errors import InputError
from hf_ext.jobs import job_output

__all__ = ["read_jsonl", "small_llama", "load_seed", "training_args", "require", "run_in_output"]


def run_in_output(config: Any, work: Callable[[Any, Path], dict[str, Any]], card: Callable[[Any, dict[str, Any]], Any] | None = None,
                  **output: Any) -> dict[str, Any]:
    """``work(config, folder)`` inside :func:`hf_ext.jobs.job_output` (`output` are its keywords); its
    metrics go to ``metrics.json`` and are returned. ``work`` writes only into ``folder``, the
    temporary sibling that replaces ``config.output_dir`` when it returns.

    Args:
        config (`Any`):
            The job config (``output_dir``, ``overwrite_output_dir`` and the Hub push settings are read).
        work (`Callable[[Any, Path], dict[str, Any]]`):
            The job's work, called as ``work(config, folder)``; returns the metrics.
        card (`Callable[[Any, dict[str, Any]], Any]` or `None`, *optional*, defaults to `None`):
            ``card(config, metrics)`` gives the folder's root card (a ``ModelCard``), written as ``README.md``.
        **output:
            Passed to :func:`hf_ext.jobs.job_output` (``repo_type``, ``writer``, ``commit_message``, ``push_subdir``).
    """
    with job_output(config, **output) as result:
        result.metrics = work(config, result.dir)
        if card is not None:
            result.card = card(config, result.metrics)
    return result.metrics


def require(value: Any, name: str, what: str) -> None:
    """Refuse an unset required recipe field before any work: ``name is not set: point it at <what>``.

    Args:
        value (`Any`):
            The field's value; anything falsy (`None`, `""`) is refused with an `InputError`.
        name (`str`):
            The recipe field's name, quoted in the error (and as the `--name` flag).
        what (`str`):
            What the field should point at, e.g. "the folder holding the corpus_files".
    """
    if not value:
        raise InputError(f"{name} is not set: point it at {what} (the recipes use a copy of the staged datasets, "
                         f"e.g. --{name} /path/to/data/...).")


def read_jsonl(path: str | Path, *, field: str = "the recipe's data file field") -> list[dict[str, Any]]:
    """Rows of a JSON Lines file, gzipped when it ends in ``.gz``.

    Args:
        path (`str` or `Path`):
            The file.
        field (`str`, *optional*, defaults to `"the recipe's data file field"`):
            The recipe field that names it, for the error when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Data file {str(path)!r} does not exist; check {field} (a copy of the staged data).")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def small_llama(tokenizer: Any, hidden_size: int, num_layers: int, seed: int, *, num_heads: int = 4, num_kv_heads: int = 2,
                intermediate_size: int | None = None, max_positions: int = 512) -> Any:
    """A randomly initialised fp32 Llama for CPU experiments, matching `tokenizer`.

    Args:
        tokenizer (`Any`):
            The tokenizer whose vocabulary and special tokens the model uses.
        hidden_size (`int`):
            Width.
        num_layers (`int`):
            Decoder layers.
        seed (`int`):
            Initialisation seed (the caller's global RNG is left untouched).
        num_heads (`int`, *optional*, defaults to `4`):
            Attention heads.
        num_kv_heads (`int`, *optional*, defaults to `2`):
            Key/value heads.
        intermediate_size (`int` or `None`, *optional*, defaults to `None`):
            MLP width; default ``4 * hidden_size``.
        max_positions (`int`, *optional*, defaults to `512`):
            ``max_position_embeddings``.
    """
    from hf_ext.testing import tiny_llama

    return tiny_llama(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
                      intermediate_size=intermediate_size or 4 * hidden_size, max_position_embeddings=max_positions,
                      seed=seed, tokenizer=tokenizer)  # fmt: skip


def load_seed(model_id: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a pretrained causal LM given by Hub id or folder.

    Args:
        model_id (`str`):
            Hub id or folder of the model and its tokenizer (resolved offline when packaged locally).
    """
    from hf_ext.models import load_causal_lm, load_tokenizer

    return load_causal_lm(model_id, role="seed"), load_tokenizer(model_id)


def training_args(output_dir: str | Path, *, steps: int, batch_size: int, learning_rate: float, seed: int,
                  **overrides: Any) -> dict[str, Any]:
    """``TrainingArguments`` fields of one training stage of a job.

    Args:
        output_dir (`str` or `Path`):
            The Trainer's folder (inside the job's temporary output).
        steps (`int`):
            ``max_steps``.
        batch_size (`int`):
            ``per_device_train_batch_size``.
        learning_rate (`float`):
            Peak learning rate of the cosine schedule (5% warmup).
        seed (`int`):
            The Trainer's seed.
        overrides:
            Any other ``TrainingArguments`` field, replacing the defaults here.
    """
    import torch

    return {"output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": batch_size,
            "learning_rate": learning_rate, "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "weight_decay": 0.0,
            "logging_steps": max(1, steps // 5), "seed": seed, "save_strategy": "no", "report_to": "none",
            "use_cpu": not torch.cuda.is_available(), "disable_tqdm": True, "dataloader_num_workers": 0,
            **overrides}  # fmt: skip
