"""hf_ext's DCLM heuristic chain reproduces DCLM's own code, row by row.

The reference (tests/data/web/c4_en_train_first150.dclm_reference.jsonl.gz) is the output of
mlfoundations/dclm's steps from ``newline_removal_modifier`` through
``word_removal_ratio_filter`` of ``dclm_baseline_refinedweb.yaml`` (language ID and URL rules
left out), written by benchmarks/dclm_reference.py on the 150 bundled C4 documents.
"""

import gzip
import json
import random
from pathlib import Path

import pytest

from hf_ext.curate.modifiers import NewlineCollapse
from hf_ext.curate.pipeline import DCLM_FUNCTIONS, PIPELINES, CurationPipeline
from hf_ext.curate.text import fasttext_words, words

WEB = Path(__file__).parent / "data" / "web"
STEPS = [s for s in PIPELINES["dclm_heuristics"] if s != "language_id"]


def _rows(name):
    with gzip.open(WEB / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_every_row_of_dclm_reference():
    docs, ref = _rows("c4_en_train_first150.jsonl.gz"), _rows("c4_en_train_first150.dclm_reference.jsonl.gz")
    assert len(docs) == len(ref) == 150 and [r["index"] for r in ref] == list(range(150))
    texts, keep, reasons = CurationPipeline(STEPS).process([d["text"] for d in docs])
    for i, row in enumerate(ref):
        assert keep[i] is row["kept"], (i, reasons[i], row["dropped_by"])
        if row["kept"]:
            assert texts[i] == row["text"], i
        else:
            assert reasons[i].split(":")[0] == DCLM_FUNCTIONS[row["dropped_by"]], (i, reasons[i], row["dropped_by"])
        if row["previous_word_count"] is not None:  # DCLM's word_counter_enricher (fastText tokens)
            assert len(fasttext_words(NewlineCollapse()(docs[i]["text"]))) == row["previous_word_count"], i
    # the reference covers kept documents and several dropping steps
    assert 100 < sum(keep) < 150 and len({r["dropped_by"] for r in ref if not r["kept"]}) >= 3


@pytest.mark.parametrize("docs_file", ["c4_en_train_first150", "flores200_devtest_10per_lang"])
def test_every_decision_of_dclm_reference_with_language_id(docs_file):
    """The whole dclm_heuristics chain, language ID included, against DCLM's code running its
    own language-ID steps with the same lid.176.ftz (newlines removed, strictly above 0.65)."""
    docs, ref = _rows(f"{docs_file}.jsonl.gz"), _rows(f"{docs_file}.dclm_reference_lid.jsonl.gz")
    assert len(docs) == len(ref)
    _, keep, reasons = CurationPipeline.from_name("dclm_heuristics").process([d["text"] for d in docs])
    got = [None if k else r.split(":")[0] for k, r in zip(keep, reasons)]
    assert got == [None if r["kept"] else DCLM_FUNCTIONS[r["dropped_by"]] for r in ref]
    if docs_file.startswith("flores"):
        assert got.count("language_id") > 300  # 39 of the 40 languages are not English


def test_fasttext_words_match_fasttext_tokenize():
    fasttext = pytest.importorskip("fasttext")
    texts = [d["text"] for d in _rows("c4_en_train_first150.jsonl.gz")[:40]]
    texts.append("a\u00a0b c\u3000d\x00e\x0bf\x0cg\rh\x1ci\u2028j\u0085k _l ½m ²n (see -- </s> x\n\ny")
    for text in texts:
        assert fasttext_words(text) == [w for w in fasttext.FastText.tokenize(text) if w[0].isalnum()]


def test_words_match_uniseg():
    """UAX #29 words as DCLM's repetition rules take them (uniseg), on 40 languages and on
    random strings of the characters the rules treat specially."""
    wordbreak = pytest.importorskip("uniseg.wordbreak")

    def reference(text):
        return [w for w in wordbreak.words(text) if w[0].isalnum()]

    for row in _rows("flores200_devtest_10per_lang.jsonl.gz"):
        assert words(row["text"]) == reference(row["text"]), row["lang"]
    alphabet = list("aZé1٣_'.:,;\u2019\u00b7 \n\u0301\u200d\u00ad\u05d0\u05d1\"\u30a2\u6771\u00bd\u02c2\u202fx9-") + ["\U0001F600", "\U0001F1E6"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        assert words(text) == reference(text), repr(text)


def test_decisions_frozen_after_dclm_fidelity():
    """The speed work keeps every decision and drop reason (sub-rule included) and every output
    text of the full dclm_heuristics chain (language ID too) as they were when DCLM fidelity
    landed (tests/data/web/c4_en_train_first150.dclm_heuristics_decisions.json)."""
    import hashlib

    frozen = json.loads((WEB / "c4_en_train_first150.dclm_heuristics_decisions.json").read_text())["rows"]
    docs = _rows("c4_en_train_first150.jsonl.gz")
    texts, keep, reasons = CurationPipeline.from_name("dclm_heuristics").process([d["text"] for d in docs])
    assert reasons == [r["drop_reason"] for r in frozen]
    assert [hashlib.sha1(t.encode()).hexdigest() if k else None for t, k in zip(texts, keep)] == [r["text_sha1"] for r in frozen]
    assert any(r and r.startswith("gopher_repetition:") for r in reasons)
