"""Quality scorers on held-out data from other sources than their training data, beside the
length baseline (word count) in the same run.

    python benchmarks/curate_quality.py [--quick] --data-dir ../shared/data --out curate_quality.json

Pages vs pages: positive sources (Wikipedia articles, Gutenberg books, LIMA long-form answers)
and web negatives (C4, Dolma CC). Long sources are cut into spans whose word counts copy the
negatives' (`hf_ext.curate.quality_data.length_matched_pages`); LIMA answers keep their own
length. Protocol: leave one positive source out. Each scorer trains on the other two sources
vs the first 700 C4 documents (plus positive pages the DCLM heuristics drop) and is tested on
the left-out source vs C4 documents 700-999, the LLaMA-Factory C4 demo and the Dolma CC
documents (never seen in training). Scorers: DCLM's fastText bigram classifier as the
quality_classifier job trains it (`QUALITY_FASTTEXT_RECIPE`: 25 epochs at lr 0.5, text lowercased
with punctuation split from words; chosen by the smallest margin over length on the six
one-source-to-another transfers among the training sources, never on these held-out sets), a logistic
head on frozen all-MiniLM-L6-v2 embeddings, and a ridge head on the same embeddings trained on
a judge LM's FineWeb-Edu scores (judge: the packaged SmolLM2-135M-Instruct, read as the
expected score of its next-token distribution over "0".."5" after "Educational score: "; its
sample comes from Wikipedia and C4 training pages, so it is tested on Gutenberg and LIMA).

``benchmarks/curate.py`` calls `quality_benchmark` and keeps its `quality_auc*` keys.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHIPPED_DEFAULT = "embedding"  # the scorer recipes/quality_embedding.yaml ships


def _read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_sources(data_dir: Path, seed: int, per_source: int) -> dict:
    from hf_ext.curate.pipeline import CurationPipeline
    from hf_ext.curate.quality_data import length_matched_pages, strip_gutenberg_boilerplate

    c4 = [r["text"] for r in _read_jsonl(data_dir / "web" / "c4_en_train_first1000.jsonl.gz")]
    heldout_neg = c4[700:] + [r["text"] for r in _read_jsonl(data_dir / "web" / "c4_demo_llamafactory.jsonl.gz")]
    heldout_neg += [r["record"]["text"] for r in _read_jsonl(data_dir / "web" / "dolma_test_cc_documents.jsonl.gz")]
    train_neg = c4[:700]
    rng = random.Random(seed)
    rng.shuffle(heldout_neg)
    heldout_neg = heldout_neg[: max(per_source, 300)]
    with gzip.open(data_dir / "web" / "wikipedia_demo_llamafactory.txt.gz", "rt", encoding="utf-8") as f:
        wiki = [line.strip() for line in f if line.strip()]
    books = [strip_gutenberg_boilerplate(r["text"]) for r in _read_jsonl(data_dir / "lm_corpus" / "gutenberg_books.jsonl.gz")]
    lima = [r["output"] for r in _read_jsonl(data_dir / "instruction" / "lima.jsonl.gz") if len(r["output"].split()) >= 50]
    rng.shuffle(lima)
    pos_train = {"wikipedia": length_matched_pages(wiki, train_neg, n=per_source, seed=seed),
                 "gutenberg": length_matched_pages(books, train_neg, n=per_source, seed=seed),
                 "lima": lima[:per_source]}
    # held-out pages of a source are other spans (other seed) matched to the held-out negatives
    pos_test = {"wikipedia": length_matched_pages(wiki, heldout_neg, n=per_source, seed=seed + 1),
                "gutenberg": length_matched_pages(books, heldout_neg, n=per_source, seed=seed + 1),
                "lima": lima[per_source : 2 * per_source]}
    drops = {}
    pipe = CurationPipeline.from_name("dclm_heuristics")
    for name, pages in pos_train.items():
        keep = pipe.process(pages)[1]
        drops[name] = [p for p, k in zip(pages, keep) if not k]
        pos_train[name] = [p for p, k in zip(pages, keep) if k]
    return {"train_neg": train_neg, "heldout_neg": heldout_neg, "pos_train": pos_train, "pos_test": pos_test, "drops": drops}


class _CachedEmbedder:
    """Embeds each distinct text once per run (the same pages recur across splits)."""

    def __init__(self, embedder):
        self.embedder, self.cache = embedder, {}

    def encode(self, texts):
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            for t, e in zip(todo, self.embedder.encode(todo, progress=True)):
                self.cache[t] = e
        return np.stack([self.cache[t] for t in texts])


def quality_benchmark(data_dir: Path, seed: int = 0, quick: bool = False, out_dir: Path = Path("outputs"),
                      judge_pages: int | None = None, partial=None) -> dict:
    """Every scorer on every held-out source, AUC beside the length baseline. `partial(results)`,
    when given, receives the results before the (slow) judge runs."""
    from hf_ext.curate.embed_quality import EmbeddingQualityScorer, SentenceEmbedder, fit_embedding_head
    from hf_ext.curate.quality import QUALITY_FASTTEXT_RECIPE, train_fasttext_classifier
    from hf_ext.curate.quality_data import auc, word_count

    per_source = 100 if quick else 200
    judge_pages = judge_pages if judge_pages is not None else (16 if quick else 48)
    start = time.perf_counter()
    src = load_sources(data_dir, seed, per_source)
    embed = _CachedEmbedder(SentenceEmbedder())
    names = list(src["pos_train"])
    by_scorer: dict[str, dict[str, float]] = {"fasttext": {}, "embedding": {}, "judge_embedding": {}}
    length: dict[str, float] = {}
    timings: dict[str, float] = {"fasttext": 0.0, "embedding": 0.0}
    for held in names:
        train_pos = [p for n in names if n != held for p in src["pos_train"][n]]
        train_neg = src["train_neg"] + [p for n in names if n != held for p in src["drops"][n]]
        test = src["pos_test"][held] + src["heldout_neg"]
        labels = [1] * len(src["pos_test"][held]) + [0] * len(src["heldout_neg"])
        length[held] = auc(labels, word_count(test))
        t = time.perf_counter()
        ft = train_fasttext_classifier(train_pos, train_neg, out_dir / f"quality_fasttext_no_{held}.bin", seed=seed,
                                       **QUALITY_FASTTEXT_RECIPE)
        by_scorer["fasttext"][held] = auc(labels, ft.score(test))
        timings["fasttext"] += time.perf_counter() - t
        t = time.perf_counter()
        w, b = fit_embedding_head(embed.encode(train_pos + train_neg), [1] * len(train_pos) + [0] * len(train_neg), seed=seed)
        by_scorer["embedding"][held] = auc(labels, EmbeddingQualityScorer(w, b).score_embeddings(embed.encode(test)))
        timings["embedding"] += time.perf_counter() - t
    info = {"src": src, "length": length, "by_scorer": by_scorer, "timings": timings, "start": start}
    if partial is not None and judge_pages:
        partial(_summary(info, None))
    judge = _judge_scores(src, embed, judge_pages, seed, out_dir, length, by_scorer["judge_embedding"]) if judge_pages else None
    return _summary(info, judge)


def _summary(info: dict, judge: dict | None) -> dict:
    src, length, timings = info["src"], info["length"], info["timings"]
    by_scorer = {k: dict(v) for k, v in info["by_scorer"].items() if v}
    default = by_scorer[SHIPPED_DEFAULT]
    return {
        "quality_auc": min(default.values()),
        "quality_auc_length_baseline": max(length.values()),
        "quality_auc_by_scorer": by_scorer,
        "quality": {
            "shipped_default": SHIPPED_DEFAULT,
            "quality_auc_is": f"min over held-out sets of {SHIPPED_DEFAULT}; quality_auc_length_baseline is the max of the length baseline",
            "length_baseline_by_heldout": length,
            "beats_length_everywhere": {k: all(v[h] > length[h] for h in v) for k, v in by_scorer.items()},
            "protocol": "leave one positive source out; train negatives C4[:700] + heuristic drops, test negatives C4[700:] + C4 demo + Dolma CC",
            "train_pages": {n: len(p) for n, p in src["pos_train"].items()}, "test_pages": {n: len(p) for n, p in src["pos_test"].items()},
            "heuristic_drops": {n: len(p) for n, p in src["drops"].items()},
            "negatives": {"train": len(src["train_neg"]), "heldout": len(src["heldout_neg"])},
            "judge": judge, "seconds": round(time.perf_counter() - info["start"], 1),
            "train_eval_seconds": {k: round(v, 1) for k, v in timings.items()},
        },
    }


def _judge_scores(src, embed, n_pages, seed, out_dir, length, results):
    """FineWeb-Edu recipe: the judge rates a sample of Wikipedia + C4 training pages, a ridge
    head learns the ratings; tested on the Gutenberg and LIMA held-out sets."""
    from hf_ext.critique.backends import TransformersBackend
    from hf_ext.curate.embed_quality import EmbeddingQualityScorer, fit_embedding_head
    from hf_ext.curate.judge_quality import EduJudge
    from hf_ext.curate.quality_data import auc

    rng = random.Random(seed)
    sample = rng.sample(src["pos_train"]["wikipedia"], n_pages // 2) + rng.sample(src["train_neg"], n_pages - n_pages // 2)
    judge = EduJudge(TransformersBackend(max_new_tokens=64, batch_size=8), max_chars=800)
    t = time.perf_counter()
    scores, raw = judge.label(sample)
    label_s = time.perf_counter() - t
    with open(out_dir / "quality_judge_labels.jsonl", "w", encoding="utf-8") as f:
        for text, s, r in zip(sample, scores, raw):
            f.write(json.dumps({"text": text, "edu_score": s, "edu_raw": r}) + "\n")
    ok = [i for i, s in enumerate(scores) if s >= 0]
    is_wiki = [1] * (n_pages // 2) + [0] * (n_pages - n_pages // 2)
    info = {"model": judge.backend.model, "method": "logprobs" if judge.uses_logprobs else "generate",
            "pages": n_pages, "parsed": len(ok), "label_seconds": round(label_s, 1),
            "mean_score_wikipedia": float(np.mean([scores[i] for i in ok if is_wiki[i]] or [np.nan])),
            "mean_score_c4": float(np.mean([scores[i] for i in ok if not is_wiki[i]] or [np.nan])),
            "label_auc_wikipedia_vs_c4": auc([is_wiki[i] for i in ok], [scores[i] for i in ok]) if len({is_wiki[i] for i in ok}) == 2 else None}
    if len(ok) < 2 or len({scores[i] for i in ok}) < 2:
        info["skipped"] = "the judge gave fewer than 2 distinct parsable scores"
        return info
    w, b = fit_embedding_head(embed.encode([sample[i] for i in ok]), [scores[i] for i in ok], "ridge")
    head = EmbeddingQualityScorer(w, b, "identity")
    for held in ("gutenberg", "lima"):
        test = src["pos_test"][held] + src["heldout_neg"]
        labels = [1] * len(src["pos_test"][held]) + [0] * len(src["heldout_neg"])
        results[held] = auc(labels, head.score_embeddings(embed.encode(test)))
    return info


def main():
    from _common import benchmark_args, peak_rss_bytes, write_results

    def extra(parser):
        parser.add_argument("--judge-pages", type=int, default=None, help="Pages the judge labels (default 48; 16 quick; 0 skips the judge).")

    args = benchmark_args(__doc__.splitlines()[0], extra)
    out_dir = Path(args.out).parent if args.out else Path("outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = quality_benchmark(args.data_dir, args.seed, args.quick, out_dir, args.judge_pages,
                                partial=lambda r: write_results(args.out, {**r, "partial": "before the judge"}))
    results["peak_rss_mb"] = peak_rss_bytes() / 2**20
    write_results(args.out, results)


if __name__ == "__main__":
    main()
