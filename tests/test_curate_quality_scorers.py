"""Quality scorers that generalise (issue 16): page-like training data, the embedding head,
the judge-labelled recipe and the quality jobs, on bundled real data."""

from __future__ import annotations

import gzip
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_ext.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _texts(path: Path, n: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][:n]


# -- page-like data ---------------------------------------------------------------------------

def test_page_chunks_copy_the_reference_lengths_and_never_edit_text():
    from hf_ext.curate.quality_data import length_matched_pages, word_count

    wiki = _texts(DATA / "web" / "wikipedia_demo_first6.jsonl.gz")
    c4 = _texts(DATA / "web" / "c4_en_train_first150.jsonl.gz")
    pages = length_matched_pages(wiki, c4, seed=0)
    assert len(pages) > 80
    assert all(any(p in article for article in wiki) for p in pages)  # contiguous, unedited spans
    assert all(len(p.split()) >= 50 for p in pages)
    # the length distributions match closely: word count alone can barely tell them apart
    from hf_ext.curate.quality_data import auc

    length_auc = auc([1] * len(pages) + [0] * len(c4), word_count(pages + c4))
    assert 0.35 < length_auc < 0.65, length_auc
    # whole articles are ~40x longer than C4 pages: there word count is a perfect classifier
    assert auc([1] * len(wiki) + [0] * len(c4), word_count(wiki + c4)) > 0.99
    assert length_matched_pages(wiki, c4, seed=0) == pages  # seeded
    assert len(length_matched_pages(wiki, c4, n=20, seed=0)) == 20


def test_gutenberg_boilerplate_is_stripped():
    from hf_ext.curate.quality_data import strip_gutenberg_boilerplate

    book = _texts(DATA / "quality" / "gutenberg_alice.jsonl.gz")[0]
    body = strip_gutenberg_boilerplate(book)
    assert "Project Gutenberg" in book[:2000] and "Project Gutenberg" not in body[:2000]
    assert "Project Gutenberg" in book[-5000:] and "Project Gutenberg" not in body[-5000:]
    assert body in book and len(body) > 0.8 * len(book)


# -- embedding head ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pages():
    from hf_ext.curate.quality_data import length_matched_pages, strip_gutenberg_boilerplate

    c4_train = _texts(DATA / "web" / "c4_en_train_first150.jsonl.gz")[:100]
    c4_test = _texts(DATA / "quality" / "c4_demo_first100.jsonl.gz")[:60]
    wiki = length_matched_pages(_texts(DATA / "web" / "wikipedia_demo_first6.jsonl.gz"), c4_train, n=70, seed=0)
    alice = strip_gutenberg_boilerplate(_texts(DATA / "quality" / "gutenberg_alice.jsonl.gz")[0])
    book = length_matched_pages([alice], c4_test, n=40, seed=1)
    return {"train_pos": wiki, "train_neg": c4_train, "test_pos": book, "test_neg": c4_test}


@pytest.fixture(scope="module")
def trained(pages):
    """Training embeddings (computed once) and the head fitted on them."""
    from hf_ext.curate.embed_quality import EmbeddingQualityScorer, SentenceEmbedder, fit_embedding_head

    embedder = SentenceEmbedder(max_length=128, batch_size=32)
    emb = embedder.encode(pages["train_pos"] + pages["train_neg"])
    labels = [1] * len(pages["train_pos"]) + [0] * len(pages["train_neg"])
    return emb, labels, EmbeddingQualityScorer(*fit_embedding_head(emb, labels), embedder=embedder)


@pytest.fixture(scope="module")
def embedding_scorer(trained):
    return trained[2]


def test_embedding_head_beats_length_on_another_source(embedding_scorer, pages):
    """Trained on Wikipedia pages vs C4, tested on Gutenberg pages vs other C4 pages."""
    from hf_ext.curate.quality_data import auc, word_count

    test = pages["test_pos"] + pages["test_neg"]
    labels = [1] * len(pages["test_pos"]) + [0] * len(pages["test_neg"])
    scores = embedding_scorer.score(test)
    assert auc(labels, scores) > auc(labels, word_count(test)) + 0.1
    assert auc(labels, scores) > 0.65  # 0.70 with this seed and data (length: < 0.60)


def test_embedding_head_matches_sklearn_and_round_trips(embedding_scorer, trained, pages, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from hf_ext.curate.embed_quality import EmbeddingQualityScorer

    texts = pages["test_pos"][:5] + pages["test_neg"][:5]
    emb = embedding_scorer.embedder.encode(texts)
    # unit-norm mean-pooled embeddings (sentence-transformers' recipe for this model)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    train, labels, _ = trained
    ref = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=0).fit(train, labels)
    np.testing.assert_allclose(embedding_scorer.score_embeddings(emb), ref.predict_proba(emb)[:, 1], rtol=1e-6)

    embedding_scorer.save(tmp_path / "scorer")
    assert sorted(p.name for p in (tmp_path / "scorer").iterdir()) == ["head.safetensors", "quality_scorer.json"]
    loaded = EmbeddingQualityScorer.load(tmp_path / "scorer")
    assert loaded.score(texts) == embedding_scorer.score(texts)
    with pytest.raises(InputError, match="head.safetensors"):
        EmbeddingQualityScorer.load(tmp_path)
    # the one-call trainer is encode + the same fit
    from hf_ext.curate.embed_quality import fit_embedding_head, train_embedding_classifier

    few_pos, few_neg = pages["train_pos"][:4], pages["train_neg"][:4]
    quick = train_embedding_classifier(few_pos, few_neg, embedding_scorer.embedder)
    w, b = fit_embedding_head(embedding_scorer.embedder.encode(few_pos + few_neg), [1] * 4 + [0] * 4)
    np.testing.assert_allclose(quick.weights, w, rtol=1e-6)
    assert quick.bias == pytest.approx(b)


def test_embedding_scorer_maps_a_dataset_and_pickles_small(embedding_scorer, pages):
    from datasets import Dataset

    from hf_ext.curate.embed_quality import EmbeddingQualityScorer

    state = pickle.dumps(embedding_scorer)
    assert len(state) < 30_000  # settings + head, not the encoder
    clone = pickle.loads(state)
    assert clone.embedder._model is None  # loads lazily in the worker
    ds = Dataset.from_dict({"text": pages["test_pos"][:6]})
    out = ds.map(clone, batched=True, batch_size=4)
    np.testing.assert_allclose(out["quality_score"], embedding_scorer.score(pages["test_pos"][:6]), rtol=1e-6)
    with pytest.raises(InputError, match="no column 'text'"):
        embedding_scorer({"body": ["a"]})
    with pytest.raises(InputError, match="link"):
        EmbeddingQualityScorer([0.0], link="softmax")


# -- judge-labelled recipe --------------------------------------------------------------------

KNOWN_ANSWERS = [
    ("The extract is a clear encyclopedia text.\nEducational score: 4", 4.0),
    ("Mostly advertising. Educational score:  1", 1.0),
    ("**Educational score:** 5", 5.0),
    ("Score: 3", 3.0),
    ("It covers basics (2 points), then more. Educational score: 2", 2.0),
    ("Educational score: 7", None),
    ("I would give it a good score.", None),
    ("", None),
]


@pytest.mark.parametrize("answer,expected", KNOWN_ANSWERS)
def test_edu_score_parsing(answer, expected):
    from hf_ext.curate.judge_quality import parse_edu_score

    assert parse_edu_score(answer) == expected


def test_judge_logprob_scores_equal_a_hand_computation_from_the_logits(tmp_path):
    """method="logprobs": the expected score over the digits 0-5 after the answer prefix equals
    one computed by hand from the model's last-position logits of each prompt scored alone
    (the judge batches with left padding); every page gets a score."""
    import torch

    from hf_ext.critique.backends import TransformersBackend
    from hf_ext.curate.judge_quality import EduJudge, edu_conversation
    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(tokenizer=tok, max_position_embeddings=1024, seed=3).eval()
    folder = save_tiny(tmp_path / "judge", model, tok)
    texts = ["The cat sat on the mat.", "Photosynthesis turns light into sugar. " * 4, "Buy now!", "x"]
    judge = EduJudge(TransformersBackend(model=str(folder), batch_size=3), max_chars=150, score_prefix="Score=")
    assert judge.uses_logprobs
    scores, raw = judge.label(texts)
    digit_ids = tok.convert_tokens_to_ids(list("012345"))
    for text, score, r in zip(texts, scores, raw):
        prompt = tok.apply_chat_template(edu_conversation(text, max_chars=150), tokenize=False, add_generation_prompt=True)
        ids = tok(prompt + "Score=", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)[digit_ids].double()
        p = logp.exp() / logp.exp().sum()
        assert score == pytest.approx(float((p * torch.arange(6)).sum()), abs=1e-5)
        assert f"p(score digit) {float(logp.exp().sum()):.4f}" in r
    assert all(0 <= s <= 5 for s in scores) and len(set(scores)) == len(scores)
    # a candidate that is not one token after the prefix, and logprobs from a generate-only backend
    with pytest.raises(InputError, match="not one token"):
        EduJudge(TransformersBackend(model=str(folder)), score_prefix="Score= ").label(texts[:1])
    from hf_ext.critique.backends import OpenAIBackend

    with pytest.raises(InputError, match="method='generate'"):
        EduJudge(OpenAIBackend(), method="logprobs")
    assert not EduJudge(OpenAIBackend()).uses_logprobs  # a server's answer is parsed by default


def test_judge_labels_through_an_openai_server_train_a_head(pages, tmp_path):
    """A fake judge (OpenAI-compatible server) rates Wikipedia pages 4 and C4 pages 1, with
    one unparsable answer; the edu judge parses them, the ridge head learns them, and the
    quality_judge job scores a corpus and writes its card."""
    from openai_server import OpenAICompatibleServer

    from hf_ext.critique.backends import OpenAIBackend
    from hf_ext.curate.judge_quality import EduJudge, FINEWEB_EDU_PROMPT

    articles = _texts(DATA / "web" / "wikipedia_demo_first6.jsonl.gz")

    def responder(body):
        page = body["messages"][0]["content"].split("The extract:\n", 1)[1].split("\n\nAfter examining the extract:")[0]
        if page.startswith("Beginners BBQ"):
            return "no idea"
        return "Encyclopedic.\nEducational score: 4" if any(page in a for a in articles) else "Spam.\nEducational score: 1"

    server = OpenAICompatibleServer(responder)
    with server:
        judge = EduJudge(OpenAIBackend(base_url=server.base_url, model="judge", concurrency=4), max_chars=200)
        texts = pages["train_pos"][:3] + pages["train_neg"][:3]
        scores, raw = judge.label(texts)
        assert scores == [4.0, 4.0, 4.0, -1.0, 1.0, 1.0]  # the first C4 page got an unparsable answer
        assert raw[3] == "no idea"
        body = server.requests[0]["body"]["messages"][0]["content"]
        assert body.startswith(FINEWEB_EDU_PROMPT.split("{extract}")[0])

        from hf_ext.config import parse_config
        from hf_ext.curate.quality_job import QualityJudgeConfig, run_quality_judge

        c = parse_config(QualityJudgeConfig, {
            "data_dir": str(DATA), "negatives": [{"path": "web/c4_en_train_first150.jsonl.gz", "max_docs": 30}],
            "pages": [{"path": "web/wikipedia_demo_first6.jsonl.gz", "chunk": True, "max_pages": 30, "name": "wikipedia"}],
            "heldout": [{"name": "gutenberg", "positives": [{"path": "quality/gutenberg_alice.jsonl.gz", "chunk": True,
                                                              "strip_gutenberg": True, "max_pages": 20}],
                         "negatives": [{"path": "quality/c4_demo_first100.jsonl.gz", "max_docs": 30}]}],
            "sample_size": 40, "judge_backend": "openai", "judge": {"base_url": server.base_url, "model": "judge"},
            "judge_max_chars": 200, "embedder": {"max_length": 64}, "score_dataset": str(DATA / "quality" / "c4_demo_first100.jsonl.gz"),
            "output_dir": str(tmp_path / "judge_out"),
        })
        metrics = run_quality_judge(c)
    out = tmp_path / "judge_out"
    assert metrics["labelled"] == 40 and metrics["parsed"] in (39, 40)
    assert set(metrics["label_histogram"]) == {"0", "1", "2", "3", "4", "5"}
    assert metrics["label_histogram"]["4"] + metrics["label_histogram"]["1"] == metrics["parsed"]
    assert metrics["scored"]["documents"] == 100
    labels = [json.loads(line) for line in (out / "judge_labels.jsonl").read_text().splitlines()]
    assert len(labels) == 40 and {l["edu_score"] for l in labels} <= {4.0, 1.0, -1.0}
    card = (out / "README.md").read_text()
    assert "openai: judge" in card and "gutenberg" in card and "heldout_auc.png" in card
    assert (out / "heldout_auc.png").stat().st_size > 1000
    import datasets

    scored = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert {"quality_score", "keep"} <= set(scored.column_names)
    assert metrics["heldout"]["gutenberg"]["auc"] > metrics["heldout"]["gutenberg"]["auc_length_baseline"]


# -- jobs and recipes -------------------------------------------------------------------------

def test_curate_job_takes_the_embedding_scorer_folder_as_quality_model(embedding_scorer, pages, tmp_path):
    """`quality_model` = a folder written by EmbeddingQualityScorer.save (what the quality jobs
    write): the curate job scores the kept pages with that head (scores equal the head's own)
    and keeps the top fraction; a fastText .bin still works; a folder without a scorer is one
    clear error."""
    import datasets

    from hf_ext.curate.embed_quality import EmbeddingQualityScorer
    from hf_ext.curate.job import CurateConfig, run_curate
    from hf_ext.curate.quality import train_fasttext_classifier

    folder = tmp_path / "scorer"
    embedding_scorer.save(folder)
    docs = tmp_path / "docs.jsonl"
    texts = pages["test_pos"][:10] + pages["test_neg"][:10]
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    ft = train_fasttext_classifier(pages["train_pos"], pages["train_neg"], tmp_path / "ft.bin", seed=0, epoch=5)
    for model, kind in ((folder, "embedding"), (tmp_path / "ft.bin", "fasttext")):
        out = tmp_path / f"out_{kind}"
        metrics = run_curate(CurateConfig(dataset=str(docs), url_column=None, pipeline="gopher_quality", html="off",
                                          quality_model=str(model), quality_top_fraction=0.5, output_dir=str(out)))
        assert metrics["quality"]["scorer"] == kind
        kept = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
        scorer = EmbeddingQualityScorer.load(folder) if kind == "embedding" else ft
        heuristics_kept = metrics["quality"]["scored"]
        assert len(kept) == metrics["kept"] == max(1, round(0.5 * heuristics_kept))
        np.testing.assert_allclose(kept["quality_score"], scorer.score(kept["text"]), rtol=1e-5)
        # the top half by the scorer's own scores: every kept page scores at least every dropped one
        from hf_ext.curate.pipeline import CurationPipeline

        passed = [t for t, k in zip(texts, CurationPipeline.from_name("gopher_quality").process(texts)[1]) if k]
        dropped = [t for t in passed if t not in set(kept["text"])]
        if dropped:
            assert min(kept["quality_score"]) >= max(scorer.score(dropped)) - 1e-6
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="quality_scorer.json"):
        run_curate(CurateConfig(dataset=str(docs), url_column=None, pipeline="gopher_quality", html="off",
                                quality_model=str(tmp_path / "empty"), output_dir=str(tmp_path / "out_bad")))



def test_quality_classifier_job_on_bundled_data(tmp_path):
    from hf_ext.config import load_recipe, parse_config
    from hf_ext.curate.quality_job import QualityClassifierConfig, run_quality_classifier

    values = load_recipe(REPO / "recipes" / "quality_fasttext.yaml")
    values.pop("job")
    values["data_dir"] = str(DATA)
    values["output_dir"] = str(tmp_path / "ft")
    metrics = run_quality_classifier(parse_config(QualityClassifierConfig, values))
    r = metrics["heldout"]["gutenberg_vs_c4_demo"]
    assert r["positives"] > 40 and r["negatives"] == 100
    assert 0.0 <= r["auc"] <= 1.0 and abs(r["auc_length_baseline"] - 0.5) < 0.15  # length-matched pages
    assert metrics["sources"]["heuristic_drops_moved_to_negatives"] >= 0
    assert metrics["train_positives"] + metrics["train_negatives"] == 104 + 150
    from hf_ext.curate.quality import FastTextQualityScorer

    s = FastTextQualityScorer(str(tmp_path / "ft" / "model.bin"))
    assert len(s.score(["a page"])) == 1
    # the recipe's normalisation is saved beside the model and applied by a reloaded scorer
    assert s.normalize == "punct_lower" and values["fasttext"]["normalize"] == "punct_lower"
    a, b, c = s.score(["The Library opened, and Families came.", "the library opened , and families came .",
                       "The Library opened and Families came"])
    assert a == b and a != c
    dclm = FastTextQualityScorer(str(tmp_path / "ft" / "model.bin"))
    dclm.normalize = "dclm"  # the same model fed DCLM's text scores differently
    assert dclm.score(["The Library opened, and Families came."])[0] != a
    with pytest.raises(InputError, match="trained with normalize='punct_lower'"):
        FastTextQualityScorer(str(tmp_path / "ft" / "model.bin"), normalize="dclm")
    (tmp_path / "ft" / "model.bin.hf_ext.json").write_text("{not json")
    with pytest.raises(InputError, match="model.bin.hf_ext.json is not an hf_ext fastText sidecar"):
        FastTextQualityScorer(str(tmp_path / "ft" / "model.bin"))
    card = (tmp_path / "ft" / "README.md").read_text()
    assert "| gutenberg_vs_c4_demo |" in card and "roc_auc" in card


def test_quality_config_errors_name_the_field(tmp_path):
    from hf_ext.curate.quality_job import QualityClassifierConfig, QualityJudgeConfig

    with pytest.raises(InputError, match="needs `negatives`"):
        QualityClassifierConfig(positives=["a.jsonl"])
    with pytest.raises(InputError, match="needs `positives`"):
        QualityClassifierConfig(negatives=["a.jsonl"])
    with pytest.raises(InputError, match=r"positives\[0\].*unexpected keyword"):
        QualityClassifierConfig(positives=[{"path": "a", "chunks": True}], negatives=["b"])
    with pytest.raises(InputError, match="heuristic_negatives must be a named pipeline"):
        QualityClassifierConfig(positives=["a"], negatives=["b"], heuristic_negatives="nope")
    with pytest.raises(InputError, match="fasttext.normalize must be one of"):
        QualityClassifierConfig(positives=["a"], negatives=["b"], fasttext={"normalize": "lower"})
    with pytest.raises(InputError, match=r"heldout\[0\]"):
        QualityClassifierConfig(positives=["a"], negatives=["b"], heldout=[{"positives": ["c"]}])
    with pytest.raises(InputError, match="embedder"):
        QualityClassifierConfig(positives=["a"], negatives=["b"], embedder={"modle": "x"})
    with pytest.raises(InputError, match="judge:"):
        QualityJudgeConfig(negatives=["b"], judge={"modle": "x"})
    c = QualityClassifierConfig(positives=[{"path": "missing.jsonl.gz"}], negatives=["b.jsonl"], data_dir=str(tmp_path),
                                output_dir=str(tmp_path / "o"))
    from hf_ext.curate.quality_job import run_quality_classifier

    with pytest.raises(InputError, match="set data_dir"):
        run_quality_classifier(c)
    assert not (tmp_path / "o").exists()
