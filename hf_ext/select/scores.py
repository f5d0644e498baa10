"""Scorers: picklable callables for ``ds.map(fn, batched=True)`` that add score columns.

They hold settings, not weights: a tokenizer or model loads lazily inside the worker, and
pickling drops it, so ``datasets`` fingerprints them cheaply and ``num_proc`` works.

>>> from datasets import Dataset
>>> from hf_ext.select import ResponseLengthScorer
>>> ds = Dataset.from_dict({"output": ["a b c", "a"]})
>>> scorer = ResponseLengthScorer(tokenizer=None)  # whitespace words when no tokenizer is given
>>> list(ds.map(scorer, batched=True)["response_tokens"])
[3, 1]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .columns import require_columns, require_strings


@dataclass
class ResponseLengthScorer:
    """Response length in tokens (Zhao et al. 2024, "Long Is More for Alignment").

    Adds ``response_tokens`` (int). Special tokens are not counted and nothing is truncated.

    Args:
        tokenizer (`str` or `None`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Hub id or local path of the tokenizer to count with (resolved by `hf_ext.models`, so packaged copies
            work offline). ``None`` counts whitespace words.
        response_column (`str`, *optional*, defaults to `"output"`):
            Column holding the response text.
        output_column (`str`, *optional*, defaults to `"response_tokens"`):
            Name of the added column.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Revision of the tokenizer on the Hub.
    """

    tokenizer: str | None = "sentence-transformers/all-MiniLM-L6-v2"
    response_column: str = "output"
    output_column: str = "response_tokens"
    revision: str | None = None

    def __post_init__(self) -> None:
        self._tok = None

    def __getstate__(self) -> dict[str, Any]:
        return asdict(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def _tokenizer(self):
        if self._tok is None and self.tokenizer is not None:
            from ..models import load_tokenizer

            self._tok = load_tokenizer(self.tokenizer, revision=self.revision)
            self._tok.model_max_length = int(1e30)  # we count, we never feed: silence length warnings
        return self._tok

    def __call__(self, batch: dict[str, list]) -> dict[str, list[int]]:
        require_columns(batch.keys(), [self.response_column], what=type(self).__name__)
        texts = batch[self.response_column]
        require_strings(texts, self.response_column)
        tok = self._tokenizer()
        if tok is None:
            counts = [len(t.split()) for t in texts]
        else:
            ids = tok(texts, add_special_tokens=False)["input_ids"]
            counts = [len(x) for x in ids]
        return {self.output_column: counts}
