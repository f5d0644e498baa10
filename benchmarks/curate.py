"""Curation benchmark: our DCLM heuristic chain vs datatrove's Gopher quality + repetition +
language filters (speed, and agreement on the rules whose semantics match), our numpy MinHash
vs datasketch (speed, same documents), per-filter drop counts, and a fastText quality
classifier trained on real data (AUC on held-out sources, beside the length baseline).

    python benchmarks/curate.py [--quick] [--dclm-dir /tmp/dclm] --out curate.json

With ``--dclm-dir`` (a clone of mlfoundations/dclm) it also runs DCLM's own heuristic steps
(benchmarks/dclm_reference.py) on the 1,000 C4 and the 30 Dolma documents and reports
``dclm_reference_agreement`` (keep/drop), ``dclm_reference_same_drop_step`` and
``dclm_reference_identical_text`` (documents both keep with identical output text).

Language ID runs through `hf_ext.curate.fasttext_top1.FastTextTop1` (fastText's own arithmetic with
each distinct token's rows looked up once); ``timed_run_decisions_identical_to_fasttext_predict_chain``
checks every timed document against the chain with fastText's predict, and the ``language_id_*``
keys time it against fastText's predict on the 1,000 C4 + 30 Dolma documents with an empty and
a warm token cache. The Gopher repetition rule runs its numba-compiled loops
(`hf_ext.curate.kernels`; ``gopher_repetition_compiled`` says whether numba was installed, and
without it the numpy path runs, with the same decisions). The timed documents repeat 1,000 unique ones, so after the first 1,000 our
token cache is warm (fastText has no such cache): the cold-cache rate is the honest one for a
stream of new documents, and ``speedup_vs_datatrove_first_1000`` times our chain on the first
1,000 documents alone (fresh pipeline, empty cache, model load included).

Documents: the C4 documents in <data-dir>/web, repeated to >= 20,000 (2,000 with --quick).
Everything is timed in this run on this machine; compare the ratios, not the absolute rates.
The two chains are timed in alternating slices (1,000 of our documents, then datatrove's share
of its prefix), so a load change during the run affects both rates alike.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_args, peak_rss_bytes, write_results  # noqa: E402

from hf_ext.curate import kernels  # noqa: E402
from hf_ext.curate.base import Doc  # noqa: E402
from hf_ext.curate.dedup import MinHashDeduplicator  # noqa: E402
from hf_ext.curate.heuristics import EllipsisLinesFilter, PageLengthFilter, SymbolRatioFilter, WordLengthFilter  # noqa: E402
from hf_ext.curate.langid import packaged_lid_model  # noqa: E402
from hf_ext.curate.pipeline import CurationPipeline  # noqa: E402


def extra(parser):
    parser.add_argument("--docs", type=int, default=None, help="Documents for timing (default 20,000; 2,000 with --quick).")
    parser.add_argument("--datatrove-docs", type=int, default=None,
                        help="Documents datatrove is timed on (default: min(docs, 4,000), a prefix of the same list).")
    parser.add_argument("--minhash-docs", type=int, default=None, help="Documents for the MinHash comparison (default 5,000; 1,000 quick).")
    parser.add_argument("--no-quality", action="store_true",
                        help="Skip the quality scorers (the quality_auc* keys; benchmarks/curate_quality.py measures them alone).")
    parser.add_argument("--dclm-dir", type=Path, default=None,
                        help="A clone of mlfoundations/dclm: compare our DCLM chain with DCLM's own code (dclm_reference_*).")


def read_jsonl(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def datatrove_chain():
    """datatrove's equivalent: language ID (same lid.176 model and threshold), Gopher
    repetition, Gopher quality (default thresholds)."""
    import fasttext
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter

    lang = LanguageFilter(languages=["en"], language_threshold=0.65)
    lang.model._model = fasttext.load_model(packaged_lid_model())  # offline: the same lid.176.ftz we use
    return [lang, GopherRepetitionFilter(), GopherQualityFilter()]


def run_datatrove(filters, texts):
    from datatrove.data import Document

    keep = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        ok = True
        for f in filters:
            result = f.filter(doc)
            if not (result is True or (isinstance(result, tuple) and result[0])):
                ok = False
                break
        keep.append(ok)
    return keep


def speed_by_step(texts, dt_filters, dt_texts) -> dict:
    """Seconds each step of our chain spends on `texts` (a fresh pipeline with every step timed),
    and each datatrove filter on `dt_texts`, as docs/s of the documents that reached the step;
    plus what the shared language-ID model (the same lid.176.ftz on both sides) leaves possible."""
    from datatrove.data import Document

    from hf_ext.curate.base import Filter

    pipe = CurationPipeline.from_name("dclm_heuristics")
    seconds, seen = {s.name: 0.0 for s in pipe.steps}, {s.name: 0 for s in pipe.steps}

    def timed(step, method):
        inner = getattr(step, method)

        def run(arg):
            start = time.perf_counter()
            out = inner(arg)
            seconds[step.name] += time.perf_counter() - start
            seen[step.name] += len(arg) if method == "check_batch" else 1
            return out

        setattr(step, method, run)

    for step in pipe.steps:
        timed(step, "check_batch" if isinstance(step, Filter) else "modify")
    for s in range(0, len(texts), 1000):
        pipe.process(texts[s : s + 1000])
    dt_seconds, dt_seen = [0.0] * len(dt_filters), [0] * len(dt_filters)
    for i, text in enumerate(dt_texts):
        doc = Document(text=text, id=str(i))
        for j, f in enumerate(dt_filters):
            start = time.perf_counter()
            result = f.filter(doc)
            dt_seconds[j] += time.perf_counter() - start
            dt_seen[j] += 1
            if not (result is True or (isinstance(result, tuple) and result[0])):
                break
    ours_total, ours_lid = sum(seconds.values()), seconds["language_id"]
    dt_per_doc, ours_per_doc = sum(dt_seconds) / len(dt_texts), ours_total / len(texts)
    dt_lid_per_doc = dt_seconds[0] / len(dt_texts)
    return {
        "docs_per_s_by_step": {k: seen[k] / v if v else None for k, v in seconds.items()},
        "seconds_share_by_step": {k: v / ours_total for k, v in seconds.items()},
        "datatrove_docs_per_s_by_step": {type(f).__name__: n / t if t else None for f, n, t in zip(dt_filters, dt_seen, dt_seconds)},
        # the same fastText model scores on both sides: with every other step free, the ratio
        # could be at most this
        "speedup_bound_if_only_language_id_cost": dt_per_doc / (ours_lid / len(texts)),
        "speedup_vs_datatrove_by_step_timing": dt_per_doc / ours_per_doc,
        "speedup_vs_datatrove_without_language_id": (dt_per_doc - dt_lid_per_doc) / ((ours_total - ours_lid) / len(texts)),
    }


def agreement(texts):
    """Per rule and combined: fraction of identical keep/drop decisions on the rules whose
    semantics match (same thresholds and comparison; tokenizers differ)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter

    off = dict(min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
               max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
               max_non_alpha_words_ratio=None, min_stop_words=None)
    pairs = {
        "page_length": (PageLengthFilter(), dict(min_doc_words=50, max_doc_words=100_000)),
        "word_length": (WordLengthFilter(), dict(min_avg_word_length=3, max_avg_word_length=10)),
        "symbol_ratio": (SymbolRatioFilter(), dict(max_symbol_word_ratio=0.1)),
        "ellipsis_lines": (EllipsisLinesFilter(), dict(max_ellipsis_lines_ratio=0.3)),
    }
    ours_all, theirs_all, per_rule = [True] * len(texts), [True] * len(texts), {}
    for name, (ours, kw) in pairs.items():
        theirs = GopherQualityFilter(**{**off, **kw})
        a = [ours.check(Doc(t))[0] for t in texts]
        b = [theirs.filter(Document(text=t, id="0")) is True for t in texts]
        per_rule[name] = sum(x == y for x, y in zip(a, b)) / len(texts)
        ours_all = [x and y for x, y in zip(ours_all, a)]
        theirs_all = [x and y for x, y in zip(theirs_all, b)]
    combined = sum(x == y for x, y in zip(ours_all, theirs_all)) / len(texts)
    return combined, per_rule


FROZEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "web" / "c4_en_train_first150.dclm_heuristics_decisions.json"


def frozen_identity(unique: list, texts: list, reasons: list) -> str:
    """Timed-run documents whose source is one of the 150 bundled C4 documents (the first 150 of
    the 1,000) with the same drop reason and output text (sha1) as the frozen decisions of
    tests/data/web (tests/test_curate_dclm_reference.py), as "same/checked"."""
    import hashlib

    rows = json.loads(FROZEN.read_text())["rows"]
    bundled = {t: i for i, t in enumerate(unique[: len(rows)])}
    checked = same = 0
    for i, (text, reason) in enumerate(zip(texts, reasons)):
        j = bundled.get(unique[i % len(unique)])
        if j is None:
            continue
        checked += 1
        sha = None if reason else hashlib.sha1(text.encode()).hexdigest()
        same += rows[j]["drop_reason"] == reason and rows[j]["text_sha1"] == sha
    return f"{same}/{checked}"


def language_id_speed(unique: list, dolma: list) -> dict:
    """Our language ID (`FastTextTop1`: fastText's arithmetic with a per-token cache) against
    fastText's own predict on the same texts (newlines removed, as DCLM): docs/s with an empty
    cache (every token new) and a warm one (the same documents again), and how many of the
    (label, probability) pairs are identical. `unique`: the 1,000 C4 documents; `dolma`: Dolma's."""
    import fasttext

    from hf_ext.curate.fasttext_top1 import FastTextTop1, fasttext_predict_top1

    path = packaged_lid_model()
    model = fasttext.load_model(path)
    texts = [t.replace("\n", "") for t in unique + dolma]
    fast = FastTextTop1.load(model, path)
    model.predict(texts[:5], k=1)
    cold = warm = theirs_s = 0.0
    for _ in range(3):  # interleaved rounds, best of each
        fast.clear_cache()
        start = time.perf_counter()
        mine = fast.predict(texts)
        cold = max(cold, len(texts) / (time.perf_counter() - start))
        start = time.perf_counter()
        fast.predict(texts)
        warm = max(warm, len(texts) / (time.perf_counter() - start))
        start = time.perf_counter()
        theirs = fasttext_predict_top1(model, texts)
        theirs_s = max(theirs_s, len(texts) / (time.perf_counter() - start))
    return {
        "language_id_docs": len(texts),
        "language_id_identical_to_fasttext": f"{sum(a == b for a, b in zip(mine, theirs))}/{len(texts)}",
        "language_id_docs_per_s_cold_cache": cold,
        "language_id_docs_per_s_warm_cache": warm,
        "fasttext_predict_docs_per_s": theirs_s,
        "language_id_speedup_vs_fasttext_cold": cold / theirs_s,
        "language_id_speedup_vs_fasttext_warm": warm / theirs_s,
        "language_id_cached_tokens": len(fast.cache),
    }


def decisions_identical_to_fasttext_predict(unique: list, texts: list, reasons: list) -> str:
    """Timed-run documents whose drop reason and output text equal those of the same chain with
    language ID through fastText's own predict (``cache_tokens=False``), as "same/checked"."""
    pipe = CurationPipeline.from_name("dclm_heuristics", step_options={"language_id": {"cache_tokens": False}})
    ref_texts, _, ref_reasons = pipe.process(unique)
    same = sum(reasons[i] == ref_reasons[i % len(unique)] and (reasons[i] is not None or texts[i] == ref_texts[i % len(unique)])
               for i in range(len(texts)))
    return f"{same}/{len(texts)}"


DCLM_FIDELITY_SETS = {"c4_en_train_first1000": "c4_en_train_first1000.jsonl.gz", "dolma_test_cc_documents": "dolma_test_cc_documents.jsonl.gz"}


def dclm_fidelity(data_dir: Path, dclm_dir: Path | None, timed_reasons: list | None = None) -> dict:
    """DCLM's own heuristic steps (benchmarks/dclm_reference.py) vs our chain, per document set:
    keep/drop agreement, same dropping step, identical output text. First without language ID
    (the issue's comparison), then with DCLM's language-ID steps scoring with the same packaged
    lid.176.ftz as ours (``dclm_reference_with_language_id``). `timed_reasons` (the drop reasons
    of the timed run over the repeated C4 documents) are checked against that last reference:
    ``timed_run_decisions_identical_to_dclm``."""
    if dclm_dir is None:
        return {"dclm_reference": "skipped: pass --dclm-dir (a clone of mlfoundations/dclm)"}
    from dclm_reference import read_texts, reference

    from hf_ext.curate.pipeline import DCLM_FUNCTIONS, PIPELINES

    out, with_lid = {}, {}
    for lid_model, target in ((None, out), (Path(packaged_lid_model()), with_lid)):
        steps = [s for s in PIPELINES["dclm_heuristics"] if lid_model is not None or s != "language_id"]
        for key in ("agreement", "same_drop_step", "identical_text", "docs", "disagreements"):
            target[f"dclm_reference_{key}"] = {}
        for name, file in DCLM_FIDELITY_SETS.items():
            texts = read_texts(data_dir / "web" / file, "text")
            ref = reference(dclm_dir, texts, lid_model)
            if lid_model is not None and name == "c4_en_train_first1000":
                c4_ref_with_lid = ref
            ours, keep, reasons = CurationPipeline(steps).process(texts)
            same_step = [k == r["kept"] and (k or reason.split(":")[0] == DCLM_FUNCTIONS.get(r["dropped_by"]))
                         for k, reason, r in zip(keep, reasons, ref)]
            both = [(o, r["text"]) for o, k, r in zip(ours, keep, ref) if k and r["kept"]]
            target["dclm_reference_agreement"][name] = sum(k == r["kept"] for k, r in zip(keep, ref)) / len(texts)
            target["dclm_reference_same_drop_step"][name] = sum(same_step) / len(texts)
            target["dclm_reference_identical_text"][name] = f"{sum(a == b for a, b in both)}/{len(both)}"
            target["dclm_reference_docs"][name] = {"docs": len(texts), "dclm_kept": sum(r["kept"] for r in ref), "ours_kept": sum(keep)}
            target["dclm_reference_disagreements"][name] = [
                {"index": i, "ours": reasons[i], "dclm": ref[i]["dropped_by"]} for i, ok in enumerate(same_step) if not ok][:20]
    out["dclm_reference_with_language_id"] = with_lid
    if timed_reasons:
        c4 = [None if r["kept"] else DCLM_FUNCTIONS[r["dropped_by"]] for r in c4_ref_with_lid]
        same = sum((r or "").split(":")[0] == (c4[i % len(c4)] or "") for i, r in enumerate(timed_reasons))
        out["timed_run_decisions_identical_to_dclm"] = f"{same}/{len(timed_reasons)}"
    return out


def datasketch_dedup(texts, num_perm=112, ngram=5, threshold=0.8):
    from datasketch import MinHash, MinHashLSH

    from hf_ext.curate.text import words

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    keep = []
    for i, text in enumerate(texts):
        w = words(text)
        shingles = {" ".join(w[j : j + ngram]).encode("utf-8") for j in range(max(1, len(w) - ngram + 1))}
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingles))
        if not lsh.query(m):
            keep.append(i)
        lsh.insert(str(i), m)
    return keep


def quality_auc(data_dir: Path, seed: int, quick: bool, out_dir: Path) -> dict:
    """Quality scorers (fastText, embedding head, judge-labelled head) trained on pages vs pages
    and tested on held-out pairs from other sources, beside the length baseline: the
    `quality_auc*` keys of benchmarks/curate_quality.py (run it alone for the details; --quick
    skips the slow judge LM here)."""
    from curate_quality import quality_benchmark

    return quality_benchmark(data_dir, seed, quick, out_dir, judge_pages=0 if quick else None)


def main():
    args = benchmark_args(__doc__.splitlines()[0], extra)
    n_docs = args.docs or (2_000 if args.quick else 20_000)
    n_dt = args.datatrove_docs or min(n_docs, 4_000 if not args.quick else 1_000)
    n_mh = args.minhash_docs or (1_000 if args.quick else 5_000)
    rows = read_jsonl(args.data_dir / "web" / "c4_en_train_first1000.jsonl.gz")
    unique = [r["text"] for r in rows]
    texts = (unique * (n_docs // len(unique) + 1))[:n_docs]
    results = {"docs": n_docs, "unique_docs": len(unique), "datatrove_docs": n_dt, "minhash_docs": n_mh}

    # warm up both (model loads, spaCy) outside the timed regions
    pipe = CurationPipeline.from_name("dclm_heuristics")
    pipe.process(unique[:5])
    dt = datatrove_chain()
    run_datatrove(dt, unique[:5])
    pipe = CurationPipeline.from_name("dclm_heuristics")

    # Interleaved: each 1,000-document batch of ours is followed by its share of datatrove's
    # documents, so load that drifts during the run (a shared machine) slows both sides alike.
    timed_reasons, timed_texts, ours_s, dt_s, first_s = [], [], 0.0, 0.0, 0.0
    rounds = -(-n_docs // 1000)
    for r, s in enumerate(range(0, n_docs, 1000)):
        start = time.perf_counter()
        out, _, reasons = pipe.process(texts[s : s + 1000])
        ours_s += time.perf_counter() - start
        if r == 0:
            first_s = ours_s
        timed_reasons += reasons
        timed_texts += out
        start = time.perf_counter()
        run_datatrove(dt, texts[r * n_dt // rounds : (r + 1) * n_dt // rounds])
        dt_s += time.perf_counter() - start
    results["docs_per_s"] = n_docs / ours_s
    results["datatrove_docs_per_s"] = n_dt / dt_s
    results["speedup_vs_datatrove"] = results["docs_per_s"] / results["datatrove_docs_per_s"]
    # the first 1,000 (the unique documents) alone: a fresh pipeline, language ID's model loads
    # and its token cache starts empty, as on a stream of new documents
    results["gopher_repetition_compiled"] = kernels.available()
    results["docs_per_s_first_1000"] = min(1000, n_docs) / first_s
    results["speedup_vs_datatrove_first_1000"] = results["docs_per_s_first_1000"] / results["datatrove_docs_per_s"]
    results["timed_run_decisions_identical_to_frozen"] = frozen_identity(unique, timed_texts, timed_reasons)
    results["timed_run_decisions_identical_to_fasttext_predict_chain"] = decisions_identical_to_fasttext_predict(
        unique, timed_texts, timed_reasons)
    dolma = [r["record"]["text"] for r in read_jsonl(args.data_dir / "web" / "dolma_test_cc_documents.jsonl.gz")]
    results.update(language_id_speed(unique, dolma))
    results.update(speed_by_step(texts, dt, texts[: min(n_dt, 1_000)]))
    results["drop_counts"] = dict(pipe.drop_counts.most_common())
    results["kept_fraction"] = 1 - sum(pipe.drop_counts.values()) / pipe.seen

    combined, per_rule = agreement(unique)
    results["agreement_with_datatrove"] = combined
    results["agreement_per_rule"] = per_rule
    results.update(dclm_fidelity(args.data_dir, args.dclm_dir, timed_reasons))

    mh_texts = (unique * (n_mh // len(unique) + 1))[:n_mh]
    mh = MinHashDeduplicator(num_perm=112, ngram=5, threshold=0.8)
    mh.dedup(unique[:5])
    start = time.perf_counter()
    ours_keep = mh.dedup(mh_texts)
    mh_s = time.perf_counter() - start
    start = time.perf_counter()
    ds_keep = datasketch_dedup(mh_texts)
    ds_s = time.perf_counter() - start
    results["minhash_docs_per_s"] = n_mh / mh_s
    results["datasketch_docs_per_s"] = n_mh / ds_s
    results["minhash_speedup_vs_datasketch"] = results["minhash_docs_per_s"] / results["datasketch_docs_per_s"]
    results["minhash_kept"], results["datasketch_kept"] = len(ours_keep), len(ds_keep)

    out_dir = Path(args.out).parent if args.out else Path("outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_quality:
        results.update(quality_auc(args.data_dir, args.seed, args.quick, out_dir))
    results["targets"] = {
        "docs_per_s >= 3x datatrove": results["speedup_vs_datatrove"] >= 3,
        "docs_per_s >= 15x datatrove (issue 16)": results["speedup_vs_datatrove"] >= 15,
        "agreement >= 0.99": results["agreement_with_datatrove"] >= 0.99,
        "minhash >= datasketch": results["minhash_docs_per_s"] >= results["datasketch_docs_per_s"],
    }
    results["peak_rss_mb"] = peak_rss_bytes() / 2**20
    write_results(args.out, results)


if __name__ == "__main__":
    main()
