"""Critique filtering (Critic-RM stage 1): the consistency filter, then Summ or Rank.

Consistency filter. A critique's score must agree with the preference label: a critique of
the chosen response agrees when its score is above the mean score of the rejected response's
critiques, and a critique of the rejected response agrees when its score is below the mean
score of the chosen response's critiques. Critiques without a parsable score are dropped first
(and counted); a row survives only when both of its responses keep at least one critique.

Summ merges the kept critiques of a response into one (same backend, a summary prompt); Rank
asks a meta-judge to order them and keeps the top `top_k`. Every function returns the new
dataset and a dict of counts, so a run reports how many rows and critiques survive each step.

>>> from datasets import Dataset
>>> ds = Dataset.from_dict({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"],
...     "chosen_critiques": [["good", "bad", "??"]], "chosen_scores": [[8.0, 2.0, None]],
...     "rejected_critiques": [["meh", "great"]], "rejected_scores": [[3.0, 9.0]]})
>>> kept, stats = consistency_filter(ds)
>>> kept[0]["chosen_critiques"], kept[0]["rejected_critiques"]
(['good'], ['meh'])
>>> stats["unparsable"], stats["disagreeing"], stats["rows_kept"]
(1, 2, 1)
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InputError
from ..columns import require_columns
from .generate import SIDES, cached_generate, request_key
from .prompts import rank_messages, summary_messages
from .scores import parse_ranking, parse_score

CRITIQUE_COLUMNS = [f"{side}_{kind}" for side in SIDES for kind in ("critiques", "scores")]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def consistency_filter(dataset: Any) -> tuple[Any, dict[str, int]]:
    """Keep exactly the critiques whose scores agree with the preference label (see module doc).

    Args:
        dataset (`datasets.Dataset`):
            The output of :func:`hf_ext.critique.generate.generate_critiques` (critiques and their scores per response).
    """
    require_columns(dataset.column_names, CRITIQUE_COLUMNS, what="consistency_filter")
    stats = {"rows_in": len(dataset), "critiques_in": 0, "unparsable": 0, "disagreeing": 0, "critiques_kept": 0, "rows_kept": 0}

    def keep(row: dict[str, Any]) -> dict[str, Any]:
        valid = {}
        for side in SIDES:
            pairs = list(zip(row[f"{side}_critiques"], row[f"{side}_scores"]))
            stats["critiques_in"] += len(pairs)
            valid[side] = [(c, s) for c, s in pairs if s is not None]
            stats["unparsable"] += len(pairs) - len(valid[side])
        out: dict[str, Any] = {}
        if not valid["chosen"] or not valid["rejected"]:
            for side in SIDES:  # nothing to compare against: none of this row's critiques can agree
                stats["disagreeing"] += len(valid[side])
                out[f"{side}_critiques"], out[f"{side}_scores"] = [], []
            return out
        mean_chosen = _mean([s for _, s in valid["chosen"]])
        mean_rejected = _mean([s for _, s in valid["rejected"]])
        agree = {
            "chosen": [(c, s) for c, s in valid["chosen"] if s > mean_rejected],
            "rejected": [(c, s) for c, s in valid["rejected"] if s < mean_chosen],
        }
        for side in SIDES:
            stats["disagreeing"] += len(valid[side]) - len(agree[side])
            stats["critiques_kept"] += len(agree[side])
            out[f"{side}_critiques"] = [c for c, _ in agree[side]]
            out[f"{side}_scores"] = [s for _, s in agree[side]]
        return out

    rows = [keep(row) for row in dataset.select_columns(CRITIQUE_COLUMNS)]
    keep_rows = [i for i, r in enumerate(rows) if r["chosen_critiques"] and r["rejected_critiques"]]
    # Kept critiques of rows that lose one side are not training data either.
    stats["critiques_kept"] = sum(len(rows[i][f"{side}_critiques"]) for i in keep_rows for side in SIDES)
    stats["rows_kept"] = len(keep_rows)
    dataset = dataset.select(keep_rows)
    for name in CRITIQUE_COLUMNS:
        values = [rows[i][name] for i in keep_rows]
        dataset = dataset.remove_columns(name).add_column(name, values) if len(dataset) else dataset
    return dataset, stats


def _per_response_requests(dataset: Any, build, prompt_column: str, need: int) -> tuple[list, list, list]:
    conversations, keys, where = [], [], []
    for row, example in enumerate(dataset):
        for side in SIDES:
            critiques = example[f"{side}_critiques"]
            if len(critiques) >= need:
                conversation = build(example[prompt_column], example[side], critiques)
                conversations.append(conversation)
                keys.append(request_key(conversation, 0))
                where.append((row, side))
    return conversations, keys, where


def summarize_critiques(
    dataset: Any, backend: Any, *, cache_path: str | os.PathLike | None = None, prompt_column: str = "prompt", progress: bool = True
) -> tuple[Any, dict[str, int]]:
    """Summ variant: replace each response's kept critiques by one merged critique.

    A response with a single kept critique keeps it as is. A merged critique whose score does
    not parse, or breaks the preference order (chosen score ≤ rejected score), drops its row.

    Args:
        dataset (`datasets.Dataset`):
            The output of `consistency_filter` (prompt, chosen, rejected and the critique and score columns).
        backend (`TransformersBackend` or `OpenAIBackend`):
            The LM that writes the merged critiques (any object with ``generate(conversations, on_result=None)``).
        cache_path (`str` or `os.PathLike` or `None`, *optional*, defaults to `None`):
            JSON Lines cache of summaries already generated; a rerun sends only the missing requests.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column with the prompt.
        progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar.
    """
    require_columns(dataset.column_names, [prompt_column, *SIDES, *CRITIQUE_COLUMNS], what="summarize_critiques")
    conversations, keys, where = _per_response_requests(dataset, summary_messages, prompt_column, need=2)
    texts, sent = cached_generate(backend, conversations, keys, cache_path, progress=progress,
                                  describe=lambda i: "summary of row {}, {} response".format(*where[i]))
    merged = {side: [list(zip(c, s)) for c, s in zip(dataset[f"{side}_critiques"], dataset[f"{side}_scores"])] for side in SIDES}
    unparsable = 0
    for (row, side), text in zip(where, texts):
        score = parse_score(text)
        unparsable += score is None
        merged[side][row] = [(text, score)]
    keep = [
        i for i in range(len(dataset))
        if all(len(merged[s][i]) == 1 and merged[s][i][0][1] is not None for s in SIDES)
        and merged["chosen"][i][0][1] > merged["rejected"][i][0][1]
    ]
    stats = {"rows_in": len(dataset), "summaries": len(texts), "requests": sent, "unparsable": unparsable, "rows_kept": len(keep)}
    out = dataset.select(keep)
    for side in SIDES:
        out = out.remove_columns([f"{side}_critiques", f"{side}_scores"])
        out = out.add_column(f"{side}_critiques", [[merged[side][i][0][0]] for i in keep])
        out = out.add_column(f"{side}_scores", [[merged[side][i][0][1]] for i in keep])
    return out, stats


def rank_critiques(
    dataset: Any, backend: Any, *, top_k: int = 1, cache_path: str | os.PathLike | None = None,
    prompt_column: str = "prompt", progress: bool = True,
) -> tuple[Any, dict[str, int]]:
    """Rank variant: a meta-judge orders each response's kept critiques; keep the best `top_k`.

    When the judge's answer has no readable ranking the original order is kept (counted as
    ``unranked``). Responses with at most `top_k` critiques are not sent to the judge.

    Args:
        dataset (`datasets.Dataset`):
            The output of `consistency_filter` (prompt, chosen, rejected and the critique and score columns).
        backend (`TransformersBackend` or `OpenAIBackend`):
            The meta-judge LM (any object with ``generate(conversations, on_result=None)``).
        top_k (`int`, *optional*, defaults to `1`):
            Critiques kept per response, best ranked first.
        cache_path (`str` or `os.PathLike` or `None`, *optional*, defaults to `None`):
            JSON Lines cache of the meta-judge's rankings already generated (keyed by request and backend identity);
            a rerun sends only the missing requests.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column with the prompt.
        progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar.
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}.")
    require_columns(dataset.column_names, [prompt_column, *SIDES, *CRITIQUE_COLUMNS], what="rank_critiques")
    conversations, keys, where = _per_response_requests(dataset, rank_messages, prompt_column, need=top_k + 1)
    texts, sent = cached_generate(backend, conversations, keys, cache_path, progress=progress,
                                  describe=lambda i: "ranking of row {}, {} response".format(*where[i]))
    columns = {name: [list(v) for v in dataset[name]] for name in CRITIQUE_COLUMNS}
    unranked = 0
    for (row, side), text in zip(where, texts):
        critiques, scores = columns[f"{side}_critiques"][row], columns[f"{side}_scores"][row]
        order = parse_ranking(text, len(critiques))
        if order is None:
            unranked += 1
            order = list(range(len(critiques)))
        columns[f"{side}_critiques"][row] = [critiques[i] for i in order[:top_k]]
        columns[f"{side}_scores"][row] = [scores[i] for i in order[:top_k]]
    stats = {"rows_in": len(dataset), "rankings": len(texts), "requests": sent, "unranked": unranked,
             "critiques_kept": sum(len(v) for side in SIDES for v in columns[f"{side}_critiques"])}
    out = dataset.remove_columns(CRITIQUE_COLUMNS)
    for name in CRITIQUE_COLUMNS:
        out = out.add_column(name, columns[name])
    return out, stats


def to_training_pairs(dataset: Any, *, per_row: int = 1, prompt_column: str = "prompt") -> Any:
    """One training row per (chosen critique, rejected critique) pair, for
    :class:`trainers.CriticRMTrainer`: columns prompt, chosen, rejected, chosen_critique,
    rejected_critique (and margin when the input has it). Pairs are the i-th kept critiques
    of each side, up to `per_row` per input row.

    Args:
        dataset (`datasets.Dataset`):
            Filtered critiques: prompt, chosen, rejected, ``chosen_critiques`` and ``rejected_critiques`` columns.
        per_row (`int`, *optional*, defaults to `1`):
            Most training rows made from one input row (fewer when a side has fewer critiques).
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column with the prompt (written as ``prompt`` in the output).
    """
    from datasets import Dataset

    require_columns(dataset.column_names, [prompt_column, *SIDES, "chosen_critiques", "rejected_critiques"], what="to_training_pairs")
    rows: dict[str, list[Any]] = {k: [] for k in ("prompt", "chosen", "rejected", "chosen_critique", "rejected_critique")}
    has_margin = "margin" in dataset.column_names
    if has_margin:
        rows["margin"] = []
    for example in dataset:
        for c, r in list(zip(example["chosen_critiques"], example["rejected_critiques"]))[:per_row]:
            rows["prompt"].append(example[prompt_column])
            rows["chosen"].append(example["chosen"])
            rows["rejected"].append(example["rejected"])
            rows["chosen_critique"].append(c.strip())
            rows["rejected_critique"].append(r.strip())
            if has_margin:
                rows["margin"].append(example["margin"])
    return Dataset.from_dict(rows)
