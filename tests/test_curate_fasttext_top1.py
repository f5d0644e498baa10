"""`FastTextTop1` against fastText's own ``predict``: the same label and the same float32
probability, and the same row ids as ``get_subwords``, for the packaged lid.176.ftz on the bundled
documents and for every kind of hierarchical-softmax model fastText writes (dense, product-quantised,
quantised with pruned n-grams and norms, character unigrams, no subwords). Models it does not
reproduce (softmax, word n-grams) are refused, and the language-ID filter then uses fastText."""

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

fasttext = pytest.importorskip("fasttext")

from hf_ext.curate import fasttext_top1  # noqa: E402
from hf_ext.curate.fasttext_top1 import FastTextTop1  # noqa: E402
from hf_ext.curate.langid import LanguageIDFilter, packaged_lid_model  # noqa: E402

DATA = Path(__file__).parent / "data"

# fastText splits on " \r\t\v\f\0" only; str.split() also on no-break and other Unicode spaces
EDGE_TEXTS = [
    "", "   ", "__label__en hello world", "before </s> after", "x\u00a0y\u00a0z", "nul\x00byte", "line\u2028sep",
    "tab\there\rand\fform\vfeed", "\U0001f642 emoji \U0001f642", "e\u0301 combining accents", "a" * 3000,
    "日本語のテキストです", "Hello мир and 世界", "\x1c\x1d\x1e\x1f separators", "12345 67890", "!!! ??? ...",
]


def _rows(path):
    return [json.loads(line) for line in gzip.open(path, "rt")]


def _texts():
    texts = [r["text"] for r in _rows(DATA / "web" / "c4_en_train_first150.jsonl.gz")]
    texts += [r["text"] for r in _rows(DATA / "web" / "flores200_devtest_10per_lang.jsonl.gz")]
    texts += [r["text"] for r in _rows(DATA / "web" / "wikipedia_demo_first6.jsonl.gz")]
    return [t.replace("\n", "") for t in texts] + EDGE_TEXTS


def _fasttext_top1(model, texts):
    labels, probs = model.predict(texts, k=1)
    return [(lab[0].removeprefix("__label__"), float(p[0])) if len(lab) else ("", 0.0) for lab, p in zip(labels, probs)]


def _assert_same_as_fasttext(fast, model, texts):
    assert fast.predict(texts) == _fasttext_top1(model, texts)
    tokens = sorted({t for text in texts for t in fasttext_top1._FASTTEXT_SPLIT(text) if t and "__label__" not in t})
    ids, counts = fast._subword_ids(tokens)
    start = 0
    for token, n in zip(tokens, counts):
        assert list(ids[start : start + n]) == list(model.get_subwords(token)[1]), token
        start += n


@pytest.fixture(scope="module")
def lid():
    path = packaged_lid_model()
    model = fasttext.load_model(path)
    return model, FastTextTop1.load(model, path)


def test_packaged_lid_top1_is_fasttexts_prediction(lid):
    model, fast = lid
    assert fast is not None
    texts = _texts()
    _assert_same_as_fasttext(fast, model, texts)
    assert fast.predict(texts) == _fasttext_top1(model, texts)  # again, from the warm cache
    assert fast.fallbacks == 2 * 2  # the label-token and "</s>" texts, each time


def test_full_cache_keeps_predictions(lid, monkeypatch):
    model, _ = lid
    fast = FastTextTop1.load(model, packaged_lid_model())
    monkeypatch.setattr(fasttext_top1, "MAX_CACHED_TOKENS", 200)
    texts = _texts()
    mine = [p for s in range(0, len(texts), 8) for p in fast.predict(texts[s : s + 8])]
    assert mine == _fasttext_top1(model, texts)
    assert len(fast.cache) == 200  # full: it stopped growing, and the tokens past it still predict exactly
    assert fast.predict(texts) == mine


def test_language_id_filter_uses_the_fast_path_and_pickles_small():
    """The filter predicts through FastTextTop1, pickles without the model or the cache, and
    hashes the same for datasets' map fingerprint before and after it has predicted."""
    from datasets.fingerprint import Hasher

    filt = LanguageIDFilter()
    before = Hasher.hash(filt)
    texts = _texts()[:200]
    assert filt.top1 is not None
    assert filt.predict(texts) == _fasttext_top1(filt.model, texts)
    state = pickle.loads(pickle.dumps(filt)).__dict__
    assert state["_model"] is None and state["_top1"] is None
    assert Hasher.hash(filt) == before


@pytest.fixture(scope="module")
def flores_train(tmp_path_factory):
    rows = _rows(DATA / "web" / "flores200_devtest_10per_lang.jsonl.gz")
    path = tmp_path_factory.mktemp("ft") / "train.txt"
    path.write_text("".join(f"__label__{r['lang']} {r['text'].replace(chr(10), ' ')}\n" for r in rows))
    return path


# kind -> (train_supervised arguments, quantize arguments or None); lid.176.ftz is "quantised_pruned_qnorm"
KINDS = {
    "dense": (dict(epoch=5), None),
    "dense_trained_longer": (dict(epoch=25, lr=0.5), None),
    "quantised": (dict(epoch=25, lr=0.5), dict(qnorm=False)),
    "quantised_pruned_qnorm": (dict(epoch=25, lr=0.5), dict(qnorm=True, cutoff=500)),
    "char_unigrams": (dict(epoch=25, lr=0.2, minn=1, maxn=3), None),
    "no_subwords": (dict(epoch=25, lr=0.1, minn=0, maxn=0), None),
}


def _train(flores_train, tmp_path, train_args, quantize_args=None):
    """Train (and quantise) in a fresh process: this fastText build's training turns NaN after a
    few trainings in one process, so each model gets its own."""
    args = dict(loss="hs", dim=16, minn=2, maxn=4, bucket=20000, verbose=0, thread=1, seed=0) | train_args
    path = tmp_path / ("model.ftz" if quantize_args is not None else "model.bin")
    code = (
        "import fasttext, sys\n"
        f"m = fasttext.train_supervised({str(flores_train)!r}, **{args!r})\n"
        + (f"m.quantize(input={str(flores_train)!r}, dsub=2, retrain=False, **{quantize_args!r})\n" if quantize_args else "")
        + f"m.save_model({str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    return fasttext.load_model(str(path)), str(path)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_hierarchical_softmax_model_kind(kind, flores_train, tmp_path):
    model, path = _train(flores_train, tmp_path, *KINDS[kind])
    fast = FastTextTop1.load(model, path)
    assert fast is not None
    texts = [r["text"].replace("\n", "") for r in _rows(DATA / "web" / "flores200_devtest_10per_lang.jsonl.gz")] + EDGE_TEXTS
    _assert_same_as_fasttext(fast, model, texts)


@pytest.mark.parametrize("refused", [dict(loss="softmax"), dict(wordNgrams=2)])
def test_models_it_does_not_reproduce_go_to_fasttext(refused, flores_train, tmp_path):
    model, path = _train(flores_train, tmp_path, dict(epoch=25, lr=0.2) | refused)
    assert FastTextTop1.load(model, path) is None
    filt = LanguageIDFilter(language="fra_Latn", model_path=path)
    texts = [r["text"].replace("\n", " ") for r in _rows(DATA / "web" / "flores200_devtest_10per_lang.jsonl.gz")][:50]
    assert filt.top1 is None
    assert filt.predict(texts) == _fasttext_top1(model, texts)


def test_texts_fasttext_refuses_raise_as_fasttext_does(lid):
    """A newline or a lone surrogate goes to fastText, which raises as it always did."""
    model, fast = lid
    for text, error in [("two\nlines", ValueError), ("bad \ud800 surrogate", TypeError)]:
        with pytest.raises(error):
            model.predict(text, k=1)
        with pytest.raises(error):
            fast.predict(["fine text", text])
