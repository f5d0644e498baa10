"""Critique and judge generation: backends (local transformers model or OpenAI-compatible
server), prompts, parsing and filtering."""

from .backends import BackendError, OpenAIBackend, TransformersBackend, make_backend

__all__ = ["BackendError", "OpenAIBackend", "TransformersBackend", "make_backend"]
