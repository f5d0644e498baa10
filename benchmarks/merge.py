"""Merging benchmark: hf_ext beside mergekit (speed, memory, identical outputs), time vectors, X-ELM vs dense.

    python benchmarks/merge.py [--quick] --out FILE.json [--skip-memory] [--skip-time-vectors] [--skip-xelm] [--merge-methods ties]

1. Beside mergekit: two (TIES: three, with the base) randomly initialised fp32 Llama models of ≥ 300M
   parameters are written as 400 MB safetensors shards; the same mergekit config (linear 0.3/0.7, and TIES
   with weights 0.3/0.7, density 0.5) is merged by ``mergekit-yaml CONFIG OUT`` and by
   ``hf-ext merge CONFIG --output_dir OUT``, each a fresh process (wall time and peak RSS of the whole
   command, imports included), with 1 thread and with all cores (``OMP_NUM_THREADS``; mergekit also gets
   ``--num-threads``). Every tensor of the two outputs is compared. Keys per run under ``beside_mergekit``
   (``linear/threads_1`` …): mergekit_seconds, mergekit_peak_rss_bytes, merge_seconds,
   merge_peak_rss_bytes, outputs_identical, max_abs_diff, and the ratios; the top-level keys are the
   linear, all-threads run. Targets: merge_seconds ≤ mergekit_seconds, merge_peak_rss ≤ 0.6× mergekit's.
   mergekit (LGPL-3.0) is a benchmark-only reference: ``pip install 'hf-ext[mergekit]'``.
   Memory profile of hf_ext's TIES (per 131 MB 32000x1024 tensor, T): the base and both task vectors (3T) plus the
   trim of one task vector; where magnitudes tie at the threshold (about half of such tensors) the trim is
   mergekit's full argsort, whose int64 indices and the int64 arange torch fills them from are 4T; it sorts the
   task vector's own memory (sign bits aside), so the peak is ~7.7T (was ~9.3T with torch.kthvalue's copy +
   int64 index and argsort's value copy). Peak RSS does not depend on the thread count beyond ~50 MB either way.
2. Time vectors (``time/wmt_newstest_en_by_year``): interp_best_loss_mid vs endpoint_best_loss_mid.
3. X-ELM (``multilingual/wmt_newstest_monolingual``): xelm_ppl and dense_ppl per language.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_args, write_results  # noqa: E402

# Runs one command and reports its wall time and peak RSS (the child's, from the kernel's rusage).
MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if proc.returncode:
    sys.exit(proc.stderr[-4000:])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""

CONFIGS = {
    "linear": {"merge_method": "linear", "dtype": "float32",
               "models": [{"model": "a", "parameters": {"weight": 0.3}}, {"model": "b", "parameters": {"weight": 0.7}}]},
    "ties": {"merge_method": "ties", "base_model": "base", "dtype": "float32",
             "models": [{"model": "a", "parameters": {"weight": 0.3, "density": 0.5}},
                        {"model": "b", "parameters": {"weight": 0.7, "density": 0.5}}]},
}


def write_random_llama(folder: Path, seed: int, *, layers: int, hidden: int, intermediate: int, vocab: int) -> int:
    """A randomly initialised LlamaForCausalLM written shard by shard (never whole in memory); returns its bytes."""
    import torch
    from transformers import LlamaConfig

    from hf_ext.merge import SafetensorsWriter

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, tie_word_embeddings=False)  # fmt: skip
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)})
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (hidden, hidden)
        shapes.update({p + "mlp.gate_proj.weight": (intermediate, hidden), p + "mlp.up_proj.weight": (intermediate, hidden),
                       p + "mlp.down_proj.weight": (hidden, intermediate)})  # fmt: skip
    layout = [(k, s, torch.float32) for k, s in sorted(shapes.items())]
    gen = torch.Generator().manual_seed(seed)
    with SafetensorsWriter(folder, layout, max_shard_bytes=400 * 2**20) as writer:
        for key, shape, _ in layout:
            writer.write(key, torch.ones(shape) if key.endswith("norm.weight") else 0.02 * torch.randn(shape, generator=gen))
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(folder)
    return sum(4 * (s[0] * (s[1] if len(s) > 1 else 1)) for s in shapes.values())


def _measure(cmd: list[str], cwd: Path, threads: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(a: Path, b: Path) -> tuple[bool, float]:
    from hf_ext.merge import WeightSource

    sa, sb = WeightSource(a), WeightSource(b)
    if sorted(sa.keys()) != sorted(sb.keys()):
        return False, float("inf")
    identical, diff = True, 0.0
    for key in sa.keys():
        x, y = sa.get(key), sb.get(key)
        identical &= bool(x.dtype == y.dtype and torch_equal(x, y))
        diff = max(diff, float((x.double() - y.double()).abs().max()))
    return identical, diff


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def mergekit_benchmark(quick: bool, methods: list[str] | None = None) -> dict:
    """The same mergekit configs through mergekit-yaml and hf-ext merge, 1 thread and all threads."""
    mergekit_yaml = shutil.which("mergekit-yaml") or str(Path(sys.executable).with_name("mergekit-yaml"))
    hf_ext_cli = [sys.executable, "-m", "hf_ext.cli"]
    if not Path(mergekit_yaml).exists():
        return {"beside_mergekit": "skipped: mergekit is not installed (pip install 'hf-ext[mergekit]')"}
    # ≥ 300M parameters in both modes (the bar); --quick runs only the linear merge.
    dims = {"layers": 20, "hidden": 1024, "intermediate": 2816, "vocab": 32000}
    threads_all = os.cpu_count() or 1
    runs: dict = {}
    import yaml

    with tempfile.TemporaryDirectory(dir=os.environ.get("HF_EXT_BENCH_TMP")) as tmp:
        root = Path(tmp)
        model_bytes = write_random_llama(root / "a", 1, **dims)
        write_random_llama(root / "b", 2, **dims)
        methods = methods or (["linear"] if quick else ["linear", "ties"])
        if "ties" in methods:
            write_random_llama(root / "base", 0, **dims)
        for method in methods:
            (root / f"{method}.yml").write_text(yaml.safe_dump(CONFIGS[method], sort_keys=False))
            ids = ["bench/random-llama-base", "bench/random-llama-a", "bench/random-llama-b"] if method == "ties" else \
                ["bench/random-llama-a", "bench/random-llama-b"]
            for threads in sorted({1, threads_all}):
                mk, ours = root / "out_mergekit", root / "out_hf_ext"
                for out in (mk, ours):
                    shutil.rmtree(out, ignore_errors=True)
                m = _measure([mergekit_yaml, f"{method}.yml", str(mk), "--no-copy-tokenizer", "--no-write-model-card",
                              "--num-threads", str(threads), "--out-shard-size", "100M"], root, threads)  # fmt: skip
                h = _measure([*hf_ext_cli, "merge", f"{method}.yml", "--output_dir", str(ours), "--max_shard_size", "400MB",
                              "--input_hub_ids", *ids], root, threads)  # fmt: skip
                identical, diff = _compare(mk, ours)
                runs[f"{method}/threads_{threads}"] = {
                    "threads": threads, "mergekit_seconds": m["seconds"], "mergekit_peak_rss_bytes": m["peak_rss_bytes"],
                    "merge_seconds": h["seconds"], "merge_peak_rss_bytes": h["peak_rss_bytes"],
                    "outputs_identical": identical, "max_abs_diff": diff,
                    "merge_seconds_over_mergekit": h["seconds"] / m["seconds"],
                    "merge_peak_rss_over_mergekit": h["peak_rss_bytes"] / m["peak_rss_bytes"],
                    "target_seconds_le_mergekit": h["seconds"] <= m["seconds"],
                    "target_peak_rss_le_0_6x_mergekit": h["peak_rss_bytes"] <= 0.6 * m["peak_rss_bytes"],
                }  # fmt: skip
    headline = runs[f"{methods[0]}/threads_{threads_all}"]
    keys = ("mergekit_seconds", "mergekit_peak_rss_bytes", "merge_seconds", "merge_peak_rss_bytes", "outputs_identical")
    return {"model_params": model_bytes // 4, "model_bytes": model_bytes, "mergekit_version": _version("mergekit"),
            **{k: headline[k] for k in keys}, "beside_mergekit": runs,
            "outputs_identical_all": all(r["outputs_identical"] for r in runs.values())}  # fmt: skip


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def time_vector_benchmark(args) -> dict:
    from trainers.jobs.time_vectors import TimeVectorExperimentConfig, run_time_vectors

    size = (dict(train_sentences=400, eval_sentences=100, pretrain_chars=200_000, pretrain_steps=60, finetune_steps=20,
                 hidden_size=64, num_layers=2, vocab_size=1024, batch_size=8, block_size=64, alphas=[0, 0.25, 0.5, 0.75, 1])
            if args.quick else
            dict(train_sentences=1000, eval_sentences=150, pretrain_chars=400_000, pretrain_steps=200, finetune_steps=60,
                 hidden_size=96, num_layers=2, vocab_size=2048, batch_size=8, block_size=64))  # fmt: skip
    config = TimeVectorExperimentConfig(
        data_file=str(args.data_dir / "time" / "wmt_newstest_en_by_year.jsonl.gz"),
        pretrain_file=str(args.data_dir / "lm_corpus" / "gutenberg_books.jsonl.gz"),
        years=[2012, 2013, 2014, 2015, 2016], seed=args.seed, save_vectors=False,
        output_dir=str(Path(tempfile.mkdtemp(prefix="hf_ext_bench_time_vectors-")) / "out"), **size,
    )  # fmt: skip
    m = run_time_vectors(config)
    keep = ("interp_best_loss_mid", "endpoint_best_loss_mid", "interp_best_interior_loss_mid", "own_year_loss_mid",
            "interp_best_alpha_mid", "base_loss", "year_model_loss", "interpolation_loss", "params", "elapsed_seconds")  # fmt: skip
    out = {f"tv_{k}" if k not in ("interp_best_loss_mid", "endpoint_best_loss_mid") else k: m[k] for k in keep}
    out["interpolation_beats_endpoints"] = m["interp_best_loss_mid"] < m["endpoint_best_loss_mid"]
    return out


def xelm_benchmark(args) -> dict:
    from trainers.jobs.xelm import XELMConfig, run_xelm

    size = (dict(languages=["de", "fr", "cs", "ru"], train_sentences=300, eval_sentences=50, seed_steps=40, expert_steps=40,
                 hidden_size=64, num_layers=2, vocab_size=1024, batch_size=8, block_size=64)
            if args.quick else
            dict(languages=["de", "fr", "cs", "ru", "fi"], train_sentences=1000, eval_sentences=100, seed_steps=200,
                 expert_steps=200, hidden_size=96, num_layers=2, vocab_size=4096, batch_size=8, block_size=64))  # fmt: skip
    config = XELMConfig(data_file=str(args.data_dir / "multilingual" / "wmt_newstest_monolingual.jsonl.gz"), experts=[1, 2, 4],
                        seed=args.seed, output_dir=str(Path(tempfile.mkdtemp(prefix="hf_ext_bench_xelm-")) / "out"), **size)  # fmt: skip
    m = run_xelm(config)
    out = {"xelm_ppl": m["xelm_ppl"], "dense_ppl": m["dense_ppl"], "seed_ppl": m["seed_ppl"], "xelm_k": m["xelm_k"],
           "xelm_mean_ppl": m["mean_ppl"], "xelm_by_k": {k: {kk: v[kk] for kk in ("bayesian_ppl", "cluster_router_ppl", "cluster_composition") if kk in v}
                                                         for k, v in m["by_k"].items()},
           "xelm_params_per_model": m["params_per_model"], "xelm_elapsed_seconds": m["elapsed_seconds"]}  # fmt: skip
    out["ensemble_beats_dense_languages"] = [lang for lang in m["xelm_ppl"] if m["xelm_ppl"][lang] < m["dense_ppl"][lang]]
    return out


def main() -> None:
    args = benchmark_args(__doc__.splitlines()[0], extra=lambda p: [
        p.add_argument("--skip-memory", action="store_true"), p.add_argument("--skip-time-vectors", action="store_true"),
        p.add_argument("--skip-xelm", action="store_true"),
        p.add_argument("--merge-methods", nargs="+", choices=sorted(CONFIGS), default=None, help="Only these rows beside mergekit (default: linear and ties; --quick: linear)."),
        p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on an oversubscribed machine).")])  # fmt: skip
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory subprocesses too
    results: dict = {"quick": args.quick, "seed": args.seed, "threads": args.threads}
    start = time.perf_counter()
    if not args.skip_memory:
        results.update(mergekit_benchmark(args.quick, args.merge_methods))
    if not args.skip_time_vectors:
        results.update(time_vector_benchmark(args))
    if not args.skip_xelm:
        results.update(xelm_benchmark(args))
    results["total_seconds"] = time.perf_counter() - start
    write_results(args.out, results)


if __name__ == "__main__":
    main()
