"""Curation as datasets.map / ds.filter functions, inside a datatrove LocalPipelineExecutor,
the curate and audit jobs (recipes, cards, drop counts), and bad inputs."""

import gzip
import json
import time
from pathlib import Path

import pytest

from hf_ext.curate.pipeline import CurationPipeline
from hf_ext.errors import InputError

WEB = Path(__file__).parent / "data" / "web"
C4_PATH = WEB / "c4_en_train_first150.jsonl.gz"
C4 = [json.loads(line) for line in gzip.open(C4_PATH, "rt")]


def test_map_filter_and_process_agree_and_count_drops():
    import datasets

    ds = datasets.Dataset.from_list(C4[:80])
    pipe = CurationPipeline.from_name("dclm_heuristics")
    mapped = ds.map(pipe.map_fn(), batched=True, batch_size=40)
    filtered = ds.filter(CurationPipeline.from_name("dclm_heuristics").filter_fn(), batched=True, batch_size=40)
    ref = CurationPipeline.from_name("dclm_heuristics")
    _, keep, reasons = ref.process([r["text"] for r in C4[:80]])
    assert mapped["keep"] == keep and len(filtered) == sum(keep)
    assert sum(ref.drop_counts.values()) == len(keep) - sum(keep) and ref.drop_counts["page_length"] > 0
    assert all((r == "") == k for r, k in zip(mapped["drop_reason"], keep))


def test_datatrove_local_executor_matches_datasets(tmp_path):
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.writers import JsonlWriter

    from hf_ext.curate.datatrove_steps import datatrove_steps

    docs = [Document(text=r["text"], id=str(i), metadata={"url": r["url"]}) for i, r in enumerate(C4)]
    LocalPipelineExecutor(
        pipeline=[docs, *datatrove_steps("dclm_heuristics"), JsonlWriter(str(tmp_path / "out"))],
        tasks=1, workers=1, logging_dir=str(tmp_path / "logs"),
    ).run()
    out = [json.loads(line) for f in sorted((tmp_path / "out").glob("*.jsonl.gz")) for line in gzip.open(f, "rt")]
    texts, keep, _ = CurationPipeline.from_name("dclm_heuristics").process([r["text"] for r in C4])
    assert [int(o["id"]) for o in out] == [i for i, k in enumerate(keep) if k]
    assert [o["text"] for o in out] == [t for t, k in zip(texts, keep) if k]  # line edits applied too
    stats = json.loads(next((tmp_path / "logs" / "stats").glob("*.json")).read_text())
    assert any("dropped_page_length" in json.dumps(s) for s in stats)


def test_datatrove_exclusion_writer_gets_every_filters_drops(tmp_path):
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.writers import JsonlWriter

    from hf_ext.curate.datatrove_steps import DatatroveFilter, datatrove_steps

    steps = datatrove_steps("gopher_quality", exclusion_writer=JsonlWriter(str(tmp_path / "dropped")))
    assert all(isinstance(s, DatatroveFilter) and s.exclusion_writer is not None for s in steps)
    docs = [Document(text=r["text"], id=str(i)) for i, r in enumerate(C4)]
    LocalPipelineExecutor(pipeline=[docs, *steps, JsonlWriter(str(tmp_path / "kept"))], tasks=1, workers=1,
                          logging_dir=str(tmp_path / "logs")).run()
    _, keep, reasons = CurationPipeline.from_name("gopher_quality").process([r["text"] for r in C4])
    dropped = {}
    for f in (tmp_path / "dropped").rglob("*.jsonl.gz"):
        for line in gzip.open(f, "rt"):
            dropped[int(json.loads(line)["id"])] = f.parent.name  # <step>/00000.jsonl.gz
    assert dropped == {i: r for i, r in enumerate(reasons) if r} and len(set(dropped.values())) >= 2


def test_curation_stats_survive_cache_hits_and_num_proc(tmp_path):
    import datasets

    from hf_ext.curate.pipeline import curation_stats

    ds = datasets.load_dataset("json", data_files=str(C4_PATH), split="train", cache_dir=str(tmp_path / "cache"))
    ref = CurationPipeline.from_name("gopher_quality")
    _, keep, reasons = ref.process(ds["text"])
    expected = {"total": 150, "kept": sum(keep), "dropped": 150 - sum(keep), "drop_counts": dict(ref.drop_counts.most_common())}
    assert expected["dropped"] > 0
    runs = []
    for num_proc in (None, None, 2):  # the second run is a cache hit; the third maps in 2 worker processes
        pipe = CurationPipeline.from_name("gopher_quality")
        mapped = ds.map(pipe.map_fn(), batched=True, batch_size=50, num_proc=num_proc,
                        new_fingerprint=f"hf_ext-test-gopher-{num_proc}")
        runs.append((dict(pipe.drop_counts), mapped.cache_files, curation_stats(mapped)))
    assert runs[0][0] == expected["drop_counts"]
    assert runs[1][0] == {} and runs[2][0] == {}  # the object saw nothing: cache hit, worker processes
    assert runs[0][1] == runs[1][1]
    for _, _, stats in runs:
        assert {k: stats[k] for k in expected} == expected
        assert sum(stats["drop_reasons"].values()) == stats["dropped"]
    with pytest.raises(InputError, match="drop_reason"):
        curation_stats(ds)


def test_url_blocklist_wraps_datatrove():
    from datatrove.data import Document

    from hf_ext.curate.urls import URLBlocklistFilter

    # the integrated UT1 lists take a minute to parse; configured lists exercise the same rules
    f = URLBlocklistFilter(extra_domains=["blocked-example.com"], banned_words=["casino"], use_integrated_lists=False)
    assert f("text", "https://blocked-example.com/page") == (False, "url_blocklist:domain")
    assert f("text", "https://sub.blocked-example.com/x") == (False, "url_blocklist:domain")
    assert f("text", "https://example.org/best-casino-games") == (False, "url_blocklist:hard_blacklisted")
    assert f("text", "https://example.org/casinos") == (True, None)  # whole words only
    urls = [r["url"] for r in C4[:50]] + ["https://blocked-example.com/", "https://x.org/casino"]
    dt = f.datatrove_filter
    for url in urls:
        theirs = dt.filter(Document(text="", id="0", metadata={"url": url}))
        assert f("text", url)[0] == (theirs is True)
    with pytest.raises(InputError, match="url_column"):
        f("text", None)


def test_bad_inputs():
    pipe = CurationPipeline.from_name("gopher_quality")
    good = " ".join(["The quick brown fox jumps over the lazy dog and the cat."] * 8)
    texts, keep, reasons = pipe.process(["", None, good.encode("utf-8") + b"\xff\xfe bad bytes", good + "\udcff"])
    assert reasons[:2] == ["empty", "empty"] and keep[2] and keep[3]
    assert "\ufffd" in texts[2] and "\ufffd" in texts[3]  # invalid bytes / lone surrogates -> U+FFFD
    with pytest.raises(InputError, match="row 0 is a int"):
        pipe.process([42])
    with pytest.raises(InputError, match="no column 'text'"):
        pipe.map_fn()({"content": ["x"]})
    with pytest.raises(InputError, match="url_column"):
        CurationPipeline.from_name("dclm_baseline").map_fn(url_column="url")({"text": ["x"]})
    with pytest.raises(InputError, match="Unknown curation step"):
        CurationPipeline(["no_such_step"])


def test_ten_megabyte_document_is_handled():
    big = ("The committee met on Tuesday and agreed the budget for the new library. " * 140_000)[:10_000_000]
    start = time.perf_counter()
    _, keep, reasons = CurationPipeline.from_name("dclm_heuristics").process([big, C4[0]["text"]])
    assert reasons[0] == "page_length" and keep[1] is True  # > 100,000 words
    assert time.perf_counter() - start < 60


def test_html_flagged_or_extracted():
    html = ("<!DOCTYPE html><html><head><title>T</title></head><body><div><p>"
            + "The committee met on Tuesday and agreed the budget for the new library building. " * 12
            + "</p></div><script>var x = 1;</script></body></html>")
    flag = CurationPipeline(["html_flag"])
    assert flag.process([html, "plain text with <b> one tag"])[2] == ["html", None]
    extracted = CurationPipeline(["html_extract"]).process([html])[0][0]
    assert "committee met on Tuesday" in extracted and "<p>" not in extracted and "var x" not in extracted


def test_curate_job_writes_data_counts_and_card(tmp_path):
    from hf_ext.config import load_recipe, parse_config
    from hf_ext.curate.job import CurateConfig, run_curate

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "dclm_baseline.yaml")
    recipe.pop("job")
    recipe.update(dataset=str(C4_PATH), pipeline="dclm_heuristics", output_dir=str(tmp_path / "out"), dedup=["exact", "minhash", "bff"],
                  dedup_options={"bff": {"expected_ngrams": 200_000}}, max_docs=60)
    config = parse_config(CurateConfig, recipe)
    metrics = run_curate(config)
    assert metrics["total"] == 60 and metrics["kept"] == 60 - sum(metrics["drop_counts"].values()) - sum(metrics["dedup"].values())
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| `page_length` |" in card and "dclm_heuristics" in card
    assert metrics["language_id_model"].startswith("fastText lid.176.ftz (quantised") and "lid.176.ftz (quantised" in card
    import datasets

    kept = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    assert len(kept) == metrics["kept"]


def test_audit_job(tmp_path):
    from hf_ext.curate.job import AuditConfig, run_audit

    metrics = run_audit(AuditConfig(dataset=str(C4_PATH), url_column="url", derived_groups=["url_site_type"], filters=["gopher_quality"],
                                    n_boot=200, min_group_size=3, output_dir=str(tmp_path / "audit")))
    report = metrics["reports"]["gopher_quality/url_site_type"]
    assert sum(g["n"] for g in report["groups"]) <= 150 and 0 < report["overall"] < 1
    assert (tmp_path / "audit" / "retention_gopher_quality_url_site_type.png").is_file()
    assert "Audit: gopher_quality by url_site_type" in (tmp_path / "audit" / "README.md").read_text()
    with pytest.raises(InputError, match="derived group"):
        AuditConfig(dataset="x", derived_groups=["planet"])


def test_dedup_options_are_checked_by_the_dedup_classes_and_old_keys_are_refused(tmp_path):
    from hf_ext.config import parse_config
    from hf_ext.curate.dedup import MinHashDeduplicator
    from hf_ext.curate.job import CurateConfig, run_curate
    from hf_ext.errors import InputError, RecipeError

    base = {"dataset": str(C4_PATH), "pipeline": "dclm_heuristics", "max_docs": 40}
    with pytest.raises(RecipeError, match=r"`minhash_threshold` -> dedup_options: \{minhash: \{threshold"):
        parse_config(CurateConfig, {**base, "dedup": ["minhash"], "minhash_threshold": 0.5})
    with pytest.raises(RecipeError, match=r"`bff_ngram` -> dedup_options: \{bff: \{ngram"):
        parse_config(CurateConfig, base, ["--bff_ngram", "5"])
    with pytest.raises(InputError, match=r"dedup_options\.minhash \(MinHashDeduplicator's fields\).*thresold"):
        parse_config(CurateConfig, {**base, "dedup": ["minhash"], "dedup_options": {"minhash": {"thresold": 0.5}}})
    with pytest.raises(InputError, match=r"dedup_options\.bff.*threshold must be in \[0, 1\]"):
        parse_config(CurateConfig, {**base, "dedup": ["bff"], "dedup_options": {"bff": {"threshold": 1.5}}})
    with pytest.raises(InputError, match=r"dedup_options\.bff is set but 'bff' is not in dedup"):
        parse_config(CurateConfig, {**base, "dedup": ["minhash"], "dedup_options": {"bff": {"ngram": 5}}})
    with pytest.raises(InputError, match=r"dedup_options\.exact: only \['bff', 'minhash'\] take settings"):
        parse_config(CurateConfig, {**base, "dedup": ["exact"], "dedup_options": {"exact": {}}})

    # The job's MinHash is the class built from dedup_options: the same documents survive, and the
    # setting matters (at the default threshold 0.8 nothing here is a near duplicate).
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    texts = []
    for _ in range(12):
        doc = rng.sample(words, 60)
        texts += [" ".join(doc), " ".join(doc[:36] + rng.sample(words, 24))]  # a variant sharing 60% of its words
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t, "url": f"https://e.org/{i}"}) + "\n" for i, t in enumerate(texts)))
    expected = MinHashDeduplicator(threshold=0.3, ngram=1).dedup(texts)
    assert len(MinHashDeduplicator(ngram=1).dedup(texts)) == len(texts) > len(expected)
    config = parse_config(CurateConfig, {"dataset": str(path), "html": "off", "steps": ["page_length"],
                                         "step_options": {"page_length": {"min_words": 1}}, "dedup": ["minhash"],
                                         "dedup_options": {"minhash": {"threshold": 0.3, "ngram": 1}}, "output_dir": str(tmp_path / "out")})
    metrics = run_curate(config)
    assert metrics["drop_counts"].get("page_length", 0) == 0
    assert metrics["kept"] == len(expected) and metrics["dedup"]["minhash"] == len(texts) - len(expected)
