"""Judge-labelled quality (Llama 3 §3.1.1, FineWeb-Edu): a judge LM rates a sample of pages
for educational value on FineWeb-Edu's additive 0-5 scale, a small head on frozen sentence
embeddings learns those ratings (FineWeb-Edu: a regression head on an embedding model; Llama
3: DistilRoBERTa on Llama 2's labels), and the head scores the whole corpus cheaply.

The judge runs through the critique backends (`hf_ext.critique.backends`): a local
transformers model or any OpenAI-compatible server (vLLM, TGI, llama.cpp). Two ways to read
its rating (`EduJudge.method`):

- ``"logprobs"`` (the default with a local transformers judge): the prompt is followed by
  the assistant's answer prefix ``"Educational score: "`` and the score is the expected value
  of the next-token distribution over the digits "0".."5" (renormalised over them). Every page
  gets a score, and small judges that never write the requested format still rate.
- ``"generate"`` (the default with a server): the judge writes its justification and the
  last "Educational score: N" in the answer is parsed (`parse_edu_score`).

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
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
    when there is none or it lies outside [low, high].

    Args:
        text (`str` or `None`):
            The judge's answer; anything but a string gives None.
        low (`float`, *optional*, defaults to `EDU_SCORE_MIN`):
            Smallest valid score (FineWeb-Edu's scale starts at 0).
        high (`float`, *optional*, defaults to `EDU_SCORE_MAX`):
            Largest valid score (5 on FineWeb-Edu's scale).
    """
    if not isinstance(text, str):
        return None
    matches = _EDU.findall(text) or _ANY.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    return value if low <= value <= high else None


def expected_score(logprobs: Sequence[float], values: Sequence[float] | None = None) -> tuple[float, float]:
    """(expected score, probability mass) of a next-token distribution restricted to the score
    tokens: ``sum(v * p_v) / sum(p_v)`` over the scores ``values`` (default 0, 1, ...) with
    ``p_v = exp(logprobs[v])``, and ``sum(p_v)`` (how much of the judge's belief the scores hold).

    Args:
        logprobs (`Sequence[float]`):
            Natural-log probabilities of the score tokens, one per score.
        values (`Sequence[float]` or `None`, *optional*, defaults to `None`):
            The score each entry of `logprobs` stands for (None: 0, 1, ..., ``len(logprobs) - 1``).

    >>> round(expected_score([math.log(0.1), math.log(0.3), math.log(0.4)])[0], 4)  # (0.3 + 0.8) / 0.8
    1.375
    """
    values = range(len(logprobs)) if values is None else values
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]  # stable: the largest is 1
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / total, total * math.exp(top)


def edu_conversation(text: str, prompt: str = FINEWEB_EDU_PROMPT, max_chars: int = 2000) -> Conversation:
    """The judge prompt for one page (cut to `max_chars` characters), as chat messages.

    Args:
        text (`str`):
            The page text (None is treated as empty).
        prompt (`str`, *optional*, defaults to `FINEWEB_EDU_PROMPT`):
            The rating prompt; its ``{extract}`` slot receives the page.
        max_chars (`int`, *optional*, defaults to `2000`):
            Characters of the page kept (the start of it).
    """
    return [{"role": "user", "content": prompt.format(extract=(text or "")[:max_chars])}]


@dataclass
class EduJudge:
    """``ds.map(judge, batched=True)``: adds ``edu_score`` (float; -1 when a generated answer
    has no valid score) and ``edu_raw`` (the judge's text, or with ``method="logprobs"`` the
    score digits' probabilities).

    Args:
        backend (`TransformersBackend` or `OpenAIBackend`, *optional*, defaults to `TransformersBackend()`):
            A `TransformersBackend` or `OpenAIBackend` (only its settings are pickled).
        prompt (`str`, *optional*, defaults to `FINEWEB_EDU_PROMPT`):
            The rating prompt with an ``{extract}`` slot (default: FineWeb-Edu's).
        max_chars (`int`, *optional*, defaults to `2000`):
            Characters of each page shown to the judge.
        text_column (`str`, *optional*, defaults to `"text"`):
            Column of the batch holding the pages.
        score_column (`str`, *optional*, defaults to `"edu_score"`):
            Column the scores are written to.
        raw_column (`str`, *optional*, defaults to `"edu_raw"`):
            Column the judge's raw output (answer text or digit probabilities) is written to.
        method (`str`, *optional*, defaults to `"auto"`):
            ``"logprobs"``: the expected score of the next-token distribution over "0".."5"
            after `score_prefix` (needs a backend with ``next_token_logprobs``: the local
            transformers one); ``"generate"``: parse the generated answer; ``"auto"``:
            logprobs when the backend offers them, else generate.
        score_prefix (`str`, *optional*, defaults to `"Educational score: "`):
            The start of the judge's answer before the score digit (``method="logprobs"``).
    """

    backend: TransformersBackend | OpenAIBackend = field(default_factory=TransformersBackend)
    prompt: str = FINEWEB_EDU_PROMPT
    max_chars: int = 2000
    text_column: str = "text"
    score_column: str = "edu_score"
    raw_column: str = "edu_raw"
    method: Literal["auto", "logprobs", "generate"] = "auto"
    score_prefix: str = "Educational score: "

    def __post_init__(self) -> None:
        if "{extract}" not in self.prompt:
            raise InputError("EduJudge.prompt must contain an {extract} slot for the page text.")
        if self.max_chars < 1:
            raise InputError(f"EduJudge.max_chars must be positive, got {self.max_chars}.")
        if self.method not in ("auto", "logprobs", "generate"):
            raise InputError(f"EduJudge.method must be 'auto', 'logprobs' or 'generate', got {self.method!r}.")
        if self.method == "logprobs" and not hasattr(self.backend, "next_token_logprobs"):
            raise InputError(f"EduJudge.method='logprobs' needs a backend with next-token log-probabilities (the local "
                             f"transformers one); {type(self.backend).__name__} only generates: use method='generate'.")

    @property
    def uses_logprobs(self) -> bool:
        """Whether scores come from the next-token distribution (else from parsed answers)."""
        return self.method == "logprobs" or (self.method == "auto" and hasattr(self.backend, "next_token_logprobs"))

    def label(self, texts: Sequence[str]) -> tuple[list[float], list[str]]:
        conversations = [edu_conversation(t, self.prompt, self.max_chars) for t in texts]
        if self.uses_logprobs:
            digits = [str(v) for v in range(EDU_SCORE_MIN, EDU_SCORE_MAX + 1)]
            scores, raw = [], []
            for lps in self.backend.next_token_logprobs(conversations, digits, self.score_prefix):
                score, mass = expected_score(lps, range(EDU_SCORE_MIN, EDU_SCORE_MAX + 1))
                scores.append(score)
                raw.append(f"expected {score:.4f}; p(score digit) {mass:.4f}; "
                           + " ".join(f"p{d}={math.exp(lp):.4f}" for d, lp in zip(digits, lps)))
            return scores, raw
        raw = self.backend.generate(conversations)
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
    left out); the scorer predicts the 0-5 score (``link="identity"``).

    Args:
        texts (`Sequence[str]`):
            The judged pages.
        scores (`Sequence[float]`):
            The judge's score per page (`EduJudge`'s ``edu_score``); None or negative ones are left out. At least two
            usable scores with two distinct values are needed.
        embedder (`SentenceEmbedder` or `None`, *optional*, defaults to `None`):
            The frozen encoder (None: `SentenceEmbedder()`, the packaged ``all-MiniLM-L6-v2``).
        C (`float`, *optional*, defaults to `1.0`):
            Inverse regularisation strength of the ridge head (``Ridge(alpha=1/C)``).
        progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar while embedding.
        **scorer_kwargs:
            Further `EmbeddingQualityScorer` fields (``text_column``, ``score_column``, ``metadata``).
    """
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
