"""The ``evaluate`` job: lm-evaluation-harness on an in-memory model, plus response NLL and
DCLM's centered accuracy, written to ``metrics.json`` and a card's ``model-index``.

:func:`evaluate_model` takes a model *instance* and its tokenizer (an SFT output, a merge, a
time-vector interpolation...) and wraps it in lm-eval's ``HFLM``, so nothing goes through
disk; :func:`run_evaluate` loads a model by Hub id or folder (a PEFT adapter folder is loaded
on its base and merged) and writes the output folder.

    hf-ext run recipes/evaluate_smollm2.yaml --eval_data_dir DATA/eval
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..errors import InputError
from ..jobs import HUB_FIELDS, JobOptions, job_output
from .local_tasks import LOCAL_TASKS, resolve_tasks
from .response_nll import response_nll

__all__ = ["EvaluateConfig", "evaluate_model", "run_evaluate", "eval_results_for_card", "HUB_DATASETS"]

# Local task -> (Hub dataset id, config) of the data it holds, for the card's model-index.
HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy"), "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
    "boolq": ("google/boolq", None), "copa": ("aps/super_glue", "copa"), "commonsense_qa": ("tau/commonsense_qa", None),
    "lambada_openai": ("EleutherAI/lambada_openai", None), "mmlu_redux": ("edinburgh-dawg/mmlu-redux", None),
    "openbook_qa": ("allenai/openbookqa", "main"), "piqa": ("ybisk/piqa", None), "siqa": ("allenai/social_i_qa", None),
    "winogrande": ("allenai/winogrande", None), "bbh": ("lukaemon/bbh", None), "gsm8k": ("openai/gsm8k", "main"),
}
# Local task -> its name among DCLM's 53 tasks (hf_ext.curate.dclm_eval), where it is the same set.
DCLM_NAMES = {t: t for t in ("arc_easy", "arc_challenge", "boolq", "copa", "commonsense_qa", "lambada_openai",
                             "openbook_qa", "piqa", "siqa", "winogrande")}
DEFAULT_TASKS = ["arc_easy", "arc_challenge", "piqa", "copa", "winogrande"]


@dataclass
class EvaluateConfig(JobOptions):
    """Settings of the evaluation job (`job: evaluate` in a recipe).

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"HuggingFaceTB/SmolLM2-135M-Instruct"`):
            Causal LM to evaluate: Hub id or folder (a PEFT adapter folder is merged into its base).
        model_revision (`str` or `None`, *optional*, defaults to `None`):
            Revision of model_name_or_path (None: default branch).
        base_model_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id of the evaluated model for the card when model_name_or_path is a local folder.
        tasks (`list[str]`, *optional*, defaults to `list(DEFAULT_TASKS)`):
            Tasks: local ones (arc_challenge, arc_easy, bbh, boolq, commonsense_qa, copa, gsm8k, lambada_openai,
            mmlu_redux, openbook_qa, piqa, siqa, winogrande; need eval_data_dir) or lm-eval's own names (online).
        eval_data_dir (`str` or `None`, *optional*, defaults to `None`):
            Folder with the local tasks' data files (arc_easy.jsonl.gz, ...). None: task names go to lm-eval.
        limit (`int` or `None`, *optional*, defaults to `None`):
            Evaluate the first `limit` items of each task (None: all).
        num_fewshot (`int` or `None`, *optional*, defaults to `None`):
            Few-shot examples per prompt (None: the task's default, 0 for the local tasks).
        batch_size (`int`, *optional*, defaults to `8`):
            Sequences per forward pass (lm-eval HFLM batch_size).
        max_length (`int`, *optional*, defaults to `1024`):
            Longest context + continuation in tokens; longer ones lose their left end.
        dtype (`Literal['float32', 'bfloat16', 'float16']`, *optional*, defaults to `"float32"`):
            Precision the model runs in.
        dclm_version (`Literal['v1', 'v2']`, *optional*, defaults to `"v2"`):
            Random baselines of DCLM's centered accuracy (v1: the paper's, v2: corrected).
        response_nll_dataset (`str` or `None`, *optional*, defaults to `None`):
            Held-out instruction set (bundled name, file, folder or Hub id; a file name inside eval_data_dir also
            works) whose reference responses are scored; None: skip.
        response_nll_split (`str`, *optional*, defaults to `"train"`):
            Split of response_nll_dataset.
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction (response_nll_dataset).
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input/context (null if none).
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the reference response.
        response_nll_limit (`int` or `None`, *optional*, defaults to `200`):
            First rows of response_nll_dataset to score (None: all).
        response_nll_max_tokens (`int`, *optional*, defaults to `256`):
            Reference responses are cut to this many tokens.
        chat_template (`bool`, *optional*, defaults to `True`):
            Format instruction/response with the tokenizer's chat template (as the sft job trains); false: plain text.
        seed (`int`, *optional*, defaults to `0`):
            Seed of lm-eval's sampling (few-shot choice).
        output_dir (`str`, *optional*, defaults to `"outputs/evaluate"`):
            Folder for metrics.json, per-item scores and the card.
    """

    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Causal LM to evaluate: Hub id or folder (a PEFT adapter folder is merged into its base)."})
    model_revision: Optional[str] = field(default=None, metadata={"help": "Revision of model_name_or_path (None: default branch)."})
    base_model_id: Optional[str] = field(default=None, metadata={"help": "Hub id of the evaluated model for the card when model_name_or_path is a local folder."})
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS), metadata={"help": f"Tasks: local ones ({', '.join(LOCAL_TASKS)}; need eval_data_dir) or lm-eval's own names (online)."})
    eval_data_dir: Optional[str] = field(default=None, metadata={"help": "Folder with the local tasks' data files (arc_easy.jsonl.gz, ...). None: task names go to lm-eval."})
    limit: Optional[int] = field(default=None, metadata={"help": "Evaluate the first `limit` items of each task (None: all)."})
    num_fewshot: Optional[int] = field(default=None, metadata={"help": "Few-shot examples per prompt (None: the task's default, 0 for the local tasks)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass (lm-eval HFLM batch_size)."})
    max_length: int = field(default=1024, metadata={"help": "Longest context + continuation in tokens; longer ones lose their left end."})
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={"help": "Precision the model runs in."})
    dclm_version: Literal["v1", "v2"] = field(default="v2", metadata={"help": "Random baselines of DCLM's centered accuracy (v1: the paper's, v2: corrected)."})
    response_nll_dataset: Optional[str] = field(default=None, metadata={"help": "Held-out instruction set (bundled name, file, folder or Hub id; a file name inside eval_data_dir also works) whose reference responses are scored; None: skip."})
    response_nll_split: str = field(default="train", metadata={"help": "Split of response_nll_dataset."})
    instruction_column: str = field(default="instruction", metadata={"help": "Column with the instruction (response_nll_dataset)."})
    input_column: Optional[str] = field(default="input", metadata={"help": "Column with the optional input/context (null if none)."})
    response_column: str = field(default="output", metadata={"help": "Column with the reference response."})
    response_nll_limit: Optional[int] = field(default=200, metadata={"help": "First rows of response_nll_dataset to score (None: all)."})
    response_nll_max_tokens: int = field(default=256, metadata={"help": "Reference responses are cut to this many tokens."})
    chat_template: bool = field(default=True, metadata={"help": "Format instruction/response with the tokenizer's chat template (as the sft job trains); false: plain text."})
    seed: int = field(default=0, metadata={"help": "Seed of lm-eval's sampling (few-shot choice)."})
    output_dir: str = field(default="outputs/evaluate", metadata={"help": "Folder for metrics.json, per-item scores and the card."})

    def response_nll_source(self) -> str | None:
        """`response_nll_dataset`, or its path inside `eval_data_dir` when only a file name there."""
        name = self.response_nll_dataset
        if name and self.eval_data_dir and not os.path.exists(os.path.expanduser(name)):
            inside = Path(os.path.expanduser(self.eval_data_dir)) / name
            if inside.exists():
                return str(inside)
        return name

    def __post_init__(self) -> None:
        if not self.tasks and self.response_nll_dataset is None:
            raise InputError("Nothing to evaluate: `tasks` is empty and `response_nll_dataset` is None.")
        if self.limit is not None and self.limit <= 0:
            raise InputError(f"limit must be a positive integer or null, got {self.limit}.")
        if self.eval_data_dir is not None and not Path(os.path.expanduser(self.eval_data_dir)).is_dir():
            raise InputError(f"eval_data_dir={self.eval_data_dir!r} is not a folder. Point it at the folder with the evaluation files.")
        super().__post_init__()  # output folder and Hub settings (push_to_hub uploads the card and metrics to hub_model_id)


def _score_key(result: dict[str, Any]) -> tuple[str, str] | None:
    """lm-eval's main metric of a task result: acc, else exact_match (first filter), else None."""
    for metric in ("acc", "exact_match"):
        for key in result:
            name, _, filt = key.partition(",")
            if name == metric and "stderr" not in key:
                return key, filt
    return None


def evaluate_model(model, tokenizer, config: EvaluateConfig) -> dict[str, Any]:
    """Run `config.tasks` and the response NLL on an in-memory model; return the metrics.

    Args:
        model (`PreTrainedModel`):
            A causal LM in memory.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        config (`EvaluateConfig`):
            The tasks, data and settings (its model fields are not read).

    Returns:
        ``{"tasks": {task: {"acc", "acc_stderr", "acc_norm", ..., "n"}}, "dclm": {...},
        "response_nll": {...}, "items": {task: [per-item score]}}``.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from ..curate.dclm_eval import CORE_TASKS, DCLM_TASKS, aggregate

    if tokenizer is None:
        raise InputError("The model has no tokenizer: pass one (lm-eval and the response NLL tokenize text).")
    specs = resolve_tasks(config.tasks, config.eval_data_dir) if config.tasks else []
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, max_length=config.max_length)
    metrics: dict[str, Any] = {"tasks": {}, "items": {}}
    if specs:
        from lm_eval.tasks import TaskManager

        out = lm_eval.simple_evaluate(
            model=lm, tasks=specs, task_manager=TaskManager(), num_fewshot=config.num_fewshot, limit=config.limit,
            log_samples=True, random_seed=config.seed, numpy_random_seed=config.seed, torch_random_seed=config.seed,
            fewshot_random_seed=config.seed, bootstrap_iters=1000,
        )
        for task, result in out["results"].items():
            row: dict[str, Any] = {"n": int(out["n-samples"][task]["effective"]) if task in out.get("n-samples", {}) else None}
            for key, value in result.items():
                name, _, filt = key.partition(",")
                if isinstance(value, (int, float)) and name not in ("sample_len",):
                    row[name] = None if (isinstance(value, float) and math.isnan(value)) else float(value)
            main = _score_key(result)
            if main is not None:
                row["metric"] = main[0].partition(",")[0]
                samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
                metrics["items"][task] = [float(s[row["metric"]]) for s in samples]
            metrics["tasks"][task] = row
    accs = {DCLM_NAMES[t]: r["acc"] for t, r in metrics["tasks"].items() if t in DCLM_NAMES and r.get("acc") is not None}
    if accs:
        agg = aggregate(accs, version=config.dclm_version)
        present_core = [t for t in CORE_TASKS if t in accs]
        metrics["dclm"] = {
            "version": config.dclm_version,
            "metric": "acc",
            "centered": agg["centered"],
            "core": agg["core"],
            "extended": agg["extended"],
            "core_over_present": sum(agg["centered"][t] for t in present_core) / len(present_core) if present_core else None,
            "extended_over_present": sum(agg["centered"].values()) / len(accs),
            "tasks_present": sorted(accs),
            "missing_core": agg["missing_core"],
            "missing_extended": len([t for t in DCLM_TASKS if t not in accs]),
        }
    if config.response_nll_dataset is not None:
        nll = response_nll(lm, config)
        metrics["items"]["response_nll"] = nll.pop("items")
        metrics["response_nll"] = nll
    return metrics


def eval_results_for_card(metrics: dict[str, Any], model_label: str | None = None) -> list[dict[str, Any]]:
    """`huggingface_hub.EvalResult` fields for every task score (and the response NLL).

    Args:
        metrics (`dict[str, Any]`):
            The evaluation metrics (:func:`evaluate_model`): its ``tasks`` scores and ``response_nll``.
        model_label (`str` or `None`, *optional*, defaults to `None`):
            Not read: the results carry no model name (the card's `model_name` does).
    """
    results = []
    for task, row in metrics.get("tasks", {}).items():
        metric = row.get("metric")
        if metric is None or row.get(metric) is None:
            continue
        hub_id, hub_config = HUB_DATASETS.get(task, (task, None))
        results.append({
            "task_type": "text-generation", "dataset_type": hub_id, "dataset_name": task, "dataset_config": hub_config,
            "metric_type": metric, "metric_value": round(row[metric], 4), "metric_name": f"{metric} ({row.get('n')} items)",
            "source_name": "lm-evaluation-harness", "source_url": "https://github.com/EleutherAI/lm-evaluation-harness",
        })
    nll = metrics.get("response_nll")
    if nll:
        results.append({
            "task_type": "text-generation", "dataset_type": nll["dataset"], "dataset_name": f"{nll['dataset']} reference responses",
            "metric_type": "nll", "metric_value": round(nll["mean"], 4), "metric_name": f"response NLL per token ({nll['n']} items)",
            "source_name": "hf_ext", "source_url": "https://github.com/hf-ext/hf_ext",
        })
    return results


def results_table(metrics: dict[str, Any]) -> str:
    """Markdown table of per-task scores ± lm-eval's stderr.

    Args:
        metrics (`dict[str, Any]`):
            The evaluation metrics (:func:`evaluate_model`): its ``tasks`` scores and ``response_nll``.
    """
    lines = ["| task | metric | score | ± stderr | items |", "|---|---|---|---|---|"]
    for task, row in metrics.get("tasks", {}).items():
        metric = row.get("metric")
        if metric is None:
            continue
        stderr = row.get(f"{metric}_stderr")
        lines.append(f"| {task} | {metric} | {row[metric]:.4f} | {stderr:.4f} | {row.get('n')} |" if stderr is not None
                     else f"| {task} | {metric} | {row[metric]:.4f} | n/a | {row.get('n')} |")
    nll = metrics.get("response_nll")
    if nll:
        lines.append(f"| {nll['dataset']} | response NLL / token | {nll['mean']:.4f} | {nll['stderr']:.4f} | {nll['n']} |")
    return "\n".join(lines)


def _dclm_text(dclm: dict[str, Any] | None) -> str:
    if not dclm:
        return "No DCLM task was evaluated."
    fmt = lambda v: "N/A" if v is None else f"{v:.4f}"
    return (f"DCLM centered accuracy ({dclm['version']} baselines, `acc`) over {len(dclm['tasks_present'])} of 53 tasks "
            f"({', '.join(dclm['tasks_present'])}): CORE over the present CORE tasks {fmt(dclm['core_over_present'])}, "
            f"EXTENDED over the present tasks {fmt(dclm['extended_over_present'])}. Official CORE: {fmt(dclm['core'])}, "
            f"EXTENDED: {fmt(dclm['extended'])} (N/A while tasks are missing; missing CORE tasks: "
            f"{', '.join(dclm['missing_core']) or 'none'}; {dclm['missing_extended']} of 53 EXTENDED tasks missing).")


def load_for_eval(model_name_or_path: str, revision: str | None = None, dtype: str = "float32"):
    """Model and tokenizer from a Hub id or folder; a PEFT adapter folder is merged into its base.

    Args:
        model_name_or_path (`str`):
            Causal LM: Hub id or folder (packaged copies resolve offline); a folder with ``adapter_config.json`` is a
            PEFT adapter, merged into its base.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Revision of `model_name_or_path` (None: default branch).
        dtype (`str`, *optional*, defaults to `"float32"`):
            Precision the model is loaded in (a `torch` dtype name: ``"float32"``, ``"bfloat16"``, ``"float16"``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from ..models import load_model, load_tokenizer, resolve_model

    path = resolve_model(model_name_or_path, revision)
    torch_dtype = getattr(torch, dtype)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype).merge_and_unload()
    else:
        model = load_model(model_name_or_path, AutoModelForCausalLM, revision=revision, dtype=torch_dtype)
    try:
        tokenizer = load_tokenizer(model_name_or_path, revision=revision)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{model_name_or_path!r} has no loadable tokenizer ({type(exc).__name__}: {exc}); "
                         "save the tokenizer beside the model.") from None
    model.eval()
    return model, tokenizer


def write_evaluation(folder: Path, config: EvaluateConfig, metrics: dict[str, Any], model_id: str | None) -> None:
    """metrics.json, per-item scores (items.json) and README.md with the model-index into `folder`.

    Args:
        folder (`Path`):
            Existing folder to write into.
        config (`EvaluateConfig`):
            The job's config, for the card's title and settings table.
        metrics (`dict[str, Any]`):
            The evaluation metrics; its ``items`` go to items.json, the rest to metrics.json (`metrics` is left
            as it was).
        model_id (`str` or `None`):
            Hub id of the evaluated model for the card; `None`: the title names `config.model_name_or_path`.
    """
    from ..hub.cards import render_model_card

    items = metrics.pop("items", {})
    (folder / "items.json").write_text(json.dumps(items) + "\n", encoding="utf-8")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    metrics["items"] = items
    settings = {k: v for k, v in asdict(config).items() if k not in HUB_FIELDS}
    card_data: dict[str, Any] = {"tags": ["hf-ext", "evaluation", "lm-evaluation-harness"], "library_name": "transformers"}
    card = render_model_card(
        "model_card.md.j2", card_data, eval_results=eval_results_for_card(metrics), model_name=model_id or "model",
        title=f"Evaluation of {model_id or config.model_name_or_path}",
        summary="Scores from lm-evaluation-harness (accuracy ± its standard error) on the tasks below.",
        sections=[{"title": "Results", "body": results_table(metrics)}, {"title": "DCLM aggregate", "body": _dclm_text(metrics.get("dclm"))},
                  {"title": "Settings", "body": "```json\n" + json.dumps(settings, indent=2) + "\n```"}],
    )
    card.save(str(folder / "README.md"))


def run_evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Load the model, evaluate it, write ``metrics.json``, ``items.json`` and the card.

    Args:
        config (`EvaluateConfig`):
            The job's settings: model, tasks, data, precision and output folder.
    """
    from ..hub.cards import card_hub_id

    start = time.perf_counter()
    if config.tasks:  # bad task names and missing files fail before the model loads
        resolve_tasks(config.tasks, config.eval_data_dir)
    model_id = config.base_model_id or card_hub_id(config.model_name_or_path)
    model, tokenizer = load_for_eval(config.model_name_or_path, config.model_revision, config.dtype)
    metrics = evaluate_model(model, tokenizer, config)
    metrics["model"] = model_id or config.model_name_or_path
    metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)
    with job_output(config, repo_type="model", writer="evaluate", commit_message=f"hf_ext: evaluation of {metrics['model']}") as out:
        write_evaluation(out.dir, config, metrics, model_id)  # metrics.json, items.json and the card; job_output pushes last
    if out.hub_commit is not None:
        metrics["hub_commit"] = out.hub_commit
    metrics.pop("items", None)
    return metrics
