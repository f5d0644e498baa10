"""Judge-labelled quality (Llama 3 §3.1.1, FineWeb-Edu): a judge LM rates a sample of pages
for educational value on FineWeb-Edu's additive 0-5 scale, a small head on frozen sentence
embeddings learns those ratings (FineWeb-Edu: a regression head on an embedding model; Llama
3: DistilRoBERTa on Llama 2's labels), and the head scores the whole corpus cheaply.

The judge runs through the critique backends (`hf_ext.critique.backends`): a local
transformers model or any OpenAI-compatible server (vLLM, TGI, llama.cpp).

>>> parse_edu_score("The page explains photosynthesis clearly.\\nEducational score: 4")
4.0
>>> parse_edu_score("**Educational score:** 2 points")
2.0
>>> parse_edu_score("Educational score: 9") is None  # outside 0..5
True
>>> parse_edu_score("I cannot rate this.") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..critique.backends import Conversation, OpenAIBackend, TransformersBackend
from ..errors import InputError

# FineWeb-Edu's annotation prompt (HuggingFaceFW/fineweb-edu, Penedo et al. 2024, App. "Prompt"),
# as published; {extract} is the page (truncated to `max_chars`).
FINEWEB_EDU_PROMPT = """Below is an extract from a web page. Evaluate whether the page has a high educational value and could be useful in an educational setting for teaching from primary school to grade school levels using the additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the extract provides some basic information relevant to educational topics, even if it includes some irrelevant or non-academic content like advertisements and promotional material.
- Add another point if the extract addresses certain elements pertinent to education but does not align closely with educational standards. It might mix educational content with non-educational material, offering a superficial overview of potentially useful topics, or presenting information in a disorganized manner and incoherent writing style.
- Award a third point if the extract is appropriate for educational use and introduces key concepts relevant to school curricula. It is coherent though it may not be comprehensive or could include some extraneous information. It may resemble an introductory section of a textbook or a basic tutorial that is suitable for learning but has notable limitations like treating concepts that are too complex for grade school students.
- Grant a fourth point if the extract highly relevant and beneficial for educational purposes for a level not higher than grade school, exhibiting a clear and consistent writing style. It could be similar to a chapter from a textbook or a tutorial, offering substantial educational content, including exercises and solutions, with minimal irrelevant information, and the concepts aren't too advanced for grade school students. The content is coherent, focused, and valuable for structured learning.
- Bestow a fifth point if the extract is outstanding in its educational value, perfectly suited for teaching either at primary school or grade school. It follows detailed reasoning, the writing style is easy to follow and offers profound and thorough insights into the subject matter, devoid of any non-educational or complex content.

The extract:
{extract}

After examining the extract:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Educational score:  <total points>\""""

EDU_SCORE_MIN, EDU_SCORE_MAX = 0, 5
# FineWeb-Edu keeps pages whose predicted score is >= 3.
FINEWEB_EDU_THRESHOLD = 3.0
_EDU = re.compile(r"educational\s+score\s*\**\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_ANY = re.compile(r"score\s*\**\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_edu_score(text: str | None, low: float = EDU_SCORE_MIN, high: float = EDU_SCORE_MAX) -> float | None:
    """The judge's score: the LAST "Educational score: N" (else the last "Score: N"); None
    when there is none or it lies outside [low, high]."""
    if not isinstance(text, str):
        return None
    matches = _EDU.findall(text) or _ANY.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    return value if low <= value <= high else None


def edu_conversation(text: str, prompt: str = FINEWEB_EDU_PROMPT, max_chars: int = 2000) -> Conversation:
    """The judge prompt for one page (cut to `max_chars` characters), as chat messages."""
    return [{"role": "user", "content": prompt.format(extract=(text or "")[:max_chars])}]


@dataclass
class EduJudge:
    """``ds.map(judge, batched=True)``: adds ``edu_score`` (float; -1 when the answer has no
    valid score) and ``edu_raw`` (the judge's text).

    Args:
        backend (`TransformersBackend` or `OpenAIBackend`, *optional*, defaults to `TransformersBackend()`):
            A `TransformersBackend` or `OpenAIBackend` (only its settings are pickled).
        prompt (`str`, *optional*, defaults to `FINEWEB_EDU_PROMPT`):
            The rating prompt with an ``{extract}`` slot (default: FineWeb-Edu's).
        max_chars (`int`, *optional*, defaults to `2000`):
            Characters of each page shown to the judge.
    """

    backend: TransformersBackend | OpenAIBackend = field(default_factory=TransformersBackend)
    prompt: str = FINEWEB_EDU_PROMPT
    max_chars: int = 2000
    text_column: str = "text"
    score_column: str = "edu_score"
    raw_column: str = "edu_raw"

    def __post_init__(self) -> None:
        if "{extract}" not in self.prompt:
            raise InputError("EduJudge.prompt must contain an {extract} slot for the page text.")
        if self.max_chars < 1:
            raise InputError(f"EduJudge.max_chars must be positive, got {self.max_chars}.")

    def label(self, texts: Sequence[str]) -> tuple[list[float], list[str]]:
        raw = self.backend.generate([edu_conversation(t, self.prompt, self.max_chars) for t in texts])
        scores = [parse_edu_score(r) for r in raw]
        return [-1.0 if s is None else s for s in scores], raw

    def __call__(self, batch: dict[str, list]) -> dict[str, list[Any]]:
        if self.text_column not in batch:
            raise InputError(f"The dataset has no column {self.text_column!r}; columns: {sorted(batch)}. Set text_column.")
        scores, raw = self.label(batch[self.text_column])
        return {self.score_column: scores, self.raw_column: raw}


def train_on_judge_labels(texts: Sequence[str], scores: Sequence[float], embedder=None, C: float = 1.0,
                          progress: bool = False, **scorer_kwargs):
    """Fit a ridge head on frozen embeddings to the judge's scores (unparsed ones, -1, are
    left out); the scorer predicts the 0-5 score (``link="identity"``)."""
    import numpy as np

    from .embed_quality import EmbeddingQualityScorer, SentenceEmbedder, fit_embedding_head

    pairs = [(t, s) for t, s in zip(texts, scores) if s is not None and s >= 0]
    if len(pairs) < 2 or len({s for _, s in pairs}) < 2:
        raise InputError(f"The judge gave {len(pairs)} parsable scores with {len({s for _, s in pairs})} distinct values; "
                         "a head needs at least 2 of each. Check the judge's answers (edu_raw) and its prompt.")
    embedder = embedder or SentenceEmbedder()
    emb = embedder.encode([t for t, _ in pairs], progress=progress)
    weights, bias = fit_embedding_head(emb, np.array([s for _, s in pairs]), "ridge", C=C)
    return EmbeddingQualityScorer(weights, bias, "identity", embedder, **scorer_kwargs)
