"""The ``sft`` job: TRL's ``SFTTrainer`` on a selection (or any instruction dataset), then
optionally the ``evaluate`` job's scoring on the trained model in memory.

The recipe's keys are :class:`trl.SFTConfig`'s own fields (``learning_rate``, ``max_steps``,
``completion_only_loss``, ``max_length``...) plus the data, model and card fields below. LoRA
is ``peft_config``: a mapping of :class:`peft.LoraConfig` fields, checked by LoraConfig.
Rows become TRL's prompt-completion format (:func:`hf_ext.evaluation.to_prompt_completion`:
a user turn and an assistant turn when the tokenizer has a chat template), so with
``completion_only_loss`` (TRL's default for that format) only response tokens carry loss.

The training set may be an output folder or Hub dataset of the ``select`` / ``less_select``
jobs: its ``metrics.json`` gives the card the selection method and budget ("unknown method"
when there is none).

    hf-ext run recipes/sft_smollm2_lora.yaml --dataset outputs/quickstart
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from trl import SFTConfig, SFTTrainer

from hf_ext.errors import InputError
from hf_ext.jobs import check_job_output, job_output, refuse_old_hub_keys
from hf_ext.evaluation import EvaluateConfig, evaluate_model, to_prompt_completion
from hf_ext.evaluation.formatting import check_columns

__all__ = ["SFTJobConfig", "run_sft", "build_trainer", "load_training_set", "selection_info"]


@dataclass
class SFTJobConfig(SFTConfig):
    """A :class:`trl.SFTConfig` plus the model, data, LoRA, evaluation and card settings of the job.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"HuggingFaceTB/SmolLM2-135M-Instruct"`):
            Causal LM to fine-tune: Hub id (resolved to a packaged copy offline) or folder.
        model_revision (`str` or `None`, *optional*, defaults to `None`):
            Revision of model_name_or_path (None: default branch).
        base_model_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id of the base model for the card when model_name_or_path is a local folder.
        dataset (`str`, *optional*, defaults to `"dolly_alpagasus_3k"`):
            Training set: a select/less_select output folder or Hub dataset id, a bundled name, or any file/folder
            with the instruction columns.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of `dataset`.
        dataset_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id of the training set for the card when `dataset` is a local folder (default: the selection's source
            datasets).
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input/context (null if none).
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the response (the only tokens that carry loss).
        chat_template (`bool`, *optional*, defaults to `True`):
            Train on conversational prompt/completion with the tokenizer's chat template; false: plain text.
        peft_config (`dict` or `None`, *optional*, defaults to `None`):
            LoRA: a mapping of peft.LoraConfig fields (r, lora_alpha, target_modules, ...); None: full fine-tune.
        evaluate (`dict` or `None`, *optional*, defaults to `None`):
            Evaluate the trained model in memory: a mapping of EvaluateConfig fields (tasks, eval_data_dir, limit,
            response_nll_dataset...).
        model_dtype (`str`, *optional*, defaults to `"float32"`):
            Precision the model's weights load in (float32 on CPU).
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Replace an existing output folder that hf_ext did not write (folders of earlier hf_ext runs are replaced
            without it).
        hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub endpoint URL (default: HF_ENDPOINT or huggingface.co).
    """

    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Causal LM to fine-tune: Hub id (resolved to a packaged copy offline) or folder."})
    model_revision: Optional[str] = field(default=None, metadata={"help": "Revision of model_name_or_path (None: default branch)."})
    base_model_id: Optional[str] = field(default=None, metadata={"help": "Hub id of the base model for the card when model_name_or_path is a local folder."})
    dataset: str = field(default="dolly_alpagasus_3k", metadata={"help": "Training set: a select/less_select output folder or Hub dataset id, a bundled name, or any file/folder with the instruction columns."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset`."})
    dataset_id: Optional[str] = field(default=None, metadata={"help": "Hub id of the training set for the card when `dataset` is a local folder (default: the selection's source datasets)."})
    instruction_column: str = field(default="instruction", metadata={"help": "Column with the instruction."})
    input_column: Optional[str] = field(default="input", metadata={"help": "Column with the optional input/context (null if none)."})
    response_column: str = field(default="output", metadata={"help": "Column with the response (the only tokens that carry loss)."})
    chat_template: bool = field(default=True, metadata={"help": "Train on conversational prompt/completion with the tokenizer's chat template; false: plain text."})
    peft_config: Optional[dict] = field(default=None, metadata={"help": "LoRA: a mapping of peft.LoraConfig fields (r, lora_alpha, target_modules, ...); None: full fine-tune."})
    evaluate: Optional[dict] = field(default=None, metadata={"help": "Evaluate the trained model in memory: a mapping of EvaluateConfig fields (tasks, eval_data_dir, limit, response_nll_dataset...)."})
    model_dtype: str = field(default="float32", metadata={"help": "Precision the model's weights load in (float32 on CPU)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output folder that hf_ext did not write "
                                                                         "(folders of earlier hf_ext runs are replaced without it)."})
    hub_endpoint: Optional[str] = field(default=None, metadata={"help": "Hub endpoint URL (default: HF_ENDPOINT or huggingface.co)."})

    check_recipe: ClassVar = staticmethod(refuse_old_hub_keys)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_job_output(self)  # output folder and Hub settings, before any work
        if self.peft_config is not None:
            self.lora_config()  # LoraConfig checks its own fields
        if self.evaluate is not None:
            self.evaluate_config()

    def lora_config(self):
        from peft import LoraConfig

        try:
            return LoraConfig(**{"task_type": "CAUSAL_LM", **self.peft_config})
        except (TypeError, ValueError) as exc:
            raise InputError(f"peft_config is not a valid peft.LoraConfig: {exc}") from None

    def evaluate_config(self) -> EvaluateConfig:
        from hf_ext.config import check_keys

        values = {"model_name_or_path": self.model_name_or_path, **self.evaluate}
        check_keys(EvaluateConfig, values, source="`evaluate` mapping")
        return EvaluateConfig(**values)


def selection_info(dataset: str) -> dict[str, Any] | None:
    """The ``metrics.json`` a select/less_select job wrote beside the data (folder or Hub), or None.

    Args:
        dataset (`str`):
            A local folder (`~` expanded), or a Hub dataset id `namespace/name` whose `metrics.json` is downloaded;
            a file, any other name, or a Hub repo without one (or offline) gives `None`.
    """
    path = Path(os.path.expanduser(dataset))
    if path.is_dir():
        file = path / "metrics.json"
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    if path.exists() or dataset.count("/") != 1:
        return None
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(dataset, "metrics.json", repo_type="dataset")).read_text(encoding="utf-8"))
    except Exception:  # no metrics.json there (or offline): train anyway, the card says "unknown method"
        return None


def load_training_set(config: SFTJobConfig, chat: bool):
    """The training rows in TRL's prompt-completion format, checked for the instruction columns.

    Args:
        config (`SFTJobConfig`):
            Gives the dataset (`dataset`, `dataset_split`) and its `instruction_column`, `input_column` and
            `response_column`.
        chat (`bool`):
            Format each row as a user turn and an assistant turn (for a tokenizer's chat template) instead of plain
            text.

    Returns:
        `tuple`: the formatted `datasets.Dataset` and the pool's source information (licence, source datasets).
    """
    from hf_ext.data import load_pool

    ds, source = load_pool(config.dataset, split=config.dataset_split)
    check_columns(ds.column_names, instruction_column=config.instruction_column, input_column=config.input_column,
                  response_column=config.response_column, what=f"SFT dataset {config.dataset!r}")
    if len(ds) == 0:
        raise InputError(f"SFT dataset {config.dataset!r} has no rows.")
    cols = dict(instruction_column=config.instruction_column, input_column=config.input_column, response_column=config.response_column)
    ds = ds.map(lambda row: to_prompt_completion(row, chat=chat, **cols), remove_columns=ds.column_names, desc="Formatting")
    return ds, source


def build_trainer(config: SFTJobConfig, model, tokenizer, train_dataset, output_dir: str | None = None) -> SFTTrainer:
    """An ``SFTTrainer`` with `config`'s own SFTConfig fields (output_dir replaced if given).

    The trainer never pushes (`push_to_hub=False`: the job pushes the finished folder); LoRA comes from
    `config.peft_config` when set.

    Args:
        config (`SFTJobConfig`):
            The job's settings; its `trl.SFTConfig` fields become the trainer's `args`.
        model ([`~transformers.PreTrainedModel`]):
            The causal LM to fine-tune.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer, passed as `processing_class`; without a pad token, `eos_token` is set as the pad token.
        train_dataset ([`~datasets.Dataset`]):
            Rows in TRL's prompt-completion format (see `load_training_set`).
        output_dir (`str` or `None`, *optional*, defaults to `None`):
            The Trainer's folder; `None` keeps `config.output_dir`.
    """
    sft_fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    values = {k: v for k, v in dataclasses.asdict(config).items() if k in sft_fields}
    if output_dir is not None:
        values["output_dir"] = output_dir
    values["push_to_hub"] = False  # the job pushes the finished folder itself
    args = SFTConfig(**values)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft = config.lora_config() if config.peft_config is not None else None
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer, peft_config=peft)


def _loss_plot(path: Path, history: list[dict[str, Any]]) -> bool:
    points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (response tokens)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _card(config: SFTJobConfig, metrics: dict[str, Any], base_id: str | None, datasets: list[str], has_plot: bool):
    from hf_ext.evaluation.job import _dclm_text, eval_results_for_card, results_table
    from hf_ext.hub.cards import render_model_card

    relation = "adapter" if config.peft_config is not None else "finetune"
    sel = metrics["selection"]
    method = sel.get("method") or "unknown method"
    budget = sel.get("budget")
    selection_text = (f"Trained on the `{method}` selection of {budget} examples"
                      f"{' from ' + sel['pool'] if sel.get('pool') else ''} (read from the selection's metrics.json)."
                      if sel.get("method") else "Trained on a dataset without a selection metrics.json: unknown method, unknown budget.")
    sections = [
        {"title": "Training data", "body": f"{selection_text} Rows: {metrics['train_rows']}. Loss on response tokens only "
                                           f"(TRL completion_only_loss, prompt tokens masked)."},
        {"title": "Training", "body": f"TRL SFTTrainer, {'LoRA ' + json.dumps(config.peft_config) if config.peft_config else 'full fine-tune'}; "
                                      f"{metrics['global_step']} steps, final training loss {metrics['train_loss']:.4f}."
                                      + ("\n\n![training loss](loss.png)" if has_plot else "")},
    ]
    if "eval" in metrics:
        sections.append({"title": "Evaluation", "body": results_table(metrics["eval"]) + "\n\n" + _dclm_text(metrics["eval"].get("dclm"))})
    card_data: dict[str, Any] = {"tags": ["hf-ext", "sft", "trl", f"selection-{sel.get('method') or 'unknown'}"],
                                 "library_name": "peft" if relation == "adapter" else "transformers", "pipeline_tag": "text-generation"}
    if base_id:
        card_data.update(base_model=base_id, base_model_relation=relation)
    if datasets:
        card_data["datasets"] = datasets
    return render_model_card("model_card.md.j2", card_data, eval_results=eval_results_for_card(metrics.get("eval", {})),
                             model_name=config.hub_model_id or f"{(base_id or 'model').split('/')[-1]}-sft-{method.replace(' ', '-')}",
                             title=f"SFT of {base_id or config.model_name_or_path} on a {method} selection", sections=sections)


def run_sft(config: SFTJobConfig) -> dict[str, Any]:
    """Fine-tune, save (model or adapter + tokenizer), evaluate if asked, write metrics.json and the card.

    Args:
        config (`SFTJobConfig`):
            The job's settings: model, dataset and its columns, SFTConfig fields, optional LoRA (`peft_config`) and
            `evaluate` mapping, output folder and Hub push.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from hf_ext.hub.cards import card_hub_id
    from hf_ext.models import load_model, load_tokenizer

    start = time.perf_counter()
    tokenizer = load_tokenizer(config.model_name_or_path, revision=config.model_revision)
    chat = config.chat_template
    if chat and not getattr(tokenizer, "chat_template", None):
        raise InputError(f"chat_template is true but {config.model_name_or_path!r}'s tokenizer has no chat template; "
                         "set chat_template: false to train on plain text.")
    train_ds, source = load_training_set(config, chat)
    eval_config = config.evaluate_config() if config.evaluate is not None else None
    if eval_config is not None and eval_config.tasks:
        from hf_ext.evaluation import resolve_tasks

        resolve_tasks(eval_config.tasks, eval_config.eval_data_dir)  # fail before training, not after
    info = selection_info(config.dataset)
    expected = (info or {}).get("selected_size")
    if isinstance(expected, int) and config.dataset_split == "train" and expected != len(train_ds):
        raise InputError(f"SFT dataset {config.dataset!r} loaded {len(train_ds)} rows but its metrics.json says "
                         f"{expected} were selected; the folder's data files and metrics.json disagree.")
    model = load_model(config.model_name_or_path, AutoModelForCausalLM, revision=config.model_revision,
                       dtype=getattr(torch, config.model_dtype))
    base_id = config.base_model_id or card_hub_id(config.model_name_or_path)
    if config.dataset_id:
        datasets = [config.dataset_id]
    elif source.source_datasets:
        datasets = list(source.source_datasets)
    else:
        datasets = list((info or {}).get("source_datasets") or [])
    with job_output(config, repo_type="model", writer="sft", commit_message=f"hf_ext: SFT of {base_id or config.model_name_or_path}") as out:
        tmp = out.dir
        trainer = build_trainer(config, model, tokenizer, train_ds, output_dir=str(tmp / "trainer"))
        result = trainer.train()
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        import shutil

        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        metrics: dict[str, Any] = {
            "base_model": base_id or config.model_name_or_path, "dataset": config.dataset, "train_rows": len(train_ds),
            "train_loss": float(result.training_loss), "global_step": int(result.global_step),
            "peft": config.peft_config, "seed": config.seed,
            "selection": {"method": (info or {}).get("method"), "budget": (info or {}).get("budget", (info or {}).get("selected_size")),
                          "pool": (info or {}).get("dataset"), "found": info is not None},
            "log_history": trainer.state.log_history,
        }
        if eval_config is not None:
            trained = trainer.model
            if config.peft_config is not None:
                trained = trained.merge_and_unload()
            trained.eval()
            evaluation = evaluate_model(trained, tokenizer, eval_config)
            (tmp / "items.json").write_text(json.dumps(evaluation.pop("items")) + "\n", encoding="utf-8")
            metrics["eval"] = evaluation
        has_plot = _loss_plot(tmp / "loss.png", trainer.state.log_history)
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)
        out.metrics, out.card = metrics, lambda m: _card(config, m, base_id, datasets, has_plot)
    return metrics
