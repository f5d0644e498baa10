"""Branch-Train-Stitch on CPU: stitched model vs seed, experts, model soup and a BTM-style ensemble.

    python benchmarks/stitch.py [--quick] [--device cuda] --out FILE.json [--data-dir ../shared/data]
    python benchmarks/stitch.py --plan [--device cuda]   # cost of BTS with 3 × 3B experts, nothing run

Runs the ``bts`` job of recipes/bts_tiny.yaml (``--quick``: fewer steps and texts, same model
geometry) and measures, in the same run:

- ``loss``: {model: {domain: held-out loss}} including ``mixed`` (the 15/15/15/55-weighted mean);
- ``step0_max_abs_logit_diff``: a freshly initialised stitched model vs the seed;
- ``trainable_params`` vs ``expected_trainable_params`` = K·(2n+1)·d²;
- ``checkpoint_bytes`` (one StitchTrainer checkpoint folder, optimizer state included),
  ``checkpoint_model_bytes`` (its stitch weights + config) and ``seed_bytes``;
- ``step_seconds_stitch`` (one stitch-training step) vs ``step_seconds_forward_all`` (one
  forward of the seed and every expert on the same batch).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import benchmark_args, best_of, peak_rss_bytes, plan_flop_rate, write_results  # noqa: E402

QUICK = {"max_texts": 1500, "eval_max_texts": 30, "seed_steps": 200, "expert_steps": 60}
QUICK_STITCH_STEPS = 100


def _folder_bytes(folder: Path, names: set[str] | None = None) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and (names is None or p.name in names))


def paper_plan(args) -> list:
    """BTS at paper scale: a Llama-3.2-1B seed stitched to 3 frozen Llama-3.2-3B experts."""
    from hf_ext.planning import LLAMA_3_2_1B, LLAMA_3_2_3B, ModelCost, Plan, meta_model

    seed, expert = ModelCost.of(meta_model(LLAMA_3_2_1B)), ModelCost.of(meta_model(LLAMA_3_2_3B))
    n_experts, stitch_layers, tokens, context, batch_tokens = 3, 4, 1_000_000_000, 2048, 16 * 2048
    # Per stitched layer and expert: a map into the expert's width and one back (d_seed × d_expert each).
    stitch_params = n_experts * stitch_layers * 2 * seed.hidden_size * expert.hidden_size
    forward = seed.flops_per_token(context, with_head=True) + n_experts * expert.flops_per_token(context)
    # Backward: the seed's full (2×) and, through the frozen experts, activation gradients only (1×).
    step = forward + 2 * seed.flops_per_token(context, with_head=True) + n_experts * expert.flops_per_token(context)
    layers_total = seed.layers + n_experts * expert.layers
    return [Plan("BTS: Llama-3.2-1B seed + 3 × Llama-3.2-3B experts (frozen), stitch training",
                 flops=step * tokens, flop_rate=plan_flop_rate(args.device),
                 memory_bytes={"weights_bf16": 2 * (seed.params + n_experts * expert.params),
                               "stitch_adamw_fp32": 16 * stitch_params,
                               "activations_bf16_checkpointed": 2 * batch_tokens * layers_total * expert.hidden_size},
                 assumptions={"training_tokens": tokens, "context": context, "tokens_per_step": batch_tokens,
                              "stitch_layers_per_expert": stitch_layers, "stitch_params": stitch_params,
                              "seed_params": seed.params, "expert_params": expert.params})]


def main() -> None:
    def extra(parser):
        parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                            help='Override BTSConfig fields of the recipe, e.g. --set num_layers=4 \'stitch_training={"max_steps": 60}\'.')

    args = benchmark_args(__doc__.splitlines()[0], extra, device=True, plan=paper_plan)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ext.adapters.stitch import CONFIG_NAME, WEIGHTS_NAME, StitchedModel
    from hf_ext.config import load_recipe, parse_config
    from hf_ext.lm import pack_texts
    from trainers.jobs.bts import BTSConfig, load_domain_texts, run_bts
    from trainers.stitch import StitchTrainer, StitchTrainingConfig

    torch.manual_seed(args.seed)
    values = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "bts_tiny.yaml")
    values.pop("job")
    work = Path(tempfile.mkdtemp(prefix="bts_bench_"))
    values.update(output_dir=str(work / "run"), data_dir=str(args.data_dir), seed=args.seed, **(QUICK if args.quick else {}))
    if args.quick:
        values["stitch_training"] = {**values["stitch_training"], "max_steps": QUICK_STITCH_STEPS}
    values.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    config = parse_config(BTSConfig, values)
    run = run_bts(config)

    out = Path(config.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(out / "seed")
    seed = AutoModelForCausalLM.from_pretrained(out / "seed")
    experts = {n: AutoModelForCausalLM.from_pretrained(out / "experts" / n) for n in config.expert_data}
    layers, recipe_args = config.stitch_config(), config.stitch_training_args(work / "ckpt")
    stitch_args = StitchTrainingConfig(output_dir=str(work / "ckpt"), max_steps=2, save_steps=2, per_device_train_batch_size=config.batch_size,
                                       learning_rate=recipe_args.learning_rate, optim=recipe_args.optim, use_cpu=args.device == "cpu",
                                       seed=args.seed)  # the layers' structure is StitchedModel(seed, experts, layers)'s
    fresh = StitchedModel(seed, experts, layers)
    texts = load_domain_texts(Path(config.data_dir) / config.expert_data["math"], config.expert_templates["math"])[-200:]
    blocks = pack_texts(tokenizer, texts, config.block_size)
    fresh.to(args.device)  # the seed and the experts are its submodules
    batch = torch.tensor(blocks[: config.batch_size]["input_ids"], device=args.device)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)

    # step 0: the stitched model equals the seed
    with torch.no_grad():
        step0 = (fresh(input_ids=batch).logits - seed(input_ids=batch).logits).abs().max().item()

    # one checkpoint of StitchTrainer, and the time of one training step vs one forward of all models
    trainer = StitchTrainer(model=fresh, args=stitch_args, train_dataset=blocks, processing_class=tokenizer)
    trainer.train()
    checkpoint = work / "ckpt" / "checkpoint-2"
    trainer.create_optimizer()
    optimizer = trainer.optimizer

    def stitch_step() -> None:
        fresh.train()
        loss = fresh(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    @torch.no_grad()
    def forward_all() -> None:
        for model in (seed, *experts.values()):
            model(input_ids=batch)
        sync()

    stitch_step()  # warm-up
    forward_all()
    t_stitch = best_of(stitch_step, 5)
    t_forward = best_of(forward_all, 5)

    d, n, k = seed.config.hidden_size, len(experts), len(fresh.stitch)
    seed_bytes = sum(p.stat().st_size for p in (out / "seed").glob("*.safetensors"))
    checkpoint_bytes = _folder_bytes(checkpoint)
    loss = run["loss"]
    results = {
        "quick": args.quick,
        "overrides": args.set,
        "loss": loss,
        "step0_max_abs_logit_diff": step0,
        "trainable_params": fresh.num_trainable_parameters(),
        "expected_trainable_params": k * (2 * n + 1) * d * d,
        "checkpoint_bytes": checkpoint_bytes,
        "checkpoint_model_bytes": _folder_bytes(checkpoint, {WEIGHTS_NAME, CONFIG_NAME}),
        "checkpoint_files": sorted(p.name for p in checkpoint.iterdir()),
        "seed_bytes": seed_bytes,
        "step_seconds_stitch": t_stitch,
        "step_seconds_forward_all": t_forward,
        "step_ratio": t_stitch / t_forward,
        "batch_shape": list(batch.shape),
        "seed_params": sum(p.numel() for p in seed.parameters()),
        "stitch_after": fresh.stitch_after,
        "timings": {key: run[key] for key in ("seed_seconds", "experts_seconds", "stitch_seconds", "eval_seconds", "elapsed_seconds")},
        "peak_rss_bytes": peak_rss_bytes(),
        "torch_threads": torch.get_num_threads(),
    }
    experts_mixed = [loss[m]["mixed"] for m in loss if m.startswith("expert_")]
    results["targets"] = {
        "stitched_mixed_below_seed": loss["stitched"]["mixed"] < loss["seed"]["mixed"],
        "stitched_mixed_below_every_expert": all(loss["stitched"]["mixed"] < v for v in experts_mixed),
        "step0_diff_le_1e-5": step0 <= 1e-5,
        "trainable_equals_expected": results["trainable_params"] == results["expected_trainable_params"],
        "checkpoint_le_5pct_seed": checkpoint_bytes <= 0.05 * seed_bytes,
        "checkpoint_model_le_5pct_seed": results["checkpoint_model_bytes"] <= 0.05 * seed_bytes,
        "stitch_step_le_3.5x_forward_all": t_stitch <= 3.5 * t_forward,
    }
    write_results(args.out, results)


if __name__ == "__main__":
    main()
