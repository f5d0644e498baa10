"""Critic-RM stage 1 on real text: SmolLM2-135M-Instruct critiques AlpacaEval pairs.

Samples `--num-critiques` critiques per response with the packaged SmolLM2-135M-Instruct
(through hf_ext.models, offline), parses their scores and runs the consistency filter,
reporting how many critiques and rows survive each step. The generation cache makes the run
resumable; the critiques are written as JSONL for the CPU recipe and the tests.

    python benchmarks/reward_critiques.py [--quick] --out results/reward_critiques.json \
        --critiques-out results/alpaca_eval_smollm2_critiques.jsonl
"""

from __future__ import annotations

import time

from _common import benchmark_args, peak_rss_bytes, write_results


def main() -> None:
    args = benchmark_args(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--pairs", type=int, default=32, help="Preference pairs to critique."),
        p.add_argument("--num-critiques", type=int, default=1, help="Critiques per response."),
        p.add_argument("--max-chars", type=int, default=500, help="Keep pairs whose prompt + longest response is shorter."),
        p.add_argument("--cache", default="outputs/reward_critiques_cache.jsonl", help="Resumable generation cache."),
        p.add_argument("--critiques-out", default=None, help="Write the critiqued pairs here (JSONL)."),
        p.add_argument("--batch-size", type=int, default=16, help="Conversations per generate call."),
        p.add_argument("--dtype", default=None, help="Generation precision, e.g. bfloat16 (default: the checkpoint's)."),
    ))
    from datasets import load_dataset

    from hf_ext.critique import TransformersBackend, consistency_filter, generate_critiques
    from hf_ext.critique.data import alpaca_eval_pairs, split_by_prompt

    pairs = args.pairs if not args.quick else 8
    raw = load_dataset("json", data_files=str(args.data_dir / "preference" / "alpaca_eval1_gpt4_annotations.jsonl.gz"), split="train")
    train, _ = split_by_prompt(alpaca_eval_pairs(raw), 0.2, seed=args.seed)
    short = train.filter(lambda p, c, r: len(p) + max(len(c), len(r)) < args.max_chars, input_columns=["prompt", "chosen", "rejected"])
    subset = short.shuffle(seed=args.seed).select(range(min(pairs, len(short))))
    backend = TransformersBackend("HuggingFaceTB/SmolLM2-135M-Instruct", max_new_tokens=64, temperature=0.8,
                                  top_p=0.95, batch_size=args.batch_size, seed=args.seed, dtype=args.dtype)
    start = time.perf_counter()
    critiqued, gen_stats = generate_critiques(subset, backend, num_critiques=args.num_critiques, cache_path=args.cache)
    seconds = time.perf_counter() - start
    kept, filter_stats = consistency_filter(critiqued)
    if args.critiques_out:
        critiqued.to_json(args.critiques_out, lines=True, force_ascii=False)
    write_results(args.out, {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "pairs": len(subset), "num_critiques": args.num_critiques,
        "generation": gen_stats, "generation_seconds": seconds,
        "seconds_per_request": seconds / max(1, gen_stats["requests"]),
        "consistency_filter": filter_stats, "peak_rss_bytes": peak_rss_bytes(),
    })


if __name__ == "__main__":
    main()
