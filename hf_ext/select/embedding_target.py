"""The ``embedding_select`` job: the embedding-similarity baseline LESS is judged against.

Each pool and target example (instruction, input and response) is embedded with a sentence
encoder (all-MiniLM-L6-v2 by default: mean-pooled, unit-normalised last hidden states), and a
pool example scores the mean cosine to the targets (mean within a subtask, max over subtasks,
as LESS aggregates gradient similarities). The top `percent` (or `budget`) are written in the
same layout as the ``select`` and ``less_select`` jobs: ``data/*.parquet``, ``metrics.json``
(``method: embedding``) and a card, so the ``sft`` and ``compare`` jobs take it as is.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..jobs import HUB_FIELDS, JobOptions, job_output
from .columns import PoolTargetColumns
from .less.matching import select_top

__all__ = ["EmbeddingSelectConfig", "run_embedding_select", "embed_texts", "embedding_scores"]


@dataclass
class EmbeddingSelectConfig(PoolTargetColumns, JobOptions):
    """Settings of the embedding-similarity selection job (`job: embedding_select`).

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Sentence encoder (Hub id or folder); mean-pooled, unit-normalised.
        percent (`float` or `None`, *optional*, defaults to `5.0`):
            Keep the top percent of the pool. Null to use budget.
        budget (`int` or `None`, *optional*, defaults to `None`):
            Keep this many examples instead of a percent.
        max_length (`int`, *optional*, defaults to `256`):
            Tokens per text the encoder reads at most.
        batch_size (`int`, *optional*, defaults to `64`):
            Texts per encoder forward.
        output_dir (`str`, *optional*, defaults to `"outputs/embedding_select"`):
            Folder for the dataset, card and metrics.
    """

    model_name_or_path: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "Sentence encoder (Hub id or folder); mean-pooled, unit-normalised."})
    percent: Optional[float] = field(default=5.0, metadata={"help": "Keep the top percent of the pool. Null to use budget."})
    budget: Optional[int] = field(default=None, metadata={"help": "Keep this many examples instead of a percent."})
    max_length: int = field(default=256, metadata={"help": "Tokens per text the encoder reads at most."})
    batch_size: int = field(default=64, metadata={"help": "Texts per encoder forward."})
    output_dir: str = field(default="outputs/embedding_select", metadata={"help": "Folder for the dataset, card and metrics."})

    def __post_init__(self) -> None:
        if (self.percent is None) == (self.budget is None):
            raise InputError("Set exactly one of `percent` and `budget`.")
        super().__post_init__()  # output folder and Hub settings


def _texts(ds, instruction: str, input_col: str | None, response: str) -> list[str]:
    from ..evaluation.formatting import prompt_text

    return [prompt_text(r[instruction], r.get(input_col) if input_col else None) + "\n\n" + r[response] for r in ds]


def embed_texts(texts: list[str], model_name_or_path: str, *, max_length: int = 256, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, unit-normalised encoder embeddings (float32, one row per text).

    Args:
        texts (`list[str]`):
            The texts to embed.
        model_name_or_path (`str`):
            Encoder (Hub id or folder), loaded with `AutoModel` and its tokenizer.
        max_length (`int`, *optional*, defaults to `256`):
            Tokens per text the encoder reads at most (longer texts are truncated).
        batch_size (`int`, *optional*, defaults to `64`):
            Texts per encoder forward.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel

    from ..models import load_model, load_tokenizer

    tok, model = load_tokenizer(model_name_or_path), load_model(model_name_or_path, AutoModel).eval()
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(texts), batch_size), desc="Embedding"):
            enc = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def embedding_scores(pool: np.ndarray, target: np.ndarray, subtasks: list | None = None) -> np.ndarray:
    """Mean cosine of each pool row to the targets (mean within a subtask, max over subtasks).

    Args:
        pool (`np.ndarray`):
            Unit-normalised pool embeddings, one row per pool example.
        target (`np.ndarray`):
            Unit-normalised target embeddings, one row per target example.
        subtasks (`list` or `None`, *optional*, defaults to `None`):
            Subtask label of each target row; `None` averages over all targets.
    """
    sims = pool @ target.T
    if subtasks is None:
        return sims.mean(axis=1)
    labels = np.asarray(subtasks)
    return np.max(np.stack([sims[:, labels == s].mean(axis=1) for s in dict.fromkeys(subtasks)]), axis=0)


def run_embedding_select(config: EmbeddingSelectConfig) -> dict[str, Any]:
    """Embed, score, keep the top rows; write the selection folder and return its metrics.

    Args:
        config (`EmbeddingSelectConfig`):
            The job's settings: pool and target data, encoder, `percent` or `budget`, output folder.
    """
    from ..data import load_pool
    from ..evaluation.formatting import check_columns
    from ..hub.cards import render_dataset_card

    start = time.perf_counter()
    c = config
    pool, source = load_pool(c.dataset, split=c.dataset_split, license=c.dataset_license)
    target, target_source = load_pool(c.target_dataset, split=c.target_split)
    check_columns(pool.column_names, instruction_column=c.instruction_column, input_column=c.input_column,
                  response_column=c.response_column, what=f"Pool {c.dataset!r}")
    for name, col in (("target_instruction_column", c.target_instruction_column), ("target_input_column", c.target_input_column),
                      ("target_response_column", c.target_response_column), ("target_subtask_column", c.target_subtask_column)):
        if col is not None and col not in target.column_names:
            raise InputError(f"Target set {c.target_dataset!r} has no column {col!r} (field `{name}`); its columns are {target.column_names}.")
    pool_emb = embed_texts(_texts(pool, c.instruction_column, c.input_column, c.response_column), c.model_name_or_path,
                           max_length=c.max_length, batch_size=c.batch_size)
    target_emb = embed_texts(_texts(target, c.target_instruction_column, c.target_input_column, c.target_response_column),
                             c.model_name_or_path, max_length=c.max_length, batch_size=c.batch_size)
    scores = embedding_scores(pool_emb, target_emb, target[c.target_subtask_column] if c.target_subtask_column else None)
    idx = select_top(scores, k=c.budget, percent=c.percent)
    metrics: dict[str, Any] = {
        "method": "embedding", "budget": len(idx), "selected_size": len(idx), "pool_size": len(pool), "target_size": len(target),
        "model": c.model_name_or_path, "score_selected_mean": float(np.mean(scores[idx])), "score_pool_mean": float(np.mean(scores)),
        "dataset": c.dataset, "target_dataset": c.target_dataset, "source_datasets": list(source.source_datasets),
        "target_source_datasets": list(target_source.source_datasets), "license": source.license or c.dataset_license,
    }
    if c.source_column:
        sources = pool[c.source_column]
        metrics["pool_source_counts"] = dict(Counter(sources).most_common())
        metrics["selected_source_counts"] = dict(Counter(sources[i] for i in idx).most_common())
    selected = pool.select(idx).add_column("pool_index", idx).add_column("embedding_score", [float(scores[i]) for i in idx])
    with job_output(c, repo_type="dataset", writer="embedding_select", commit_message=f"Embedding selection of {len(idx)} examples") as out:
        (out.dir / "data").mkdir()
        selected.to_parquet(str(out.dir / "data" / "train-00000-of-00001.parquet"))
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)
        card_data = {"license": metrics["license"] or "other", "tags": ["hf-ext", "data-selection", "selection-embedding"],
                     "task_categories": ["text-generation"],
                     "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]}
        if source.source_datasets:
            card_data["source_datasets"] = list(source.source_datasets)
        settings = json.dumps({k: v for k, v in asdict(c).items() if k not in HUB_FIELDS}, indent=2)
        out.metrics = metrics
        out.card = render_dataset_card(
            "dataset_card.md.j2", card_data, title=f"Embedding-similarity selection of {len(idx)} from {source.name}",
            summary=(f"The {len(idx)} of {len(pool)} pool examples whose {c.model_name_or_path} embeddings are closest (mean cosine) "
                     f"to the {len(target)} examples of {c.target_dataset}: the baseline LESS (arXiv 2402.04333) is compared with."),
            sections=[{"title": "Settings", "body": f"```json\n{settings}\n```"}],
        )
    return metrics
