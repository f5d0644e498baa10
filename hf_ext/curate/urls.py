"""RefinedWeb URL filtering, as in DCLM-Baseline: domain blocklist (UT1), banned words in the
URL (strict substrings, hard whole words, soft words with >= 2 hits).

datatrove's `URLFilter` implements exactly these rules with the same lists, so this wraps it
(the semantics are datatrove's; tests check parity). Its tldextract is pointed at the bundled
public-suffix snapshot so it never goes online.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import InputError
from .base import Doc, Filter


class URLBlocklistFilter(Filter):
    """Drop documents whose URL is blocklisted (reason ``url_blocklist:<rule>``).

    Args:
        soft_word_threshold (`int`, *optional*, defaults to `2`):
            A URL holding this many soft-banned words or more is dropped (datatrove's URLFilter).
        extra_domains (`list[str]` or `None`, *optional*, defaults to `None`):
            Domains blocked on top of the lists.
        banned_words (`list[str]` or `None`, *optional*, defaults to `None`):
            Words that block a URL on top of the lists.
        use_integrated_lists (`bool`, *optional*, defaults to `True`):
            Use datatrove's bundled RefinedWeb blocklists.
    """

    name = "url_blocklist"
    needs_url = True

    def __init__(self, soft_word_threshold: int = 2, extra_domains: list[str] | None = None, banned_words: list[str] | None = None,
                 use_integrated_lists: bool = True):
        self.soft_word_threshold = soft_word_threshold
        self.extra_domains = list(extra_domains or [])
        self.banned_words = list(banned_words or [])
        self.use_integrated_lists = use_integrated_lists
        self._dt = None

    def __getstate__(self):
        return {**self.__dict__, "_dt": None}

    @property
    def datatrove_filter(self):
        if self._dt is None:
            try:
                from datatrove.pipeline.filters import URLFilter
                from tldextract import TLDExtract
            except ImportError:
                raise InputError("URL filtering wraps datatrove's URLFilter: pip install 'hf-ext[curate]'.") from None
            self._dt = URLFilter(
                soft_word_threshold=self.soft_word_threshold, extra_domains=self.extra_domains or None,
                banned_words=self.banned_words or None, use_integrated_lists=self.use_integrated_lists,
            )
            self._dt.tldextractor = TLDExtract(suffix_list_urls=())  # bundled snapshot, offline
        return self._dt

    def check(self, doc: Doc):
        from datatrove.data import Document

        if not doc.url:
            raise InputError("url_blocklist needs a URL per document: set url_column to a column of URLs (or drop this step).")
        keep, reason = _as_pair(self.datatrove_filter.filter(Document(text="", id="", metadata={"url": doc.url})))
        return (True, None) if keep else (False, f"{self.name}:{reason}")


def _as_pair(result) -> tuple[bool, str | None]:
    return result if isinstance(result, tuple) else (bool(result), None)


def url_domain(url: str) -> str:
    """Host of a URL without a leading ``www.`` ("" when unparsable).

    Args:
        url (`str`):
            The URL; one without a scheme (``example.com/page``) is read as starting with its host.
    """
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")
