"""fastText quality classifier (train, score sign, held-out AUC, bad model files), the HF
sequence-classification scorer, selection by score, and filter audits (CI coverage on
synthetic data, log-odds contrasts, FLORES language-ID retention, plot and card)."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from hf_ext.curate.audit import card_section, plot_retention, retention_by_group, url_site_type, url_tld, weighted_log_odds
from hf_ext.curate.base import Doc
from hf_ext.curate.langid import LanguageIDFilter
from hf_ext.curate.quality import FastTextQualityScorer, HFQualityScorer, heldout_auc, select_by_score, train_fasttext_classifier
from hf_ext.errors import InputError

WEB = Path(__file__).parent / "data" / "web"


def _read(name):
    return [json.loads(line) for line in gzip.open(WEB / name, "rt")]


@pytest.fixture(scope="module")
def wiki_and_c4():
    # 100-word chunks of Wikipedia articles as the "high quality" class, C4 documents as the web class
    words = [w for art in _read("wikipedia_demo_first6.jsonl.gz") for w in art["text"].split()]
    paragraphs = [" ".join(words[i : i + 100]) for i in range(0, len(words) - 100, 100)][:150]
    c4 = [r["text"] for r in _read("c4_en_train_first150.jsonl.gz")]
    return paragraphs, c4


def test_fasttext_train_score_sign_and_auc(tmp_path, wiki_and_c4):
    wiki, c4 = wiki_and_c4
    scorer = train_fasttext_classifier(wiki[::2], c4[::2], tmp_path / "q.bin", epoch=20)
    assert (tmp_path / "q.bin").is_file()
    held_wiki, held_c4 = wiki[1::2], c4[1::2]
    scores_w, scores_c = scorer.score(held_wiki), scorer.score(held_c4)
    assert all(0 <= s <= 1 for s in scores_w + scores_c)
    assert np.mean(scores_w) > np.mean(scores_c)  # sign: p(hq) is higher for the positive class
    assert heldout_auc(scorer, held_wiki, held_c4) > 0.9
    # the score is p(hq): scoring with the other label gives 1 - p
    flipped = FastTextQualityScorer(str(tmp_path / "q.bin"), positive_label="cc").score(held_wiki[:5])
    assert np.allclose(np.array(flipped) + np.array(scores_w[:5]), 1.0, atol=1e-5)
    out = scorer({"text": held_wiki[:3]})
    assert list(out) == ["quality_score"] and len(out["quality_score"]) == 3
    with pytest.raises(InputError, match="not one of the model's labels"):
        FastTextQualityScorer(str(tmp_path / "q.bin"), positive_label="good").score(["x"])


def test_not_a_fasttext_model(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not fastText")
    with pytest.raises(InputError, match="not a fastText model"):
        FastTextQualityScorer(str(bad)).score(["hello"])
    with pytest.raises(InputError, match="does not exist|is not a file"):
        LanguageIDFilter(model_path=str(tmp_path / "missing.bin"))("hello world")


def test_select_by_score():
    scores = [0.1, 0.9, 0.5, 0.7, 0.3]
    assert select_by_score(scores, top_fraction=0.4) == [1, 3]
    assert select_by_score(scores, threshold=0.5) == [1, 2, 3]
    with pytest.raises(InputError, match="exactly one"):
        select_by_score(scores)


def test_hf_sequence_classification_scorer(tmp_path):
    import torch

    from hf_ext.testing import tiny_sequence_classifier, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_sequence_classifier(num_labels=2, tokenizer=tok)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    scorer = HFQualityScorer(str(tmp_path / "clf"), positive_index=1, batch_size=2)
    texts = ["a short text", "another somewhat longer piece of text here", "third"]
    scores = scorer.score(texts)
    with torch.no_grad():
        ref = [model(**tok(t, return_tensors="pt")).logits.softmax(-1)[0, 1].item() for t in texts]
    assert np.allclose(scores, ref, atol=1e-5)


def test_bootstrap_cis_cover_the_true_rate():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.2, 0.9, 200)
    groups, keep = [], []
    for g, p in enumerate(true):
        keep += list(rng.random(100) < p)
        groups += [f"g{g}"] * 100
    report = retention_by_group(keep, groups, n_boot=1000, seed=1)
    by = {r["group"]: r for r in report["groups"]}
    covered = np.mean([by[f"g{g}"]["ci_low"] <= p <= by[f"g{g}"]["ci_high"] for g, p in enumerate(true)])
    assert 0.9 <= covered <= 0.99
    assert report["overall"] == pytest.approx(np.mean(keep))


def test_over_and_under_filtered_groups_and_log_odds(tmp_path):
    keep = [True] * 90 + [False] * 10 + [True] * 20 + [False] * 80
    groups = ["news"] * 100 + ["shop"] * 100
    report = retention_by_group(keep, groups, n_boot=500)
    assert report["most_over_filtered"] == ["shop"] and report["most_under_filtered"] == ["news"]
    kept_texts = ["the apple pie recipe with apple and cream"] * 20
    dropped_texts = ["buy zebra stripes zebra discount now"] * 20
    contrast = weighted_log_odds(kept_texts, dropped_texts, top_k=3)
    assert contrast["kept"][0][0] == "apple" and contrast["dropped"][0][0] == "zebra"
    assert contrast["kept"][0][1] > 0 > contrast["dropped"][0][1]
    png = plot_retention(report, tmp_path / "r.png")
    assert Path(png).stat().st_size > 1000
    section = card_section("demo", "site", report, contrast, "r.png")
    assert "| shop ▼ |" in section["body"] and "apple" in section["body"]


def test_url_groups():
    assert url_tld("https://www.bbc.co.uk/news/x") == "uk" and url_tld("not a url") == ""
    assert url_site_type("https://myblog.wordpress.com/post") == "blog"
    assert url_site_type("https://cs.stanford.edu/people") == "edu"
    assert url_site_type("https://example.com/shop/item-1") == "shop"
    assert url_site_type("https://example.com/about") == "other"


def test_flores_language_id_retention():
    rows = _read("flores200_devtest_10per_lang.jsonl.gz")
    keep = LanguageIDFilter("en", 0.65).check_batch([Doc(r["text"]) for r in rows])
    report = retention_by_group([k for k, _ in keep], [r["lang"] for r in rows], n_boot=200)
    by = {r["group"]: r["retention"] for r in report["groups"]}
    assert by["eng_Latn"] >= 0.9
    assert max(v for g, v in by.items() if g != "eng_Latn") <= 0.1
    assert report["most_under_filtered"] == ["eng_Latn"]
