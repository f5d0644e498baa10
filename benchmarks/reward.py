"""Critic-RM vs a plain TRL RewardTrainer: same model, data and steps, in one run.

Both reward models start from the same causal LM (SmolLM2-135M-Instruct; a tiny Llama with
--quick) and read the same encoding of each (prompt, response): the critique prompt of
hf_ext.critique.prompts. The plain RM is TRL's RewardTrainer on a sequence classifier with the
same backbone; Critic-RM also trains on the stage-1 critiques (SmolLM2 critiques of AlpacaEval
pairs kept by the consistency filter). Reported:

- step_seconds_rm / step_seconds_critic_rm: median seconds per optimizer step (first step
  excluded), measured in this run;
- response_tokens_per_step: prompt + response tokens (incl. the prompt template) the plain RM
  processes per step; critique_tokens_per_step: the extra critique tokens Critic-RM trains on;
- target: step_seconds_critic_rm <= 1.25 * step_seconds_rm * (1 + critique/response tokens);
- acc_heldout_rm / acc_heldout_critic_rm: accuracy on held-out hh-rlhf harmless pairs (human
  labels, a different source than training); Critic-RM with critique-then-score (1 critique)
  and, as acc_heldout_critic_rm_fast, with the no-generation fast path.

Padding-free (packed) training, same model, same batches, same run, padded and packed steps
alternated (``--packing-rounds``) so load on the machine hits both alike:

- padded_tokens_per_s / packed_tokens_per_s and packed_speedup (target >= 1.5 on CPU): real
  (non-pad) tokens per second of optimizer steps (forward, backward, update; first step of each
  run excluded) of RankingRewardTrainer on AlpacaEval GPT-4-judged pairs from
  ``--data-dir``/preference (prompt + response, their natural length spread; rows over
  max_length dropped as TRL does); padding_fraction: share of the padded batches' positions
  that are padding;
- the same for CriticRMTrainer on the stage-1 critique rows (``critic_rm_*`` keys), whose
  shared critique prompt (~120 tokens) makes lengths far more alike.

What the packed step spent its time on (torch.profiler / cProfile of one RankingRewardTrainer
step, tiny Llama, 8 responses: 3101 real tokens packed vs 8 × 903 padded, torch's default 2
threads on the shared 2-core machine): packed was slower (0.74×) for two reasons.

- ``sdpa_packed`` cut the row by slicing q/k/v; a slice's backward writes its gradient into a
  zero tensor of the whole row, so each layer did (sequences × 3) full-row ``fill_`` + ``add_``:
  the packed backward took 6.6 s against the padded 4.0 s. Cutting with ``split`` (backward:
  one ``cat``) brought it to 3.3 s. transformers also built a (total × total) block mask that
  ``sdpa_packed`` never reads; the ``sdpa_packed`` mask function now skips it.
- With 2 intra-op threads on a 2-core machine running ~14 other processes, every torch op waits
  at its thread barrier for a descheduled thread: a (1, 3101, 64) multiply took 37 ms with 2
  threads and 0.03 ms with 1, an (8, 903, 64) one 33 ms vs 1.0 ms. Steps then cost (number of
  ops × ~25 ms) whatever the token count, so tokens/s measured the scheduler, not the work that
  packing removes. The benchmark therefore runs torch with one thread (``--torch-threads``).

Measured after both fixes (``--quick --packing-only``, 2 alternated rounds, 1 thread, shared
machine at load ~14): ranking 710.6 padded vs 2743.6 packed tokens/s (3.86×, padding_fraction
0.564); Critic-RM 1895.2 vs 3070.1 (1.62×, padding_fraction 0.259). Before: 230.4 vs 171.2
(0.74×) and 298.7 vs 254.8 (0.85×) with 2 threads and the sliced row.

    python benchmarks/reward.py [--quick] [--packing-only] [--device cuda] --out results/reward.json
    python benchmarks/reward.py --plan [--device cuda]   # cost of Critic-RM on Llama-3.1-8B, nothing run
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from _common import benchmark_args, peak_rss_bytes, plan_flop_rate, write_results

REPO = Path(__file__).resolve().parents[1]


class Recorder:
    """Wraps a collator: counts real and padded positions of every batch it builds."""

    def __init__(self, collator):
        self.collator, self.real, self.positions = collator, 0, 0

    def __call__(self, examples):
        batch = self.collator(examples)
        self.real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        self.positions += batch["input_ids"].numel()
        return batch


def packing_throughput(make_trainer, steps: int, rounds: int, prefix: str = "") -> dict:
    """Padded vs packed tokens/s of `make_trainer(padding_free, callbacks)`, runs alternated."""
    seconds, tokens, real, positions = {False: 0.0, True: 0.0}, {False: 0, True: 0}, {False: 0, True: 0}, {False: 0, True: 0}
    for _ in range(rounds):
        for packed in (False, True):
            timer = StepTimer()
            trainer = make_trainer(packed, [timer])
            trainer.data_collator = recorder = Recorder(trainer.data_collator)
            trainer.train()
            logged = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
            per_step = [b - a for a, b in zip([0] + logged[:-1], logged)]
            assert len(per_step) == steps == len(timer.seconds)
            seconds[packed] += sum(timer.seconds[1:])
            tokens[packed] += sum(per_step[1:])
            real[packed] += recorder.real
            positions[packed] += recorder.positions
            del trainer
    padded_tps, packed_tps = tokens[False] / seconds[False], tokens[True] / seconds[True]
    return {f"{prefix}padded_tokens_per_s": padded_tps, f"{prefix}packed_tokens_per_s": packed_tps,
            f"{prefix}packed_speedup": packed_tps / padded_tps, f"{prefix}padding_fraction": 1 - real[False] / positions[False],
            f"{prefix}packing_tokens_per_step": tokens[True] / (rounds * (steps - 1)),
            f"{prefix}packing_target_met": packed_tps / padded_tps >= 1.5}


class StepTimer:
    """Trainer callback: wall seconds of every optimizer step."""

    def __init__(self):
        self.seconds, self._start = [], None

    def __getattr__(self, name):
        return lambda *a, **k: None

    def on_step_begin(self, args, state, control, **kw):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.seconds.append(time.perf_counter() - self._start)


def paper_plan(args) -> list:
    """Critic-RM at paper scale: full fine-tuning of Llama-3.1-8B on critique-augmented pairs."""
    from hf_ext.planning import LLAMA_3_1_8B, ModelCost, Plan, meta_model

    model = ModelCost.of(meta_model(LLAMA_3_1_8B))
    pairs, tokens, epochs, micro_batch = 80_000, 1024, 2, 8  # (prompt + response + critique) per sequence
    # Forward + backward = 3 forwards per sequence (2 sequences per pair); the vocabulary head runs
    # for the critique tokens' loss.
    per_sequence = 3 * model.flops_per_token(tokens, with_head=True) * tokens
    return [Plan("Critic-RM: Llama-3.1-8B full fine-tune, 80k critique-augmented pairs × 2 epochs",
                 flops=per_sequence * 2 * pairs * epochs, flop_rate=plan_flop_rate(args.device),
                 memory_bytes={"weights_bf16": 2 * model.params, "grads_bf16": 2 * model.params,
                               "adamw_fp32_master_and_moments": 12 * model.params,
                               "activations_bf16_checkpointed": 2 * micro_batch * 2 * tokens * model.layers * model.hidden_size,
                               "logits_fp32": 4 * micro_batch * 2 * tokens * LLAMA_3_1_8B["vocab_size"]},
                 assumptions={"pairs": pairs, "tokens_per_sequence": tokens, "epochs": epochs, "pairs_per_step": micro_batch,
                              "model_params": model.params, "optimizer": "AdamW, bf16 mixed precision, activation checkpointing",
                              "gpus_needed_at_80gib_unsharded": "weights + optimizer exceed one 80 GiB GPU: shard (FSDP/ZeRO-3)"})]


def main() -> None:
    args = benchmark_args(__doc__.splitlines()[0], device=True, plan=paper_plan, extra=lambda p: (
        p.add_argument("--critiques", default=str(REPO / "tests/data/preference/alpaca_eval_smollm2_critiques.jsonl.gz"),
                       help="Stage-1 output (benchmarks/reward_critiques.py)."),
        p.add_argument("--steps", type=int, default=12, help="Optimizer steps for each trainer."),
        p.add_argument("--eval-pairs", type=int, default=40, help="Held-out hh-rlhf pairs."),
        p.add_argument("--packing-only", action="store_true", help="Only the padded-vs-packed throughput section."),
        p.add_argument("--packing-steps", type=int, default=6, help="Optimizer steps per padded / packed run."),
        p.add_argument("--packing-batch-size", type=int, default=4, help="Pairs per step in the packing section."),
        p.add_argument("--packing-rounds", type=int, default=2, help="Alternated padded/packed runs of each mode."),
        p.add_argument("--torch-threads", type=int, default=1,
                       help="torch intra-op threads (0: torch's default). 1 by default: see the module docstring."),
        p.add_argument("--packing-critiques", default=str(REPO / "tests/data/preference/alpaca_eval_smollm2_critiques_300.jsonl.gz"),
                       help="Stage-1 critique rows for the Critic-RM packing measurement."),
    ))
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from hf_ext.critique import consistency_filter, to_training_pairs
    from hf_ext.critique.data import hh_rlhf_pairs
    from hf_ext.models import load_model, load_tokenizer
    from hf_ext.testing import tiny_llama, tiny_tokenizer
    from trainers.critic_rm import CriticRewardModel, CriticRMConfig, CriticRMTrainer, critique_context
    from trainers.ranking_rm import RankingRewardConfig, RankingRewardTrainer

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    steps, eval_pairs = (3, 8) if args.quick else (args.steps, args.eval_pairs)
    kept, filter_stats = consistency_filter(load_dataset("json", data_files=args.critiques, split="train"))
    rows = to_training_pairs(kept, per_row=1)
    hh = hh_rlhf_pairs(load_dataset("json", data_files=str(args.data_dir / "preference/hh_rlhf_harmless_base_test.jsonl.gz"), split="train"))
    hh = hh.filter(lambda p, c, r: len(p) + max(len(c), len(r)) < 600, input_columns=["prompt", "chosen", "rejected"])
    held_out = hh.shuffle(seed=args.seed).select(range(eval_pairs))

    if args.quick:
        tok = tiny_tokenizer()
        make_lm = lambda: tiny_llama(tokenizer=tok, hidden_size=64, max_position_embeddings=4096, seed=args.seed)  # noqa: E731
        model_name = "tiny-llama"
    else:
        model_name = "HuggingFaceTB/SmolLM2-135M-Instruct"
        tok = load_tokenizer(model_name)
        make_lm = lambda: load_model(model_name, auto_class=AutoModelForCausalLM, dtype=torch.float32)  # noqa: E731
    tok.pad_token = tok.pad_token or tok.eos_token

    # The plain RM reads the same encoding of (prompt, response) as Critic-RM, minus the critique.
    def encode(example):
        return {side + "_ids": critique_context(tok, example["prompt"], example[side]) + [tok.eos_token_id] for side in ("chosen", "rejected")}

    plain_rows = rows.map(encode, remove_columns=rows.column_names)
    common = dict(max_steps=steps, per_device_train_batch_size=2, learning_rate=1e-5 if not args.quick else 1e-3,
                  logging_steps=1, save_strategy="no", report_to="none", bf16=False, activation_checkpointing=False,
                  use_cpu=args.device == "cpu", seed=args.seed, max_length=1024, dataloader_drop_last=True)

    results = {"model": model_name, "steps": steps, "train_rows": len(rows), "consistency_filter": filter_stats,
               "eval_pairs": len(held_out), "eval_set": "Anthropic/hh-rlhf harmless-base test (held out)", "torch_threads": torch.get_num_threads()}

    def sequence_classifier():
        lm = make_lm()
        model = LlamaForSequenceClassification(lm.config.__class__(**{**lm.config.to_dict(), "num_labels": 1}))
        model.model.load_state_dict(lm.model.state_dict())
        model.config.pad_token_id = tok.pad_token_id
        return model

    # ---- padding-free (packed) vs padded training, same batches
    pack_steps = 3 if args.quick else args.packing_steps
    pack_common = {**common, "max_steps": pack_steps, "per_device_train_batch_size": args.packing_batch_size, "max_length": 1024}
    annotations = load_dataset("json", data_files=str(args.data_dir / "preference/alpaca_eval1_gpt4_annotations.jsonl.gz"), split="train")
    annotations = annotations.filter(lambda p: p in (1, 2, 1.0, 2.0), input_columns="preference").shuffle(seed=args.seed)
    annotations = annotations.select(range(args.packing_batch_size * pack_steps * 2))
    pairs = annotations.map(lambda ex: {
        "prompt": ex["instruction"] + "\n\n",
        "chosen": ex["output_1"] if ex["preference"] == 1 else ex["output_2"],
        "rejected": ex["output_2"] if ex["preference"] == 1 else ex["output_1"]}, remove_columns=annotations.column_names)
    results["packing_pairs_source"] = "AlpacaEval 1 GPT-4 annotations (preference/alpaca_eval1_gpt4_annotations.jsonl.gz)"
    results.update(packing_throughput(lambda packed, callbacks: RankingRewardTrainer(
        sequence_classifier(), RankingRewardConfig(str(REPO / "outputs/bench_reward_packing"), padding_free=packed, **pack_common),
        train_dataset=pairs, processing_class=tok, callbacks=callbacks), pack_steps, args.packing_rounds))
    critique_rows = to_training_pairs(consistency_filter(load_dataset("json", data_files=args.packing_critiques, split="train"))[0], per_row=1)
    results.update(packing_throughput(lambda packed, callbacks: CriticRMTrainer(
        make_lm(), CriticRMConfig(str(REPO / "outputs/bench_reward_packing"), padding_free=packed, **pack_common),
        train_dataset=critique_rows, processing_class=tok, callbacks=callbacks), pack_steps, args.packing_rounds, prefix="critic_rm_"))
    if args.packing_only:
        results["peak_rss_bytes"] = peak_rss_bytes()
        write_results(args.out, results)
        return

    # ---- plain TRL RewardTrainer
    rm_model = sequence_classifier()
    timer = StepTimer()
    rm = RewardTrainer(rm_model, RewardConfig(str(REPO / "outputs/bench_reward_rm"), **common), train_dataset=plain_rows,
                       processing_class=tok, callbacks=[timer])
    rm.train()
    results["step_seconds_rm"] = statistics.median(timer.seconds[1:] or timer.seconds)
    results["response_tokens_per_step"] = [h for h in rm.state.log_history if "num_tokens" in h][-1]["num_tokens"] / steps
    rm_model.eval()
    with torch.no_grad():
        def plain_reward(prompt, response):
            ids = torch.tensor([critique_context(tok, prompt, response) + [tok.eos_token_id]], device=rm_model.device)
            return rm_model(input_ids=ids).logits.item()
        results["acc_heldout_rm"] = sum(plain_reward(r["prompt"], r["chosen"]) > plain_reward(r["prompt"], r["rejected"])
                                        for r in held_out) / len(held_out)
    del rm

    # ---- CriticRMTrainer
    timer = StepTimer()
    crm = CriticRMTrainer(make_lm(), CriticRMConfig(str(REPO / "outputs/bench_reward_critic_rm"), fast_path_weight=0.5, **common),
                          train_dataset=rows, processing_class=tok, callbacks=[timer])
    crm.train()
    results["step_seconds_critic_rm"] = statistics.median(timer.seconds[1:] or timer.seconds)
    logs = [h for h in crm.state.log_history if "critique_tokens" in h]
    results["critique_tokens_per_step"] = sum(h["critique_tokens"] for h in logs) / len(logs)  # chosen + rejected rows
    results["critic_rm_tokens_per_step"] = logs[-1]["num_tokens"] / steps
    results["final_reward_loss_critic_rm"] = logs[-1]["reward_loss"]
    results["final_critique_loss_critic_rm"] = logs[-1]["critique_loss"]
    scorer = CriticRewardModel(crm.model, tok, max_new_tokens=48)
    for key, m in (("acc_heldout_critic_rm", 1), ("acc_heldout_critic_rm_fast", 0)):
        start = time.perf_counter()
        chosen = scorer.score_batch(held_out["prompt"], held_out["chosen"], m)
        rejected = scorer.score_batch(held_out["prompt"], held_out["rejected"], m)
        results[key] = sum(c > r for c, r in zip(chosen, rejected)) / len(held_out)
        results[key + "_seconds"] = time.perf_counter() - start

    ratio = results["step_seconds_critic_rm"] / results["step_seconds_rm"]
    allowed = 1.25 * (1 + results["critique_tokens_per_step"] / results["response_tokens_per_step"])
    results.update(step_time_ratio=ratio, step_time_ratio_allowed=allowed, step_time_target_met=ratio <= allowed,
                   peak_rss_bytes=peak_rss_bytes())
    write_results(args.out, results)


if __name__ == "__main__":
    main()
