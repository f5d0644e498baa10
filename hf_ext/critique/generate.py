"""Stage 1 of Critic-RM: sample critiques for every response of a preference dataset.

For each row (prompt, chosen, rejected) the backend writes `num_critiques` critiques of the
chosen and of the rejected response (:func:`hf_ext.critique.prompts.critique_messages`), each
ending in ``Score: N``. Results go to a JSONL cache as they arrive, keyed by a hash of the
request, so a run that stops (a crash, a server error, Ctrl-C) resumes without asking again
for anything already written.

>>> from datasets import Dataset
>>> class Echo:  # any object with .generate(conversations, on_result=None) works as a backend
...     def generate(self, conversations, on_result=None):
...         return ["Fine.\\nScore: 7" for _ in conversations]
>>> ds = Dataset.from_dict({"prompt": ["Hi"], "chosen": ["Hello!"], "rejected": ["Go away."]})
>>> out, stats = generate_critiques(ds, Echo(), num_critiques=2)
>>> out[0]["chosen_scores"], stats["requests"]
([7.0, 7.0], 4)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..columns import require_columns, require_rows, require_strings
from .backends import BackendError, Conversation
from .prompts import critique_messages
from .scores import parse_score

logger = logging.getLogger(__name__)

SIDES = ("chosen", "rejected")


def request_key(conversation: Conversation, sample: int) -> str:
    """Stable id of one request: the messages and the sample number. `cached_generate` scopes it
    to the backend (:func:`backend_identity`), so another model or sampling setting asks again.

    Args:
        conversation (`Conversation`):
            The request's chat messages.
        sample (`int`):
            Which of several samples of the same conversation this is (0 for a single request).
    """
    payload = json.dumps([conversation, sample], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def backend_identity(backend: Any) -> dict[str, Any]:
    """What decides a backend's text: its ``identity()`` (model, server, temperature, …) when it
    has one, else its class.

    Args:
        backend (`Any`):
            A generation backend (`TransformersBackend`, `OpenAIBackend` or any object with ``generate``).
    """
    identity = getattr(backend, "identity", None)
    if callable(identity):
        return identity()
    return {"backend": f"{type(backend).__module__}.{type(backend).__qualname__}"}


def _scoped_key(identity: str, key: str) -> str:
    return hashlib.sha256(f"{identity}|{key}".encode("utf-8")).hexdigest()[:24]


class GenerationCache:
    """An append-only JSONL file of ``{"key", "text"}`` records; safe to append from threads.

    Args:
        path (`str` or `os.PathLike` or `None`):
            The JSONL file, read if it exists (unreadable lines are skipped with a warning) and created on the
            first `add`; None keeps results in memory only.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.results: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            with self.path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        self.results[record["key"]] = record["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        # A line cut short by a crash is simply asked for again.
                        logger.warning("Ignoring unreadable line %d of %s", number, self.path)

    def add(self, key: str, text: str) -> None:
        with self._lock:
            self.results[key] = text
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "text": text}, ensure_ascii=False) + "\n")


def cached_generate(
    backend: Any,
    conversations: Sequence[Conversation],
    keys: Sequence[str],
    cache_path: str | os.PathLike | None = None,
    *,
    chunk_size: int = 64,
    describe: Callable[[int], str] | None = None,
    progress: bool = True,
) -> tuple[list[str], int]:
    """Generate the conversations whose keys are not cached yet; return all texts (in order)
    and how many requests were sent. A failing request raises a :class:`BackendError` that
    names it (through `describe(index)`); everything finished before stays in the cache.
    Cached texts are keyed on `keys` and :func:`backend_identity`, so a cache written by
    another model, server or sampling setting is not reused.

    Args:
        backend (`Any`):
            The generation backend (any object with ``generate(conversations, on_result=None)``).
        conversations (`Sequence[Conversation]`):
            The requests, in order.
        keys (`Sequence[str]`):
            One `request_key` per conversation; requests with equal keys are sent once.
        cache_path (`str` or `os.PathLike` or `None`, *optional*, defaults to `None`):
            JSON Lines cache (`GenerationCache`) read before and appended to as results arrive; None caches in
            memory only.
        chunk_size (`int`, *optional*, defaults to `64`):
            Requests per backend call.
        describe (`Callable[[int], str]` or `None`, *optional*, defaults to `None`):
            Names the request at an index in the error message of a failed chunk (default: ``"request <index>"``).
        progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar of the requests sent.
    """
    identity = json.dumps(backend_identity(backend), sort_keys=True, default=str)
    keys = [_scoped_key(identity, key) for key in keys]
    cache = GenerationCache(cache_path)
    first_index: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in cache.results:
            first_index.setdefault(key, i)  # identical requests are sent once
    pending = list(first_index.values())
    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="Generating", unit="req")
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]

        def on_result(offset: int, text: str, chunk: list[int] = chunk) -> None:
            cache.add(keys[chunk[offset]], text)
            if bar is not None:
                bar.update(1)

        try:
            texts = backend.generate([conversations[i] for i in chunk], on_result=on_result)
            for i, text in zip(chunk, texts):  # backends that do not call on_result
                if keys[i] not in cache.results:
                    on_result(chunk.index(i), text)
        except BackendError as exc:
            failed = [i for i in chunk if keys[i] not in cache.results]
            name = describe(failed[0]) if describe and failed else f"request {failed[0] if failed else '?'}"
            where = f" Finished results are kept in {str(cache.path)!r}; run again to resume." if cache.path else ""
            raise BackendError(f"Generation failed for {name} ({len(failed)} unfinished in this chunk): {exc}.{where}") from exc
    if bar is not None:
        bar.close()
    return [cache.results[key] for key in keys], len(pending)


def check_preference_columns(dataset: Any, prompt_column: str, chosen_column: str, rejected_column: str, *, what: str) -> None:
    """Raise `InputError` unless `dataset` has rows and its three preference columns hold only strings.

    Args:
        dataset (`datasets.Dataset`):
            The preference dataset to check.
        prompt_column (`str`):
            Column with the prompt.
        chosen_column (`str`):
            Column with the preferred response.
        rejected_column (`str`):
            Column with the other response.
        what (`str`):
            Name of the caller, for the error messages.
    """
    require_rows(len(dataset), what=what)
    require_columns(dataset.column_names, [prompt_column, chosen_column, rejected_column], what=what)
    for column in (prompt_column, chosen_column, rejected_column):
        require_strings(dataset[column], column)


def generate_critiques(
    dataset: Any,
    backend: Any,
    *,
    num_critiques: int = 4,
    cache_path: str | os.PathLike | None = None,
    prompt_column: str = "prompt",
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
    chunk_size: int = 64,
    progress: bool = True,
) -> tuple[Any, dict[str, int]]:
    """Add ``chosen_critiques``, ``rejected_critiques`` (lists of `num_critiques` texts) and
    ``chosen_scores``, ``rejected_scores`` (parsed scores, None when unparsable) to `dataset`.

    Returns the new dataset and counts: rows, critiques, requests (sent this call; 0 when all
    came from the cache) and unparsable (critiques without a valid score, dropped later by
    :func:`hf_ext.critique.filters.consistency_filter`).

    Args:
        dataset (`datasets.Dataset`):
            Preference pairs with prompt, chosen and rejected columns.
        backend (`TransformersBackend` or `OpenAIBackend`):
            The critic LM that writes the critiques.
        num_critiques (`int`, *optional*, defaults to `4`):
            Critiques per response (Critic-RM samples several and keeps the consistent ones).
        cache_path (`str` or `os.PathLike` or `None`, *optional*, defaults to `None`):
            JSON Lines cache of critiques already generated; a rerun sends only the missing requests.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column with the prompt.
        chosen_column (`str`, *optional*, defaults to `"chosen"`):
            Column with the preferred response.
        rejected_column (`str`, *optional*, defaults to `"rejected"`):
            Column with the other response.
        chunk_size (`int`, *optional*, defaults to `64`):
            Requests per backend call (each result is cached as it arrives).
        progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar.
    """
    if not isinstance(num_critiques, int) or num_critiques < 1:
        raise InputError(f"num_critiques must be a positive integer, got {num_critiques!r}.")
    check_preference_columns(dataset, prompt_column, chosen_column, rejected_column, what="generate_critiques")
    conversations, keys, where = [], [], []
    for row, (prompt, chosen, rejected) in enumerate(zip(dataset[prompt_column], dataset[chosen_column], dataset[rejected_column])):
        for side, response in zip(SIDES, (chosen, rejected)):
            conversation = critique_messages(prompt, response)
            for sample in range(num_critiques):
                conversations.append(conversation)
                keys.append(request_key(conversation, sample))
                where.append((row, side, sample))
    texts, sent = cached_generate(
        backend, conversations, keys, cache_path, chunk_size=chunk_size, progress=progress,
        describe=lambda i: "row {}, {} response, critique {}".format(*where[i]),
    )
    columns: dict[str, list[list[Any]]] = {f"{side}_{kind}": [[] for _ in range(len(dataset))] for side in SIDES for kind in ("critiques", "scores")}
    for (row, side, _), text in zip(where, texts):
        columns[f"{side}_critiques"][row].append(text)
        columns[f"{side}_scores"][row].append(parse_score(text))
    stats = {
        "rows": len(dataset),
        "critiques": len(texts),
        "requests": sent,
        "unparsable": sum(s is None for side in SIDES for scores in columns[f"{side}_scores"] for s in scores),
    }
    for name, values in columns.items():
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
        dataset = dataset.add_column(name, values)
    logger.info("Critique generation: %s", stats)
    return dataset, stats
