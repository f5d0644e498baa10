"""Merging benchmark: streaming memory, time-vector interpolation, X-ELM vs dense.

    python benchmarks/merge.py [--quick] --out FILE.json [--skip-memory] [--skip-time-vectors] [--skip-xelm]

1. Memory: two randomly initialised Llama models of ≥ 300M parameters are written as safetensors
   shards; their interpolation 0.3·θ_a + 0.7·θ_b (= θ_pre + α·τ_a + (1 − α)·τ_b) is made by
   ``hf_ext.hub.load_interpolation(..., output_dir=...)`` (streamed tensor by tensor) and by the
   load-everything baseline (two ``from_pretrained``, average the state dicts, ``save_pretrained``),
   each in its own subprocess so the peak RSS is that merge's. Keys: merge_peak_rss_bytes,
   model_bytes, merge_seconds, baseline_merge_seconds, baseline_peak_rss_bytes (+ ratios).
2. Time vectors (``time/wmt_newstest_en_by_year``): interp_best_loss_mid vs endpoint_best_loss_mid.
3. X-ELM (``multilingual/wmt_newstest_monolingual``): xelm_ppl and dense_ppl per language.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_args, write_results  # noqa: E402

STREAMING = """
import json, resource, sys, time
from hf_ext.hub import load_interpolation
start = time.perf_counter()
load_interpolation(sys.argv[1], sys.argv[2], 0.3, output_dir=sys.argv[3], hub_ids=("bench/random-llama-a", "bench/random-llama-b"))
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

BASELINE = """
import json, resource, sys, time
import torch
from transformers import AutoModelForCausalLM
start = time.perf_counter()
a = AutoModelForCausalLM.from_pretrained(sys.argv[1])
b = AutoModelForCausalLM.from_pretrained(sys.argv[2])
sb = b.state_dict()
with torch.no_grad():
    for name, p in a.state_dict().items():
        p.mul_(0.3).add_(sb[name], alpha=0.7)
a.save_pretrained(sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


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
    config.save_pretrained(folder)
    return sum(4 * (s[0] * (s[1] if len(s) > 1 else 1)) for s in shapes.values())


def _subprocess(script: str, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_benchmark(quick: bool) -> dict:
    # ≥ 300M parameters in both modes (the bar); --quick only shrinks the replications.
    dims = {"layers": 20, "hidden": 1024, "intermediate": 2816, "vocab": 32000}
    with tempfile.TemporaryDirectory(dir=os.environ.get("HF_EXT_BENCH_TMP")) as tmp:
        root = Path(tmp)
        model_bytes = write_random_llama(root / "a", 1, **dims)
        write_random_llama(root / "b", 2, **dims)
        streaming = _subprocess(STREAMING, str(root / "a"), str(root / "b"), str(root / "streamed"))
        baseline = _subprocess(BASELINE, str(root / "a"), str(root / "b"), str(root / "baseline"))
        # both outputs are the same model
        from hf_ext.merge import WeightSource

        s, b = WeightSource(root / "streamed"), WeightSource(root / "baseline")
        key = "model.layers.3.mlp.up_proj.weight"
        max_diff = float((s.get(key) - b.get(key)).abs().max())
    return {
        "model_params": model_bytes // 4,
        "model_bytes": model_bytes,
        "merge_seconds": streaming["seconds"],
        "merge_peak_rss_bytes": streaming["peak_rss_bytes"],
        "baseline": "transformers load-everything (2× from_pretrained, average, save_pretrained)",
        "baseline_merge_seconds": baseline["seconds"],
        "baseline_peak_rss_bytes": baseline["peak_rss_bytes"],
        "merge_peak_rss_over_model_bytes": streaming["peak_rss_bytes"] / model_bytes,
        "baseline_peak_rss_over_model_bytes": baseline["peak_rss_bytes"] / model_bytes,
        "merge_speedup_vs_baseline": baseline["seconds"] / streaming["seconds"],
        "streamed_vs_baseline_max_abs_diff": max_diff,
        "target_peak_rss_le_1_3x_model": streaming["peak_rss_bytes"] <= 1.3 * model_bytes,
        "target_peak_rss_below_baseline": streaming["peak_rss_bytes"] < baseline["peak_rss_bytes"],
    }


def time_vector_benchmark(args) -> dict:
    from hf_ext.adapters.time_vector.experiment import TimeVectorExperimentConfig, run_time_vectors

    size = (dict(train_sentences=400, eval_sentences=100, pretrain_chars=200_000, pretrain_steps=60, finetune_steps=20,
                 hidden_size=64, num_layers=2, vocab_size=1024, batch_size=8, block_size=64, alphas=[0, 0.25, 0.5, 0.75, 1])
            if args.quick else
            dict(train_sentences=1000, eval_sentences=150, pretrain_chars=400_000, pretrain_steps=200, finetune_steps=60,
                 hidden_size=96, num_layers=2, vocab_size=2048, batch_size=8, block_size=64))  # fmt: skip
    config = TimeVectorExperimentConfig(
        data_file=str(args.data_dir / "time" / "wmt_newstest_en_by_year.jsonl.gz"),
        pretrain_file=str(args.data_dir / "lm_corpus" / "gutenberg_books.jsonl.gz"),
        years=[2012, 2013, 2014, 2015, 2016], seed=args.seed, save_vectors=False,
        output_dir=str(Path(tempfile.gettempdir()) / "hf_ext_bench_time_vectors"), **size,
    )  # fmt: skip
    m = run_time_vectors(config)
    keep = ("interp_best_loss_mid", "endpoint_best_loss_mid", "interp_best_interior_loss_mid", "own_year_loss_mid",
            "interp_best_alpha_mid", "base_loss", "year_model_loss", "interpolation_loss", "params", "elapsed_seconds")  # fmt: skip
    out = {f"tv_{k}" if k not in ("interp_best_loss_mid", "endpoint_best_loss_mid") else k: m[k] for k in keep}
    out["interpolation_beats_endpoints"] = m["interp_best_loss_mid"] < m["endpoint_best_loss_mid"]
    return out


def xelm_benchmark(args) -> dict:
    from hf_ext.merge.xelm import XELMConfig, run_xelm

    size = (dict(languages=["de", "fr", "cs", "ru"], train_sentences=300, eval_sentences=50, seed_steps=40, expert_steps=40,
                 hidden_size=64, num_layers=2, vocab_size=1024, batch_size=8, block_size=64)
            if args.quick else
            dict(languages=["de", "fr", "cs", "ru", "fi"], train_sentences=1000, eval_sentences=100, seed_steps=200,
                 expert_steps=200, hidden_size=96, num_layers=2, vocab_size=4096, batch_size=8, block_size=64))  # fmt: skip
    config = XELMConfig(data_file=str(args.data_dir / "multilingual" / "wmt_newstest_monolingual.jsonl.gz"), experts=[1, 2, 4],
                        seed=args.seed, output_dir=str(Path(tempfile.gettempdir()) / "hf_ext_bench_xelm"), **size)  # fmt: skip
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
        p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on an oversubscribed machine).")])  # fmt: skip
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory subprocesses too
    results: dict = {"quick": args.quick, "seed": args.seed, "threads": args.threads}
    start = time.perf_counter()
    if not args.skip_memory:
        results.update(memory_benchmark(args.quick))
    if not args.skip_time_vectors:
        results.update(time_vector_benchmark(args))
    if not args.skip_xelm:
        results.update(xelm_benchmark(args))
    results["total_seconds"] = time.perf_counter() - start
    write_results(args.out, results)


if __name__ == "__main__":
    main()
