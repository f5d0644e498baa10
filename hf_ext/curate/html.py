"""HTML given where text is expected: extract the main text with trafilatura when asked,
otherwise flag the document (drop reason ``html``)."""

from __future__ import annotations

import re

from ..errors import InputError
from .base import Doc, Filter, Modifier

_HTML_RE = re.compile(r"<\s*(?:!doctype\s+html|html|head|body|div|p|span|script|table|a\s+href)\b", re.IGNORECASE)


def looks_like_html(text: str) -> bool:
    """True when the text has at least three HTML tags of common elements.

    Args:
        text (`str`):
            The document text; only its first 100,000 characters are searched.
    """
    return len(_HTML_RE.findall(text[:100_000])) >= 3


class HTMLFlagFilter(Filter):
    """Drop documents that are HTML markup rather than text."""

    name = "html"

    def check(self, doc: Doc):
        return (False, self.name) if looks_like_html(doc.text) else (True, None)


class HTMLExtractor(Modifier):
    """Replace HTML documents with their main text (trafilatura); leave text untouched."""

    name = "html_extract"

    def modify(self, doc: Doc) -> str:
        if not looks_like_html(doc.text):
            return doc.text
        try:
            import trafilatura
        except ImportError:
            raise InputError("HTML extraction uses trafilatura: pip install 'hf-ext[curate]'.") from None
        return trafilatura.extract(doc.text, include_comments=False, include_tables=False) or ""
