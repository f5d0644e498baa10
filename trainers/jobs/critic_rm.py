"""The ``critic_rm`` job: the whole two-stage Critic-RM pipeline from one recipe.

1. Preference pairs from a file (AlpacaEval annotations or prompt/chosen/rejected rows),
   split by prompt; the first `train_pairs` short pairs are used.
2. Stage 1: critiques from a local transformers model or an OpenAI-compatible server
   (resumable cache in ``<output_dir>-cache/``), or read from `critiques_file`; consistency filter, then
   the Summ or Rank variant.
3. Stage 2: :class:`CriticRMTrainer`; held-out accuracy on `eval_file` (hh-rlhf style) with
   critique-then-score inference (`eval_num_critiques`, 0 = fast path).
4. Model, tokenizer, ``metrics.json`` and a card in ``output_dir`` (written to a temporary folder
   and moved into place, :func:`hf_ext.jobs.job_output`); pushed with one commit when
   `push_to_hub` is true (to `hub_model_id`).

    hf-ext run recipes/critic_rm_cpu.yaml
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from hf_ext.errors import InputError
from hf_ext.jobs import check_job_output, job_output, refuse_old_hub_keys

from ..critic_rm import CriticRewardModel, CriticRMConfig, CriticRMTrainer, compute_reward_accuracy


@dataclass
class CriticRMJobConfig(CriticRMConfig):
    """A :class:`CriticRMConfig` plus the data, stage-1 and publishing settings of the job.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"HuggingFaceTB/SmolLM2-135M-Instruct"`):
            Causal LM to train (Hub id or path).
        base_model_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id of the base model for the card when model_name_or_path is a local folder.
        train_file (`str` or `None`, *optional*, defaults to `None`):
            Preference pairs: AlpacaEval annotations (instruction, output_1, output_2, preference) or rows with
            prompt, chosen, rejected (JSON Lines, may be gzipped).
        train_dataset_id (`str`, *optional*, defaults to `"tatsu-lab/alpaca_eval"`):
            Hub id of the training data, for the card.
        train_pairs (`int`, *optional*, defaults to `64`):
            Training pairs to critique and train on (0: all).
        max_chars (`int`, *optional*, defaults to `600`):
            Keep pairs whose prompt + longest response has fewer characters (CPU budget).
        test_fraction (`float`, *optional*, defaults to `0.2`):
            Share of prompts held out of training (split by prompt).
        eval_file (`str` or `None`, *optional*, defaults to `None`):
            Held-out pairs (hh-rlhf chosen/rejected transcripts or prompt/chosen/rejected).
        eval_dataset_id (`str`, *optional*, defaults to `"Anthropic/hh-rlhf"`):
            Hub id of the held-out data, for the card.
        eval_pairs (`int`, *optional*, defaults to `40`):
            Held-out pairs to score (0: all).
        eval_num_critiques (`int`, *optional*, defaults to `1`):
            Critiques generated per held-out response (0: fast path, no generation).
        critiques_file (`str` or `None`, *optional*, defaults to `None`):
            Stage-1 output to reuse (JSONL with chosen_critiques, chosen_scores, ...).
        critique_backend (`Literal['transformers', 'openai']`, *optional*, defaults to `"transformers"`):
            Who writes stage-1 critiques.
        critique_model (`str`, *optional*, defaults to `"HuggingFaceTB/SmolLM2-135M-Instruct"`):
            Model id (transformers) or served model name (openai).
        critique_base_url (`str` or `None`, *optional*, defaults to `None`):
            OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (openai backend).
        num_critiques (`int`, *optional*, defaults to `2`):
            Critiques sampled per response in stage 1; also the most (chosen, rejected) critique pairs one row gives
            training.
        critique_max_new_tokens (`int`, *optional*, defaults to `64`):
            Tokens per generated critique.
        critique_batch_size (`int`, *optional*, defaults to `16`):
            Conversations per generate call (transformers backend).
        critique_dtype (`str` or `None`, *optional*, defaults to `None`):
            Precision of the transformers critique model, e.g. bfloat16 (None: the checkpoint's).
        critique_variant (`Literal['none', 'summ', 'rank']`, *optional*, defaults to `"none"`):
            After the consistency filter: merge (summ) or rank (rank) the kept critiques.
        lora_r (`int`, *optional*, defaults to `0`):
            LoRA rank (0: full fine-tuning); the reward head is always trained and saved.
        hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub endpoint URL (default: HF_ENDPOINT or huggingface.co).
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Replace an existing output folder that hf_ext did not write (folders of earlier hf_ext runs are replaced
            without it).
    """

    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Causal LM to train (Hub id or path)."})
    base_model_id: str | None = field(default=None, metadata={"help": "Hub id of the base model for the card when model_name_or_path is a local folder."})
    train_file: str | None = field(default=None, metadata={"help": "Preference pairs: AlpacaEval annotations (instruction, output_1, output_2, "
                                                           "preference) or rows with prompt, chosen, rejected (JSON Lines, may be gzipped)."})
    train_dataset_id: str = field(default="tatsu-lab/alpaca_eval", metadata={"help": "Hub id of the training data, for the card."})
    train_pairs: int = field(default=64, metadata={"help": "Training pairs to critique and train on (0: all)."})
    max_chars: int = field(default=600, metadata={"help": "Keep pairs whose prompt + longest response has fewer characters (CPU budget)."})
    test_fraction: float = field(default=0.2, metadata={"help": "Share of prompts held out of training (split by prompt)."})
    eval_file: str | None = field(default=None, metadata={"help": "Held-out pairs (hh-rlhf chosen/rejected transcripts or prompt/chosen/rejected)."})
    eval_dataset_id: str = field(default="Anthropic/hh-rlhf", metadata={"help": "Hub id of the held-out data, for the card."})
    eval_pairs: int = field(default=40, metadata={"help": "Held-out pairs to score (0: all)."})
    eval_num_critiques: int = field(default=1, metadata={"help": "Critiques generated per held-out response (0: fast path, no generation)."})
    critiques_file: str | None = field(default=None, metadata={"help": "Stage-1 output to reuse (JSONL with chosen_critiques, chosen_scores, ...)."})
    critique_backend: Literal["transformers", "openai"] = field(default="transformers", metadata={"help": "Who writes stage-1 critiques."})
    critique_model: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Model id (transformers) or served model name (openai)."})
    critique_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (openai backend)."})
    num_critiques: int = field(default=2, metadata={"help": "Critiques sampled per response in stage 1; also the most (chosen, rejected) critique pairs one row gives training."})
    critique_max_new_tokens: int = field(default=64, metadata={"help": "Tokens per generated critique."})
    critique_batch_size: int = field(default=16, metadata={"help": "Conversations per generate call (transformers backend)."})
    critique_dtype: str | None = field(default=None, metadata={"help": "Precision of the transformers critique model, e.g. bfloat16 (None: the checkpoint's)."})
    critique_variant: Literal["none", "summ", "rank"] = field(default="none", metadata={"help": "After the consistency filter: merge (summ) or rank (rank) the kept critiques."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0: full fine-tuning); the reward head is always trained and saved."})
    hub_endpoint: str | None = field(default=None, metadata={"help": "Hub endpoint URL (default: HF_ENDPOINT or huggingface.co)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output folder that hf_ext did not write "
                                                                         "(folders of earlier hf_ext runs are replaced without it)."})

    check_recipe: ClassVar = staticmethod(refuse_old_hub_keys)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_job_output(self)  # output folder and Hub settings, before any work

    @property
    def cache_dir(self) -> Path:
        """Resumable stage-1 caches: beside the output folder, which is replaced as a whole."""
        return Path(self.output_dir).with_name(Path(self.output_dir).name + "-cache")


def _load_pairs(path: str, what: str) -> Any:
    from datasets import load_dataset

    from hf_ext.critique.data import alpaca_eval_pairs, hh_rlhf_pairs

    if not path:
        raise InputError(f"{what} is not set: point it at a JSON Lines file of preference pairs (recipes/critic_rm_cpu.yaml "
                         "uses the staged AlpacaEval annotations, e.g. --train_file /path/to/data/preference/...).")
    if not Path(path).is_file():
        raise InputError(f"{what} {path!r} does not exist. Point it at a JSON Lines file of preference pairs.")
    ds = load_dataset("json", data_files=path, split="train")
    if "preference" in ds.column_names:
        return alpaca_eval_pairs(ds)
    if "prompt" not in ds.column_names:
        return hh_rlhf_pairs(ds)
    return ds


def _short(ds: Any, max_chars: int, n: int, seed: int) -> Any:
    ds = ds.filter(lambda p, c, r: len(p) + max(len(c), len(r)) < max_chars, input_columns=["prompt", "chosen", "rejected"])
    ds = ds.shuffle(seed=seed)
    return ds.select(range(min(n, len(ds)))) if n else ds


def stage_one(c: CriticRMJobConfig, pairs: Any) -> tuple[Any, dict[str, Any]]:
    """Critiques → consistency filter → Summ/Rank → training rows; counts at each step.

    Args:
        c (`CriticRMJobConfig`):
            The job's settings: the critique source (`critiques_file`, or `critique_backend` / `critique_model` and
            their generation settings), `num_critiques` and `critique_variant`; caches go to `c.cache_dir`.
        pairs (`datasets.Dataset`):
            Preference pairs (`prompt`, `chosen`, `rejected`) to critique; unused when `c.critiques_file` is set.
    """
    from datasets import load_dataset

    from hf_ext.critique import consistency_filter, generate_critiques, make_backend, rank_critiques, summarize_critiques, to_training_pairs

    stats: dict[str, Any] = {}
    backend = None
    if c.critiques_file:
        critiqued = load_dataset("json", data_files=c.critiques_file, split="train")
        stats["critiques_file"] = Path(c.critiques_file).name
        stats["critiques_per_response"] = max((len(x) for x in critiqued["chosen_critiques"]), default=0)
    else:
        settings: dict[str, Any] = {"model": c.critique_model, "max_new_tokens": c.critique_max_new_tokens, "temperature": 0.8, "top_p": 0.95}
        if c.critique_backend == "openai":
            if not c.critique_base_url:
                raise InputError("critique_backend: openai needs critique_base_url (e.g. http://localhost:8000/v1).")
            settings["base_url"] = c.critique_base_url
        else:
            settings.update(batch_size=c.critique_batch_size, dtype=c.critique_dtype)
        backend = make_backend(c.critique_backend, **settings)
        critiqued, stats["generation"] = generate_critiques(pairs, backend, num_critiques=c.num_critiques,
                                                            cache_path=c.cache_dir / "critiques_cache.jsonl")
    kept, stats["consistency_filter"] = consistency_filter(critiqued)
    if c.critique_variant != "none":
        if backend is None:
            backend = make_backend(c.critique_backend, model=c.critique_model, max_new_tokens=c.critique_max_new_tokens,
                                   **({"base_url": c.critique_base_url} if c.critique_base_url else {}))
        variant = summarize_critiques if c.critique_variant == "summ" else rank_critiques
        kept, stats[c.critique_variant] = variant(kept, backend, cache_path=c.cache_dir / f"{c.critique_variant}_cache.jsonl")
    rows = to_training_pairs(kept, per_row=c.num_critiques)
    stats["training_rows"] = len(rows)
    if len(rows) == 0:
        raise InputError("No critique survived the consistency filter, so there is nothing to train on. Use more pairs, "
                         "more critiques per response (num_critiques) or a stronger critique model.")
    return rows, stats


def heldout_accuracy(model: Any, tokenizer: Any, pairs: Any, num_critiques: int) -> float:
    """Share of held-out pairs whose chosen response scores higher (critique-then-score).

    Args:
        model (`Any`):
            The trained Critic-RM model (a causal LM with the reward head).
        tokenizer (`Any`):
            Its tokenizer.
        pairs (`datasets.Dataset`):
            Held-out pairs with `prompt`, `chosen` and `rejected` columns.
        num_critiques (`int`):
            Critiques generated (up to 64 tokens each) and averaged per response; 0 scores without generating (the
            fast path).
    """
    rm = CriticRewardModel(model, tokenizer, max_new_tokens=64)
    chosen = rm.score_batch(pairs["prompt"], pairs["chosen"], num_critiques)
    rejected = rm.score_batch(pairs["prompt"], pairs["rejected"], num_critiques)
    return sum(c > r for c, r in zip(chosen, rejected)) / max(1, len(pairs))


def run_critic_rm(c: CriticRMJobConfig) -> dict[str, Any]:
    """Run the Critic-RM job: stage 1 (critiques and filtering), training with :class:`CriticRMTrainer`, held-out
    accuracy and the card; returns the metrics.

    Args:
        c (`CriticRMJobConfig`):
            The job's settings (data files, critique source, trainer fields, output folder and Hub push).
    """
    from hf_ext.critique.data import split_by_prompt
    from hf_ext.models import hub_id_for, load_tokenizer

    train_pool, test_pool = split_by_prompt(_load_pairs(c.train_file, "train_file"), c.test_fraction, seed=c.seed)
    pairs = _short(train_pool, c.max_chars, c.train_pairs, c.seed)
    rows, stats = stage_one(c, pairs)

    peft_config = None
    if c.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=c.lora_r, lora_alpha=2 * c.lora_r, target_modules="all-linear", task_type="CAUSAL_LM")
    tokenizer = load_tokenizer(c.model_name_or_path)
    with job_output(c, repo_type="model", writer="critic_rm") as result:
        out = result.dir
        args = copy.copy(c)  # the Trainer writes into the temporary folder and never pushes: job_output does, last
        args.output_dir, args.push_to_hub = str(out), False
        trainer = CriticRMTrainer(c.model_name_or_path, args, train_dataset=rows, processing_class=tokenizer,
                                  peft_config=peft_config, compute_metrics=compute_reward_accuracy)
        trainer.train()
        trainer.save_model(str(out))
        tokenizer.save_pretrained(str(out))

        results = []
        held_in = _short(test_pool, c.max_chars, c.eval_pairs, c.seed)
        results.append({"name": f"{c.train_dataset_id} (held-out prompts)", "dataset": c.train_dataset_id, "pairs": len(held_in),
                        "accuracy": heldout_accuracy(trainer.model, tokenizer, held_in, c.eval_num_critiques)})
        if c.eval_file:
            held_out = _short(_load_pairs(c.eval_file, "eval_file"), c.max_chars, c.eval_pairs, c.seed)
            results.append({"name": c.eval_dataset_id, "dataset": c.eval_dataset_id, "pairs": len(held_out),
                            "accuracy": heldout_accuracy(trainer.model, tokenizer, held_out, c.eval_num_critiques)})
        result.metrics = {"stage_one": stats, "heldout": results, "train": trainer.state.log_history[-1],
                          "critique_weight": {"schedule": c.critique_weight_schedule, "start": c.critique_weight_start,
                                              "end": c.critique_weight_end}}
        base = c.base_model_id or hub_id_for(c.model_name_or_path)
        result.card = render_card(c, base, stats, results, trainer.state.global_step)
        result.commit_message = f"Critic-RM reward model ({trainer.state.global_step} steps)"
    return result.metrics


def render_card(c: CriticRMJobConfig, base_model: str | None, stats: dict[str, Any], results: list[dict[str, Any]], steps: int) -> Any:
    """The model card: base model, data, λ schedule, critique backend, held-out accuracy.

    Args:
        c (`CriticRMJobConfig`):
            The job's settings (datasets, critique source and variant, λ schedule, LoRA rank, Hub id).
        base_model (`str` or `None`):
            Hub id of the base model for the card's `base_model` metadata.
        stats (`dict[str, Any]`):
            The counts of `stage_one`.
        results (`list[dict[str, Any]]`):
            Held-out accuracies, each with `name`, `dataset`, `pairs` and `accuracy`.
        steps (`int`):
            Training steps run.
    """
    from hf_ext.hub.cards import render_model_card

    schedule = (f"{c.critique_weight_schedule} {c.critique_weight_start} → {c.critique_weight_end}"
                if c.critique_weight_schedule != "constant" else f"constant {c.critique_weight_start}")
    backend = "critiques file" if c.critiques_file else f"{c.critique_backend}: {c.critique_model}"
    flat = {f"{step}: {k}": v for step, counts in stats.items() if isinstance(counts, dict) for k, v in counts.items()}
    flat["training rows"] = stats.get("training_rows")
    eval_results = [{"task_type": "text-classification", "task_name": "Reward modeling", "dataset_type": r["dataset"],
                     "dataset_name": r["name"], "metric_type": "accuracy", "metric_value": round(r["accuracy"], 4)} for r in results]
    return render_model_card(
        "reward_model.md.j2",
        {"base_model": base_model, "base_model_relation": "finetune", "datasets": [c.train_dataset_id],
         "library_name": "peft" if c.lora_r else "transformers", "license": "apache-2.0",
         "tags": ["hf-ext", "reward-model", "critic-rm", "trl"], "pipeline_tag": "text-generation"},
        eval_results=eval_results, model_name=Path(c.output_dir).name,
        title=f"Critic-RM reward model on {base_model}",
        summary="A reward model that writes a critique and then scores the response (Critic-RM, Yu et al. 2024).",
        base_model=base_model, method="Critic-RM (λ·critique NLL + (1 − λ)·Bradley–Terry)", datasets=[c.train_dataset_id],
        eval_datasets=[c.eval_dataset_id] if c.eval_file else [], train_pairs=stats.get("training_rows"),
        critique_backend=backend, num_critiques=stats.get("critiques_per_response", c.num_critiques), pairs_per_row=c.num_critiques,
        critique_variant=c.critique_variant, schedule=schedule, steps=steps,
        adapter=f"LoRA r={c.lora_r}" if c.lora_r else "none (full fine-tuning)", critique_stats=flat,
        results=results, repo_id=c.hub_model_id or "your-name/critic-rm",
    )
