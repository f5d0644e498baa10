"""Critique and judge generation: backends (local transformers model or OpenAI-compatible
server), prompts, critique generation with resume, score parsing and filtering (Critic-RM,
arXiv 2411.16646)."""

from .backends import BackendError, OpenAIBackend, TransformersBackend, make_backend
from .filters import consistency_filter, rank_critiques, summarize_critiques, to_training_pairs
from .generate import generate_critiques
from .prompts import critique_messages
from .scores import parse_ranking, parse_score

__all__ = [
    "BackendError", "OpenAIBackend", "TransformersBackend", "make_backend",
    "generate_critiques", "consistency_filter", "summarize_critiques", "rank_critiques", "to_training_pairs",
    "critique_messages", "parse_score", "parse_ranking",
]
