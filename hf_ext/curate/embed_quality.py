"""A quality scorer that is a small linear head on frozen sentence embeddings.

The embeddings are sentence-transformers' recipe for ``all-MiniLM-L6-v2`` (mean of the last
hidden states over real tokens, L2-normalised, 256 tokens), computed with plain transformers
through `hf_ext.models` so the packaged copy runs offline. The head is scikit-learn's
``LogisticRegression`` (positives vs negatives) or ``Ridge`` (a numeric label such as a judge's
0-5 educational score, as FineWeb-Edu does); either way it is a weight vector and a bias,
saved as safetensors with a JSON config, never pickled.

``EmbeddingQualityScorer`` is a ``ds.map(scorer, batched=True)`` callable adding
``quality_score``; it pickles as its settings plus the head (a few KB), loads the encoder
lazily in each worker, and its fingerprint is the settings and the head, not the encoder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..models import check_dtype

HEAD_FILE, CONFIG_FILE = "head.safetensors", "quality_scorer.json"


@dataclass
class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a transformers encoder.

    Args:
        model (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Hub id or folder (default: the packaged ``all-MiniLM-L6-v2``).
        max_length (`int`, *optional*, defaults to `256`):
            Tokens per text (the model's sentence-transformers setting: 256); longer texts are truncated, so the
            head sees the start of a page.
        batch_size (`int`, *optional*, defaults to `32`):
            Texts per forward pass.
        device (`str` or `None`, *optional*, defaults to `None`):
            Torch device (default: CUDA when available).
        dtype (`str` or `None`, *optional*, defaults to `None`):
            Weights' precision (None: the checkpoint's).
        revision (`str` or `None`, *optional*, defaults to `None`):
            Hub revision (branch, tag or commit) of `model` for the tokenizer and weights (None: the default branch).
    """

    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    max_length: int = 256
    batch_size: int = 32
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        self._model = self._tokenizer = None
        if self.max_length < 2:
            raise InputError(f"SentenceEmbedder.max_length must be at least 2, got {self.max_length}.")
        check_dtype(self.dtype, "SentenceEmbedder.dtype")

    def __getstate__(self) -> dict[str, Any]:
        return asdict(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel

        from ..models import load_model, load_tokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs = {"dtype": getattr(torch, self.dtype)} if self.dtype else {}
        self._tokenizer = load_tokenizer(self.model, revision=self.revision)
        self._model = load_model(self.model, auto_class=AutoModel, revision=self.revision, **kwargs).to(device).eval()

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """``(len(texts), hidden)`` float32 embeddings, one per text, in order."""
        import torch

        self._load()
        texts = [" ".join((t or "").split()) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch together
        out = np.zeros((len(texts), self._model.config.hidden_size), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Embedding", unit="batch")
        for start in starts:
            chunk = order[start : start + self.batch_size]
            enc = self._tokenizer([texts[i] for i in chunk], truncation=True, max_length=self.max_length, padding=True,
                                  return_tensors="pt").to(self._model.device)
            with torch.inference_mode():
                hidden = self._model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[chunk] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out


@dataclass
class EmbeddingQualityScorer:
    """``ds.map(scorer, batched=True)``: ``quality_score`` = head(embedding(text)).

    Args:
        weights (`list[float]`):
            Weights of the linear head, one per hidden unit (``len(weights)`` = the encoder's hidden size).
        bias (`float`, *optional*, defaults to `0.0`):
            Bias of the linear head.
        link (`Literal['logistic', 'identity']`, *optional*, defaults to `"logistic"`):
            ``"logistic"`` (score = p(positive), from a classifier) or ``"identity"`` (the predicted label, e.g.
            an educational score 0-5, from a regressor).
        embedder (`SentenceEmbedder`, *optional*, defaults to `SentenceEmbedder()`):
            The frozen encoder's settings (a dict of them is turned into a `SentenceEmbedder`).
        text_column (`str`, *optional*, defaults to `"text"`):
            Column of the batch whose texts are scored.
        score_column (`str`, *optional*, defaults to `"quality_score"`):
            Column the scores are written to.
        metadata (`dict[str, Any]`, *optional*, defaults to `{}`):
            Free-form notes saved with the scorer's config (the jobs record what it was trained on); not used to score.
    """

    weights: list[float]
    bias: float = 0.0
    link: Literal["logistic", "identity"] = "logistic"
    embedder: SentenceEmbedder = field(default_factory=SentenceEmbedder)
    text_column: str = "text"
    score_column: str = "quality_score"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.link not in ("logistic", "identity"):
            raise InputError(f"EmbeddingQualityScorer.link must be 'logistic' or 'identity', got {self.link!r}.")
        if isinstance(self.embedder, dict):
            self.embedder = SentenceEmbedder(**self.embedder)
        self.weights = [float(w) for w in self.weights]
        self.bias = float(self.bias)

    def score_embeddings(self, embeddings: np.ndarray) -> list[float]:
        z = np.asarray(embeddings, dtype=np.float64) @ np.asarray(self.weights, dtype=np.float64) + self.bias
        return (1.0 / (1.0 + np.exp(-z)) if self.link == "logistic" else z).tolist()

    def score(self, texts: Sequence[str], progress: bool = False) -> list[float]:
        if not len(texts):
            return []
        emb = self.embedder.encode(texts, progress=progress)
        if emb.shape[1] != len(self.weights):
            raise InputError(f"The head has {len(self.weights)} weights but {self.embedder.model!r} gives {emb.shape[1]}-dim "
                             "embeddings; score with the encoder the head was trained on.")
        return self.score_embeddings(emb)

    def __call__(self, batch: dict) -> dict:
        if self.text_column not in batch:
            raise InputError(f"The dataset has no column {self.text_column!r}; columns: {sorted(batch)}. Set text_column.")
        return {self.score_column: self.score(batch[self.text_column])}

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``head.safetensors`` (weights, bias) and ``quality_scorer.json`` (settings) into `folder`."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"weight": np.asarray(self.weights, dtype=np.float64), "bias": np.asarray([self.bias], dtype=np.float64)},
                  str(folder / HEAD_FILE))
        config = {"kind": "embedding", "link": self.link, "embedder": asdict(self.embedder), "text_column": self.text_column,
                  "score_column": self.score_column, "metadata": self.metadata}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "EmbeddingQualityScorer":
        """Read a folder written by `save` (safetensors + JSON only)."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / HEAD_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
            raise InputError(f"{str(folder)!r} is not an embedding quality scorer: it needs {HEAD_FILE} and {CONFIG_FILE} "
                             "(written by EmbeddingQualityScorer.save or the quality_classifier job).")
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.pop("kind", None) != "embedding":
            raise InputError(f"{str(folder / CONFIG_FILE)!r} does not describe an embedding scorer.")
        tensors = load_file(str(folder / HEAD_FILE))
        return cls(weights=tensors["weight"].tolist(), bias=float(tensors["bias"][0]), **config)


def fit_embedding_head(embeddings: np.ndarray, labels: Sequence[float], kind: Literal["logistic", "ridge"] = "logistic",
                       C: float = 1.0, seed: int = 0, sample_weight: Sequence[float] | None = None) -> tuple[list[float], float]:
    """Fit the linear head with scikit-learn: ``LogisticRegression(C=C)`` on 0/1 labels
    (class-balanced) or ``Ridge(alpha=1/C)`` on numeric labels. Returns (weights, bias).

    Args:
        embeddings (`np.ndarray`):
            ``(n, hidden)`` embeddings of the training texts.
        labels (`Sequence[float]`):
            One label per embedding: 0/1 for ``"logistic"``, any number for ``"ridge"``; at least two.
        kind (`Literal["logistic", "ridge"]`, *optional*, defaults to `"logistic"`):
            ``"logistic"`` (a classifier) or ``"ridge"`` (a regressor).
        C (`float`, *optional*, defaults to `1.0`):
            Inverse regularisation strength: ``LogisticRegression(C=C)`` or ``Ridge(alpha=1/C)``.
        seed (`int`, *optional*, defaults to `0`):
            ``random_state`` of the logistic regression (Ridge is deterministic).
        sample_weight (`Sequence[float]` or `None`, *optional*, defaults to `None`):
            Per-example weights passed to scikit-learn's ``fit``.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    x, y = np.asarray(embeddings, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(x) != len(y) or len(y) < 2:
        raise InputError(f"fit_embedding_head needs as many labels as embeddings (>= 2); got {len(x)} and {len(y)}.")
    if kind == "logistic":
        if set(np.unique(y)) - {0.0, 1.0} or len(np.unique(y)) < 2:
            raise InputError("A logistic head needs both labels 0 and 1 (and nothing else).")
        model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
    elif kind == "ridge":
        model = Ridge(alpha=1.0 / C)
    else:
        raise InputError(f"Unknown head kind {kind!r}; choose 'logistic' or 'ridge'.")
    model.fit(x, y, sample_weight=sample_weight)
    return np.ravel(model.coef_).tolist(), float(np.ravel([model.intercept_])[0])


def train_embedding_classifier(positives: Sequence[str], negatives: Sequence[str], embedder: SentenceEmbedder | None = None,
                               C: float = 1.0, seed: int = 0, progress: bool = False, **scorer_kwargs) -> EmbeddingQualityScorer:
    """Embed both classes with the frozen encoder and fit a logistic-regression head.

    Args:
        positives (`Sequence[str]`):
            Texts of the high-quality class (label 1); at least one.
        negatives (`Sequence[str]`):
            Texts of the other class (label 0); at least one.
        embedder (`SentenceEmbedder` or `None`, *optional*, defaults to `None`):
            The frozen encoder (None: `SentenceEmbedder()`, the packaged ``all-MiniLM-L6-v2``).
        C (`float`, *optional*, defaults to `1.0`):
            Inverse regularisation strength of the ``LogisticRegression`` head.
        seed (`int`, *optional*, defaults to `0`):
            ``random_state`` of the logistic regression.
        progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar while embedding.
        **scorer_kwargs:
            Further `EmbeddingQualityScorer` fields (``text_column``, ``score_column``, ``metadata``).
    """
    if not positives or not negatives:
        raise InputError(f"Training needs positives and negatives; got {len(positives)} and {len(negatives)}.")
    embedder = embedder or SentenceEmbedder()
    emb = embedder.encode(list(positives) + list(negatives), progress=progress)
    weights, bias = fit_embedding_head(emb, [1] * len(positives) + [0] * len(negatives), "logistic", C=C, seed=seed)
    return EmbeddingQualityScorer(weights, bias, "logistic", embedder, **scorer_kwargs)
