"""LESS benchmark: targeted selection precision, per-example gradient throughput, projection fidelity.

    python benchmarks/less.py [--quick] [--device cuda] --out FILE.json [--data-dir ../shared/data]
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
- grads_examples_per_s (batched torch.func per-example grads + block-wise projection, as the
  featurizer runs) vs grads_naive_examples_per_s (one backward per example + a dense,
  precomputed projection matrix), same model, checkpoint and examples.
- proj_abs_dcos_mean / _max: |cos(projected) − cos(full)| over pairs of real (unprojected)
  Adam gradient features at d = 8192.
- multi_target_precision: {family: {less, embedding, random}} and multi_target_mean: several T0
  task families held out in turn as the target. For each family one source dataset (e.g. rotten_tomatoes
  for sentiment; rows under 900 characters) is kept out of the pool and gives the target rows; the pool still holds the
  family's other sources (amazon_polarity, yelp, imdb, app_reviews), so a pick is a
  hit when it is of the same task type from another source. GSM8K, by contrast, has its own
  rows in the pool in a format no other row shares. multi_target_base_rate: each family's share
  of the pool.
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


def main() -> None:
    args = benchmark_args(__doc__.split("\n")[0], extra=lambda p: p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 avoids OpenMP contention on a shared machine)."),
        device=True, plan=paper_plan)
    torch.set_num_threads(args.threads)
    from datasets import Dataset

    from hf_ext.select.less import (GradientFeaturizer, RademacherProjector, build_datastore, checkpoint_weights,
                                    less_scores, select_top, tokenize_example)
    from hf_ext.select.less.warmup import LessWarmupConfig, run_less_warmup

    quick = args.quick
    sizes = {"gsm8k": 20, "alpaca": 140, "dolly": 100, "t0": 140} if quick else {"gsm8k": 60, "alpaca": 420, "dolly": 300, "t0": 420}
    n_target = 20 if quick else 40
    results: dict = {"quick": quick, "seed": args.seed, "threads": args.threads}
    work = Path(tempfile.mkdtemp(prefix="less-bench-"))

    with timed(results, "data_seconds"):
        pool_rows, target_rows, pretrain_instr, books, family_targets = load_data(args.data_dir, sizes, n_target, 300 if quick else 1500, args.seed)
    pool, target = Dataset.from_list(pool_rows), Dataset.from_list(target_rows)
    results |= {"pool_size": len(pool), "pool_sources": sizes, "target_size": len(target), "target_source": "gsm8k test"}

    with timed(results, "pretrain_seconds"):
        # Books are cut into paragraphs so packing mixes them with the instruction texts.
        paragraphs = [p for b in books for p in b.split("\n\n") if len(p) > 200][: 3000 if quick else 12000]
        base, n_params, losses = pretrain_tiny_lm(paragraphs + pretrain_instr, work, 150 if quick else 400, args.seed)
    results |= {"model": f"tiny Llama, {n_params / 1e6:.2f}M parameters, pretrained here",
                "pretrain_loss_first_last": [round(losses[0], 3), round(losses[-1], 3)] if losses else None}

    warm_cfg = LessWarmupConfig(
        model_name_or_path=base, output_dir=str(work / "warmup"), lora_r=16, lora_alpha=64, lora_dropout=0.1,
        learning_rate=1e-3, num_train_epochs=2 if quick else 4, per_device_train_batch_size=8, gradient_accumulation_steps=1,
        max_length=256, seed=args.seed, dataloader_pin_memory=False, use_cpu=args.device == "cpu",
    )
    with timed(results, "warmup_seconds"):
        warm = run_less_warmup(warm_cfg, dataset=pool)
    ckpts = warm["checkpoints"]
    weights = checkpoint_weights(ckpts)
    results |= {"warmup_size": warm["warmup_size"], "lora_r": warm_cfg.lora_r, "checkpoints": len(ckpts),
                "checkpoint_weights": [round(float(w), 4) for w in weights], "warmup_learning_rate": warm_cfg.learning_rate}

    feat = lambda kind, **kw: GradientFeaturizer(base, ckpts, kind=kind, proj_dim=8192, seed=args.seed, max_length=256,
                                                 micro_batch_size=16, cache_mb=3072, device=args.device, **kw)
    with timed(results, "datastore_seconds"):
        pool_store = build_datastore(pool, feat("adam"), work / "pool_grads", chunk_size=256, batch_size=128)
        target_store = build_datastore(target, feat("sgd"), work / "target_grads", chunk_size=256, batch_size=128)
    results["num_lora_params"] = feat("sgd").num_lora_params
    results["pool_skipped_no_response_tokens"] = pool_store.num_skipped

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
    family_of = {n: f for f, (_, others) in T0_FAMILIES.items() for n in others}
    pool_family = np.array([family_of.get(r.get("t0_dataset")) if r["source"] == "t0" else None for r in pool_rows], dtype=object)
    multi, base_rates = {}, {}
    with timed(results, "multi_target_seconds"):
        for family, rows in family_targets.items():
            hit = pool_family == family
            store = build_datastore(Dataset.from_list([{k: r[k] for k in ("instruction", "input", "output")} for r in rows]),
                                    feat("sgd"), work / f"target_{family}", chunk_size=256, batch_size=128)
            if not store.valid.any():
                multi[family] = None  # no target row keeps response tokens at max_length 256
                continue
            f_picks = select_top(less_scores(pool_store.features_array(), store.features_array()[store.valid], weights), k=k,
                                 valid=pool_store.valid)
            e_family = embed([text(r) for r in rows])
            f_emb = select_top(less_scores(e_pool, e_family, [1.0]), k=k)
            multi[family] = {"less": float(hit[f_picks].mean()), "embedding": float(hit[f_emb].mean()), "random": float(hit[rand].mean())}
            base_rates[family] = float(hit.mean())
    results |= {
        "multi_target_precision": multi,
        "multi_target_mean": {m: float(np.mean([v[m] for v in multi.values() if v])) for m in ("less", "embedding", "random")},
        "multi_target_base_rate": base_rates,
        "multi_target_families": {f: {"target": t, "pool_sources": list(o)} for f, (t, o) in T0_FAMILIES.items()},
        "multi_target_n_target": n_target,
    }

    # Throughput: the same 64 examples and checkpoint, batched vs naive.
    f = feat("adam")
    state = f._load()
    rows = [tokenize_example(state["tokenizer"], f.format, pool_rows[i]) for i in range(56)]
    rows = [r for r in rows if any(t != -100 for t in r["labels"][1:])]
    entry = state["per_ckpt"][-1]
    one_ckpt = GradientFeaturizer(base, ckpts[-1:], kind="adam", proj_dim=8192, seed=args.seed, max_length=256, micro_batch_size=16,
                                  cache_mb=3072, device=args.device)
    one_ckpt.features(rows[:4])  # load the model, draw the projection blocks once (the naive side gets its matrix free too)
    dense = one_ckpt._load()["projector"].dense_matrix().to(args.device)
    batched, _ = one_ckpt.features(rows)
    naive = naive_grads(one_ckpt, rows, one_ckpt._load()["per_ckpt"][0], dense)
    # Best of 3 each: the machine is shared, and the least disturbed run is the fairest.
    t_batched = best_of(lambda: one_ckpt.features(rows), repeats=3)
    t_naive = best_of(lambda: naive_grads(one_ckpt, rows, one_ckpt._load()["per_ckpt"][0], dense), repeats=3)
    results |= {
        "grads_examples": len(rows),
        "grads_examples_per_s": len(rows) / t_batched,
        "grads_naive_examples_per_s": len(rows) / t_naive,
        "grads_speedup": t_naive / t_batched,
        "grads_batched_vs_naive_max_abs_diff": float(np.abs(batched[:, 0] - naive.numpy()).max()),
    }

    # Projection fidelity over pairs of real, unprojected Adam features.
    full = []
    for s in range(0, 48, 16):
        chunk = rows[s : s + 16]
        width = max(len(r["input_ids"]) for r in chunk)
        pad = state["tokenizer"].pad_token_id
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        lab = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in chunk])
        from hf_ext.select.less import adam_feature

        g = f.per_example_grads(ids, lab, entry["params"])
        full.append(adam_feature(g, entry["m"], entry["v"], entry["betas"], entry["eps"]))
    full = torch.nn.functional.normalize(torch.cat(full), dim=1)
    projected = torch.nn.functional.normalize(RademacherProjector(full.shape[1], 8192, seed=args.seed)(full), dim=1)
    iu = np.triu_indices(len(full), 1)
    dcos = np.abs((projected @ projected.T).numpy()[iu] - (full @ full.T).numpy()[iu])
    results |= {"proj_dim": 8192, "proj_pairs": int(len(iu[0])), "proj_abs_dcos_mean": float(dcos.mean()),
                "proj_abs_dcos_max": float(dcos.max()), "full_cos_mean": float((full @ full.T).numpy()[iu].mean())}

    results["targets"] = {
        "target_precision_ge_5x_base_rate": results["target_precision"] >= 5 * base_rate,
        "grads_ge_4x_naive": results["grads_examples_per_s"] >= 4 * results["grads_naive_examples_per_s"],
        "proj_abs_dcos_mean_le_0.01": results["proj_abs_dcos_mean"] <= 0.01,
    }
    results["peak_rss_gb"] = peak_rss_bytes() / 2**30
    write_results(args.out, results)


if __name__ == "__main__":
    main()
