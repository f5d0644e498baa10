"""The process group a job runs in under ``accelerate launch`` / ``torchrun``, and a rank-sharded ``Dataset.map``."""

from __future__ import annotations

import os
from typing import Any


def partial_state() -> Any | None:
    """accelerate's `PartialState` when ``WORLD_SIZE`` > 1, else None (a single process).

    On a machine without CUDA, ``cpu=True`` is passed: accelerate only forms a CPU (gloo) group
    when told so (``ACCELERATE_USE_CPU``, which `TrainingArguments(use_cpu=True)` happens to set),
    and without it every torchrun worker would believe it is rank 0 of 1 and do all the work.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def map_features(ds, fn, *, batch_size: int = 1000, num_proc: int | None = None, desc: str | None = None, **map_kwargs):
    """``ds.map(fn, batched=True)``, sharded by rank and gathered under ``accelerate launch`` / ``torchrun``.

    With one process this is exactly ``ds.map``. With ``WORLD_SIZE`` > 1 each rank maps its
    contiguous shard, the new columns are gathered in rank order, and every rank returns the
    full dataset with them (identical to a single-process run).

    Args:
        ds (`datasets.Dataset`):
            The dataset to map.
        fn (`Callable`):
            A batched map function that adds columns; when it has a ``features()`` method, its features are
            declared to ``ds.map``.
        batch_size (`int`, *optional*, defaults to `1000`):
            Rows per call of `fn`.
        num_proc (`int`, *optional*):
            Worker processes of ``ds.map`` (on each rank); `None` maps in the calling process.
        desc (`str`, *optional*):
            Progress bar description.
        **map_kwargs:
            Passed on to ``Dataset.map``.

    Returns:
        `datasets.Dataset`: `ds` with the columns `fn` adds, the same on every rank.
    """
    features = fn.features() if hasattr(fn, "features") else None
    if features is not None:
        from datasets import Features

        features = Features({**ds.features, **features})
    kwargs = dict(batched=True, batch_size=batch_size, num_proc=num_proc, desc=desc, features=features, **map_kwargs)
    state = partial_state()
    if state is None:
        return ds.map(fn, **kwargs)
    from accelerate.utils import gather_object
    from datasets import Dataset, concatenate_datasets

    shard = ds.shard(state.num_processes, state.process_index, contiguous=True)
    mapped = shard.map(fn, **kwargs)
    new = [c for c in mapped.column_names if c not in ds.column_names]
    parts = gather_object([mapped.select_columns(new).to_dict()])
    merged = {c: [v for part in parts for v in part[c]] for c in new}
    added = Dataset.from_dict(merged, features=mapped.select_columns(new).features)
    return concatenate_datasets([ds.remove_columns([c for c in new if c in ds.column_names]), added], axis=1)


__all__ = ["map_features", "partial_state"]
