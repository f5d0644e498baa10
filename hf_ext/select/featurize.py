"""The columns the selection job adds before selecting: one builder per column, run with ``ds.map``.

A selector declares the columns it reads (`Selector.requires`); :func:`featurize` adds each missing
one with the builder registered here. A builder takes the job's `SelectionConfig` (and the pool,
when it needs to look at it first, as the SAE featurizer does to train an SAE on it):

>>> sorted(FEATURIZERS)
['judge_score', 'response_tokens', 'sae_count', 'sae_embedding', 'sae_ids', 'sae_values']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import InputError
from .judge import JudgeScorer
from .scores import ResponseLengthScorer


def _sae_featurizer(c, ds):
    from .sae.job import build_featurizer

    return build_featurizer(c, ds)


# Column -> builder of the map function that produces it. Featurizers of other methods
# (SAE features, gradients) register here so a selector's `requires` can be met.
FEATURIZERS: dict[str, Callable[..., Callable]] = {
    "response_tokens": lambda c: ResponseLengthScorer(tokenizer=c.tokenizer, response_column=c.response_column),
    "judge_score": lambda c: JudgeScorer(
        backend=c.judge_settings(),
        instruction_column=c.instruction_column,
        input_column=c.input_column,
        response_column=c.response_column,
    ),
    # One map pass adds all SAE columns; builders that take (config, pool) get the pool.
    **{name: _sae_featurizer for name in ("sae_ids", "sae_values", "sae_count", "sae_embedding")},
}


def featurize(ds, config, columns: list[str]):
    """Add each missing column in `columns` with its registered featurizer via ``ds.map``.

    Args:
        ds (`datasets.Dataset`):
            The pool.
        config (`SelectionConfig`):
            The job's settings; the builders read theirs from it.
        columns (`list[str]`):
            The columns the selectors need.
    """
    for column in columns:
        if column in ds.column_names:
            continue
        if column not in FEATURIZERS:
            raise InputError(f"No featurizer produces column {column!r}; registered: {sorted(FEATURIZERS)}.")
        builder = FEATURIZERS[column]
        fn = builder(config, ds) if len(inspect.signature(builder).parameters) == 2 else builder(config)
        if hasattr(fn, "features"):  # typed columns; sharded by rank under accelerate launch / torchrun
            from ..dist import map_features

            ds = map_features(ds, fn, batch_size=config.map_batch_size, num_proc=config.num_proc, desc=f"Featurizing {column}")
        else:
            ds = ds.map(fn, batched=True, batch_size=config.map_batch_size, num_proc=config.num_proc, desc=f"Scoring {column}")
    return ds


__all__ = ["FEATURIZERS", "featurize"]
