"""Errors that reach users. Each message says what went wrong, why, and how to fix it;
the CLI prints them without a traceback."""

from __future__ import annotations

import re
from typing import Any


class HfExtError(Exception):
    """Base class of the errors hf_ext raises on purpose."""


class InputError(HfExtError, ValueError):
    """Bad user input: a missing column, an empty dataset, a budget larger than the pool..."""


class RecipeError(InputError):
    """A malformed recipe: unknown key, wrong type, duplicate key, missing or unreadable file."""


# Secrets that must never reach a card, metrics.json, a log line or an error message.
_SECRETS = (
    # URL userinfo: scheme://user:password@host -> scheme://***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"<>]+@"), r"\1***@"),
    # Query secrets: ?key=..., &api_key=..., &token=..., &sig=...
    (re.compile(r"(?i)([?&;](?:api[_-]?key|key|access[_-]?token|token|secret|password|passwd|pwd|sig|signature|auth)=)"
                r"[^&#;\s'\"<>]+"), r"\1***"),
    # Authorization headers: "Bearer <token>", "Basic <token>"
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1\2***"),
    # Key-like strings: OpenAI/Anthropic-style sk-..., Hugging Face hf_..., GitHub ghp_...
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"), "***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"), "***"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"), "***"),
)


def redact(text: Any) -> str:
    """``str(text)`` with credentials replaced by ``***``: URL userinfo, ``?key=``-style query
    secrets, ``Bearer`` tokens and key-like strings (``sk-…``, ``hf_…``).

    Args:
        text (`Any`):
            The message, or any object (it is converted with ``str``).

    Returns:
        `str`: the text with each credential replaced by ``***``.

    >>> redact("http://bob:pw@host/v1?key=abc&model=x said Bearer sk-123456789")
    'http://***@host/v1?key=***&model=x said Bearer ***'
    """
    text = str(text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def redact_values(value: Any) -> Any:
    """`redact` applied to every string inside nested dicts, lists and tuples (settings, metrics).

    Args:
        value (`Any`):
            A string, or a dict, list or tuple (named tuples keep their type) holding strings at any depth; dict
            keys and non-string leaves are kept as they are.

    Returns:
        `Any`: a redacted copy of `value` (strings, dicts, lists, tuples); other values are returned unchanged.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_values(v) for v in value]
    if isinstance(value, tuple):
        items = [redact_values(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def install_log_redaction(prefixes: tuple[str, ...] = ("hf_ext", "trainers")) -> None:
    """Redact credentials from every log record of the loggers under `prefixes` (once per process;
    other libraries' records are left as they are).

    Args:
        prefixes (`tuple[str, ...]`, *optional*, defaults to `("hf_ext", "trainers")`):
            Logger-name prefixes whose records are redacted (a record's name is matched with
            ``str.startswith``). A second call does nothing, whatever its prefixes.
    """
    import logging

    previous = logging.getLogRecordFactory()
    if getattr(previous, "_hf_ext_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith(prefixes):
            try:
                record.msg, record.args = redact(record.getMessage()), ()
            except Exception:  # a malformed record: leave it to logging's own error handling
                pass
        return record

    factory._hf_ext_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
