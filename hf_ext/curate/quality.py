"""Model-based quality scores: DCLM's fastText bigram classifier (train and score) and a
Hugging Face sequence-classification model as the scorer (Llama 3 style), both as
``ds.map(scorer, batched=True)`` functions adding a ``quality_score`` column, plus keep-top-p /
threshold selection.

DCLM's rule: predict on the text with newlines joined by spaces; the score is p(hq), i.e.
the top probability when the top label is the positive one and 1 - p otherwise. With
``normalize="punct_lower"`` the text is also lowercased and punctuation split from words
(fastText splits on whitespace only, so "word," and "word" would be different features); the
choice is written beside the model (``<model>.hf_ext.json``) so a reloaded scorer applies it too.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .langid import load_fasttext_model

# DCLM baselines/train_fasttext_classifier.py defaults, with wordNgrams=2 (the bigram model).
DCLM_FASTTEXT_DEFAULTS = {"lr": 0.1, "dim": 100, "ws": 5, "epoch": 5, "minCount": 1, "wordNgrams": 2}
# What the quality_classifier job (recipes/quality_fasttext.yaml) trains with on top of them: on ~1,000
# pages DCLM's 5 epochs at lr 0.1 undertrain (held-out AUC below 0.5), and whitespace tokens glue
# punctuation to words. Chosen on transfers between training sources only (benchmarks/curate_quality.py).
QUALITY_FASTTEXT_RECIPE = {"epoch": 25, "lr": 0.5, "normalize": "punct_lower"}


NORMALIZATIONS = ("dclm", "punct_lower")
_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")


def _one_line(text: str) -> str:
    return " ".join((text or "").split("\n")).strip()


def normalize_text(text: str, normalize: str = "dclm") -> str:
    """The text a fastText quality model sees: DCLM's (newlines joined by spaces), or with
    ``"punct_lower"`` lowercased with every punctuation mark a token of its own.

    Args:
        text (`str`):
            The document.
        normalize (`str`, *optional*, defaults to `"dclm"`):
            One of `NORMALIZATIONS`.
    """
    if normalize == "dclm":
        return _one_line(text)
    if normalize == "punct_lower":
        return " ".join(_WORD_OR_PUNCT.findall(_one_line(text).lower()))
    raise InputError(f"normalize must be one of {list(NORMALIZATIONS)}, got {normalize!r}.")


def _sidecar(model_path: str | os.PathLike) -> Path:
    return Path(f"{model_path}.hf_ext.json")


def _write_sidecar(model_path: str | os.PathLike, normalize: str) -> None:
    _sidecar(model_path).write_text(json.dumps({"normalize": normalize}) + "\n")


def _read_sidecar(model_path: str | os.PathLike) -> str | None:
    """The normalisation saved beside a local model, or None when it has no sidecar."""
    path = _sidecar(model_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["normalize"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path} is not an hf_ext fastText sidecar ({{\"normalize\": ...}}); delete it or retrain the model.") from None


def train_fasttext_classifier(
    positives: Sequence[str],
    negatives: Sequence[str],
    output_path: str | os.PathLike,
    positive_label: str = "hq",
    negative_label: str = "cc",
    seed: int = 42,
    threads: int = 1,
    normalize: str = "dclm",
    **hyperparameters,
) -> "FastTextQualityScorer":
    """Train DCLM's fastText quality classifier and save it to `output_path`.

    Args:
        positives (`Sequence[str]`):
            Texts (e.g. ``ds["text"]``) of the positive (high-quality) class.
        negatives (`Sequence[str]`):
            Texts of the negative class.
        output_path (`str` or `os.PathLike`):
            Where the trained ``.bin`` model is saved (parent folders are created).
        positive_label (`str`, *optional*, defaults to `"hq"`):
            FastText label of the positives (DCLM: ``hq``); the returned scorer scores p(this label).
        negative_label (`str`, *optional*, defaults to `"cc"`):
            FastText label of the negatives (DCLM: ``cc``).
        seed (`int`, *optional*, defaults to `42`):
            Seeds the shuffle of the training rows and fastText's own training.
        hyperparameters:
            FastText ``train_supervised`` options overriding `DCLM_FASTTEXT_DEFAULTS`.
        threads (`int`, *optional*, defaults to `1`):
            FastText threads (1 makes training reproducible).
        normalize (`str`, *optional*, defaults to `"dclm"`):
            Text normalisation at training and scoring time (`normalize_text`): ``"dclm"`` (DCLM's) or
            ``"punct_lower"``; written to ``<output_path>.hf_ext.json``.
    """
    try:
        import fasttext
    except ImportError:
        raise InputError("fastText training needs the curate extra: pip install 'hf-ext[curate]'.") from None
    if not hasattr(fasttext, "train_supervised"):
        raise InputError(
            "The installed `fasttext` module can only predict (fasttext-predict). Reinstall the training build: "
            "pip install --force-reinstall --no-deps fasttext-numpy2-wheel"
        )
    if not positives or not negatives:
        raise InputError(f"Training needs positives and negatives; got {len(positives)} and {len(negatives)}.")
    normalize_text("", normalize)  # a bad value is named before any work
    rows = [f"__label__{label} {line}" for label, texts in ((positive_label, positives), (negative_label, negatives))
            for line in (normalize_text(t, normalize) for t in texts) if line]
    random.Random(seed).shuffle(rows)
    params = {**DCLM_FASTTEXT_DEFAULTS, **hyperparameters}
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp, "train.txt")
        train_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
        model = fasttext.train_supervised(input=str(train_file), seed=seed, thread=threads, verbose=0, **params)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    model.save_model(str(output_path))
    _write_sidecar(output_path, normalize)
    return FastTextQualityScorer(str(output_path), positive_label=positive_label)


class FastTextQualityScorer:
    """``ds.map(scorer, batched=True)``: adds ``quality_score`` = p(positive label).

    Args:
        model (`str`):
            A local .bin path, or ``"repo_id/filename.bin"`` / ``"repo_id"`` + ``filename`` on the Hub (e.g. the
            released DCLM classifier ``mlfoundations/fasttext-oh-eli5`` /
            ``openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin``).
        positive_label (`str`, *optional*, defaults to `"hq"`):
            The label whose probability is the score (DCLM: ``hq``).
        filename (`str` or `None`, *optional*, defaults to `None`):
            File inside the Hub repo `model` (not needed for a local path or a ``"repo_id/filename.bin"`` model).
        text_column (`str`, *optional*, defaults to `"text"`):
            Column of the batch whose texts are scored.
        score_column (`str`, *optional*, defaults to `"quality_score"`):
            Column the scores are written to.
        normalize (`str` or `None`, *optional*, defaults to `None`):
            Text normalisation (`normalize_text`); `None` reads it from ``<model>.hf_ext.json`` when a local model
            has one (written by `train_fasttext_classifier`), else DCLM's. A value that contradicts that file is
            refused.
    """

    def __init__(self, model: str, positive_label: str = "hq", filename: str | None = None,
                 text_column: str = "text", score_column: str = "quality_score", normalize: str | None = None):
        self.model, self.filename, self.positive_label = model, filename, positive_label
        self.text_column, self.score_column = text_column, score_column
        saved = _read_sidecar(model)
        if normalize is not None and saved is not None and normalize != saved:
            raise InputError(f"{model} was trained with normalize={saved!r} ({_sidecar(model).name}); got normalize={normalize!r}.")
        self.normalize = normalize or saved or "dclm"
        normalize_text("", self.normalize)
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def _path(self) -> str:
        if os.path.exists(self.model):
            return self.model
        repo, filename = self.model, self.filename
        if filename is None and self.model.endswith((".bin", ".ftz")) and self.model.count("/") >= 2:
            repo, _, filename = self.model.rpartition("/")
        if filename is None:
            raise InputError(f"fastText model {self.model!r} is not a file; for a Hub repo also pass filename=.")
        from huggingface_hub import hf_hub_download

        try:
            return hf_hub_download(repo, filename)
        except Exception as exc:
            raise InputError(f"Could not fetch fastText model {filename!r} from Hub repo {repo!r}: {type(exc).__name__}: {exc}") from None

    @property
    def fasttext_model(self):
        if self._model is None:
            self._model = load_fasttext_model(self._path(), "quality model")
            labels = [label.removeprefix("__label__") for label in self._model.get_labels()]
            if self.positive_label not in labels:
                raise InputError(f"Label {self.positive_label!r} is not one of the model's labels {labels}; set positive_label.")
        return self._model

    def save(self, path: str | os.PathLike) -> None:
        """Write the fastText model to `path` and its normalisation to ``<path>.hf_ext.json``.

        Args:
            path (`str` or `os.PathLike`):
                The ``.bin`` file to write (parent folders are created).
        """
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.fasttext_model.save_model(str(path))
        _write_sidecar(path, self.normalize)

    def score(self, texts: Sequence[str]) -> list[float]:
        labels, probs = self.fasttext_model.predict([normalize_text(t, self.normalize) for t in texts], k=1)
        target = f"__label__{self.positive_label}"
        return [float(min(1.0, p[0])) if lab[0] == target else float(1.0 - min(1.0, p[0])) for lab, p in zip(labels, probs)]

    def __call__(self, batch: dict) -> dict:
        if self.text_column not in batch:
            raise InputError(f"The dataset has no column {self.text_column!r}; columns: {sorted(batch)}. Set text_column.")
        return {self.score_column: self.score(batch[self.text_column])}


class HFQualityScorer:
    """A transformers sequence-classification model as the quality scorer (Llama 3 used
    small transformer classifiers trained on labels from a stronger model). The score is
    the softmax probability of ``positive_index`` (or the raw logit of a 1-output model).
    Loads lazily; the fingerprint is the model id, not the weights.

    Args:
        model (`str`):
            Hub id or folder of a sequence-classification model (and its tokenizer).
        positive_index (`int`, *optional*, defaults to `1`):
            Index of the high-quality class among the model's outputs (ignored for a 1-output model).
        text_column (`str`, *optional*, defaults to `"text"`):
            Column of the batch whose texts are scored.
        score_column (`str`, *optional*, defaults to `"quality_score"`):
            Column the scores are written to.
        max_length (`int`, *optional*, defaults to `512`):
            Tokens per text; longer texts are truncated.
        batch_size (`int`, *optional*, defaults to `16`):
            Texts per forward pass.
        device (`str`, *optional*, defaults to `"cpu"`):
            Torch device the model runs on.
    """

    def __init__(self, model: str, positive_index: int = 1, text_column: str = "text", score_column: str = "quality_score",
                 max_length: int = 512, batch_size: int = 16, device: str = "cpu"):
        self.model_id, self.positive_index, self.text_column, self.score_column = model, positive_index, text_column, score_column
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self._model = self._tokenizer = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
            self._model = AutoModelForSequenceClassification.from_pretrained(self.model_id).to(self.device).eval()

    def score(self, texts: Sequence[str]) -> list[float]:
        import torch

        self._load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self._tokenizer(list(texts[start : start + self.batch_size]), truncation=True, max_length=self.max_length,
                                  padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                logits = self._model(**enc).logits
            if logits.shape[-1] == 1:
                out.extend(logits[:, 0].tolist())
            else:
                out.extend(logits.softmax(-1)[:, self.positive_index].tolist())
        return out

    def __call__(self, batch: dict) -> dict:
        if self.text_column not in batch:
            raise InputError(f"The dataset has no column {self.text_column!r}; columns: {sorted(batch)}. Set text_column.")
        return {self.score_column: self.score(batch[self.text_column])}


def load_quality_scorer(model: str, filename: str | None = None, positive_label: str = "hq", text_column: str = "text"):
    """The scorer a curate job's ``quality_model`` names: a folder written by
    `EmbeddingQualityScorer.save` (the quality_classifier job's output with ``scorer:
    embedding``, the shipped default, or the quality_judge job's) loads as that embedding head;
    anything else is a fastText model (a .bin/.ftz path or a Hub repo + `filename`), scored as
    p(`positive_label`). Returns ``(scorer, kind, fingerprint)``: the fingerprint names the
    embedding head's weights and settings, so retraining into the same folder changes it.

    Args:
        model (`str`):
            A folder written by `EmbeddingQualityScorer.save`, a fastText ``.bin`` / ``.ftz`` path, or a Hub repo
            holding a fastText model.
        filename (`str` or `None`, *optional*, defaults to `None`):
            FastText file inside the Hub repo `model` (unused for a folder or local file).
        positive_label (`str`, *optional*, defaults to `"hq"`):
            FastText label whose probability is the score (unused for an embedding head).
        text_column (`str`, *optional*, defaults to `"text"`):
            Column the scorer reads the texts from.
    """
    from .embed_quality import CONFIG_FILE, EmbeddingQualityScorer

    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, CONFIG_FILE)):
            raise InputError(f"quality_model {model!r} is a folder without {CONFIG_FILE}: pass a fastText .bin file or a "
                             "folder written by the quality_classifier / quality_judge job (EmbeddingQualityScorer.save).")
        scorer = EmbeddingQualityScorer.load(model)
        scorer.text_column = text_column
        import hashlib
        import json
        from dataclasses import asdict

        state = json.dumps({"weights": scorer.weights, "bias": scorer.bias, "link": scorer.link,
                            "embedder": asdict(scorer.embedder)}, sort_keys=True)
        return scorer, "embedding", hashlib.sha1(state.encode("utf-8")).hexdigest()
    scorer = FastTextQualityScorer(model, positive_label=positive_label, filename=filename, text_column=text_column)
    return scorer, "fasttext", f"{model}|{filename}|{positive_label}|{scorer.normalize}"


def select_by_score(scores: Sequence[float], top_fraction: float | None = None, threshold: float | None = None) -> list[int]:
    """Indices kept by score: the top ``top_fraction`` (DCLM: 0.1) or those ``>= threshold``
    (DCLM's released classifier: 0.018112). Exactly one of the two must be given.

    Args:
        scores (`Sequence[float]`):
            One score per document, higher is better.
        top_fraction (`float` or `None`, *optional*, defaults to `None`):
            Share of documents kept, in (0, 1]: the ``round(top_fraction * len(scores))`` highest (at least one;
            ties keep the earlier documents). Returned in index order.
        threshold (`float` or `None`, *optional*, defaults to `None`):
            Keep every document whose score is at least this.
    """
    if (top_fraction is None) == (threshold is None):
        raise InputError("Pass exactly one of top_fraction (e.g. 0.1) or threshold (e.g. 0.018112).")
    scores = np.asarray(scores, dtype=float)
    if threshold is not None:
        return np.flatnonzero(scores >= threshold).tolist()
    if not 0 < top_fraction <= 1:
        raise InputError(f"top_fraction must be in (0, 1], got {top_fraction}.")
    k = max(1, int(round(top_fraction * len(scores))))
    return sorted(np.argsort(-scores, kind="stable")[:k].tolist())


def heldout_auc(scorer, positives: Sequence[str], negatives: Sequence[str]) -> float:
    """ROC AUC of the scorer on held-out positives vs negatives.

    Args:
        scorer (`FastTextQualityScorer`, `HFQualityScorer` or `EmbeddingQualityScorer`):
            Any object with ``score(texts) -> list[float]`` (higher means more likely positive).
        positives (`Sequence[str]`):
            Held-out texts of the positive class.
        negatives (`Sequence[str]`):
            Held-out texts of the negative class.
    """
    from sklearn.metrics import roc_auc_score

    scores = scorer.score(list(positives) + list(negatives))
    return float(roc_auc_score([1] * len(positives) + [0] * len(negatives), scores))
