"""The gradient datastore: run a :class:`GradientFeaturizer` over a dataset, in resumable
chunks, sharded across the processes of ``accelerate launch`` / ``torchrun``.

Each process takes a contiguous shard of rows, featurizes it chunk by chunk and saves every
finished chunk (``save_to_disk``) under ``output_dir/shards/``; a restarted run skips the chunks
already on disk. When all processes are done, every process loads the chunks in row order and
returns one dataset with a ``pool_index`` column (the row's index in the input), so indices
selected from it map straight back with ``pool.select(...)``.

>>> store = build_datastore(pool, featurizer, "outputs/less/pool_grads")  # doctest: +SKIP
>>> store.features_array().shape                                          # doctest: +SKIP
(2000, 4, 8192)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...errors import InputError
from .gradients import FEATURE_COLUMN, TOKENS_COLUMN, GradientFeaturizer

INDEX_COLUMN = "pool_index"
MANIFEST = "datastore.json"


@dataclass
class Datastore:
    """The merged features: a dataset (``pool_index``, ``less_grads``, ``less_response_tokens``) and its stats.

    Args:
        dataset (`datasets.Dataset`):
            The merged rows in pool order: ``pool_index``, the projected gradients ``less_grads`` and the response
            token count ``less_response_tokens`` (0: the row had no response token and was skipped).
        fingerprint (`str`):
            Fingerprint of the featurizer's settings, the data and the chunking; guards resumption.
        num_skipped (`int`):
            Rows with no response token (their features are zero).
        path (`Path`):
            The datastore's folder.
    """

    dataset: Any
    fingerprint: str
    num_skipped: int
    path: Path

    def features_array(self) -> np.ndarray:
        """``[rows, checkpoints, proj_dim]`` float32 (row i = pool row ``pool_index[i]`` = i)."""
        return np.asarray(self.dataset.with_format("numpy")[FEATURE_COLUMN], dtype=np.float32)

    @property
    def valid(self) -> np.ndarray:
        return np.asarray(self.dataset[TOKENS_COLUMN]) > 0


def _dist() -> tuple[int, int, Any]:
    """(rank, world size, barrier) under accelerate/torchrun; (0, 1, no-op) otherwise."""
    from ...dist import partial_state

    state = partial_state()
    if state is None:
        return 0, 1, lambda: None
    return state.process_index, state.num_processes, state.wait_for_everyone


def _chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, stop)) for lo in range(start, stop, size)]


def _shard_bounds(n: int, world: int) -> list[tuple[int, int]]:
    # Contiguous, near-equal shards: the first n % world shards get one extra row.
    base, extra = divmod(n, world)
    bounds, lo = [], 0
    for r in range(world):
        hi = lo + base + (1 if r < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def build_datastore(
    dataset,
    featurizer: GradientFeaturizer,
    output_dir: str | os.PathLike,
    *,
    chunk_size: int = 256,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> Datastore:
    """Featurize `dataset` into ``output_dir`` (resumable, sharded by rank); every rank returns the merge.

    Args:
        dataset (`datasets.Dataset`):
            The rows to featurize, with the featurizer's text columns.
        featurizer (`GradientFeaturizer`):
            The featurizer run over each chunk (its fingerprint guards resumption).
        output_dir (`str` or `os.PathLike`):
            Folder of the datastore: its manifest and the finished chunks under ``shards/``.
        chunk_size (`int`, *optional*, defaults to `256`):
            Rows per saved chunk: the most work an interruption loses.
        batch_size (`int`, *optional*, defaults to `64`):
            Rows per ``map`` batch (one projection pass per batch).
        overwrite (`bool`, *optional*, defaults to `False`):
            Start afresh when ``output_dir`` holds a datastore of other settings or data (otherwise an `InputError`).
        progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar per rank.
    """
    from datasets import concatenate_datasets, load_from_disk

    out = Path(output_dir)
    rank, world, barrier = _dist()
    n = len(dataset)
    if n == 0:
        raise InputError("build_datastore got an empty dataset: there is nothing to featurize.")
    key = f"{featurizer.fingerprint}-{dataset._fingerprint}-n{n}-chunk{chunk_size}"
    fingerprint = "less-store-" + hashlib.sha256(key.encode()).hexdigest()[:24]
    manifest = out / MANIFEST
    if rank == 0:
        if manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") != fingerprint:
            if not overwrite:
                raise InputError(
                    f"{str(out)!r} holds a datastore built with other settings or data. Use another output_dir, "
                    "or pass overwrite=True (overwrite: true in a recipe) to rebuild it."
                )
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            manifest.write_text(json.dumps({"fingerprint": fingerprint, "rows": n, "chunk_size": chunk_size}, indent=2))
    barrier()

    indexed = dataset.add_column(INDEX_COLUMN, list(range(n))) if INDEX_COLUMN not in dataset.column_names else dataset
    # Chunks are cut from the whole dataset, then dealt to ranks as contiguous runs, so the
    # chunk files are the same whatever the number of processes (a resumed run may change it).
    all_chunks = _chunks(0, n, chunk_size)
    lo_c, hi_c = _shard_bounds(len(all_chunks), world)[rank]
    mine = all_chunks[lo_c:hi_c]
    todo = [(lo, hi) for lo, hi in mine if not (out / "shards" / f"{lo:09d}-{hi:09d}" / "dataset_info.json").is_file()]
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(hi - lo for lo, hi in todo), desc=f"LESS gradients (rank {rank})", disable=not progress, unit="ex")
    for lo, hi in todo:
        part = indexed.select(range(lo, hi)).map(
            featurizer, batched=True, batch_size=batch_size, new_fingerprint=f"{fingerprint}-{lo}", load_from_cache_file=False
        )
        part = part.select_columns([INDEX_COLUMN, FEATURE_COLUMN, TOKENS_COLUMN])
        final = out / "shards" / f"{lo:09d}-{hi:09d}"
        tmp = final.with_name(final.name + f".tmp-{rank}")
        shutil.rmtree(tmp, ignore_errors=True)
        part.save_to_disk(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # a chunk appears whole or not at all
        bar.update(hi - lo)
    bar.close()
    barrier()
    merged = concatenate_datasets([load_from_disk(str(out / "shards" / f"{lo:09d}-{hi:09d}")) for lo, hi in all_chunks])
    if merged[INDEX_COLUMN] != list(range(n)):
        raise InputError(f"The datastore in {str(out)!r} is inconsistent (rows out of order); rebuild it with overwrite=True.")
    skipped = int(sum(1 for t in merged[TOKENS_COLUMN] if t == 0))
    if rank == 0:
        info = json.loads(manifest.read_text()) | {"num_skipped_no_response_tokens": skipped, "complete": True}
        manifest.write_text(json.dumps(info, indent=2))
    return Datastore(merged, fingerprint, skipped, out)
