"""CriticRMTrainer: TRL's RewardTrainer with a critique-writing LM head, and its collator."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from transformers import PreTrainedTokenizerBase, set_seed
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import pad

from hf_ext.errors import InputError
from hf_ext.outputs import SafeResumeMixin

from ..reward_common import (
    check_packed_attention,
    log_num_tokens,
    pack_sequences,
    packed_sums,
    reward_index,
    unwrap,
    use_packed_sdpa,
)
from .config import CriticRMConfig, critique_weight
from .modeling import (
    REWARD_HEAD,
    _HiddenTap,
    attach_reward_head,
    critique_context,
    critique_tokens,
    forward_rewards,
    load_critic_lm,
    save_reward_head,
)


@dataclass
class DataCollatorForCritiquePreference(DataCollatorForPreference):
    """TRL's preference collator plus ``critique_mask`` (1 on critique tokens), padded like
    ``input_ids``: chosen rows first, then rejected rows. With ``padding_free`` (TRL's name) all
    of them are concatenated into one row instead, with ``position_ids`` restarting per sequence
    and no ``attention_mask``.

    Args:
        pad_token_id (`int`):
            Token id that pads `input_ids`.
        pad_to_multiple_of (`int` or `None`, *optional*, defaults to `None`):
            Pad the batch length (and `critique_mask`) to a multiple of this value (padded batches only).
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Type of tensors to return; only `"pt"` is supported.
        padding_free (`bool`, *optional*, defaults to `False`):
            Concatenate all chosen and rejected sequences into one row with `position_ids` restarting per sequence
            and no `attention_mask`, instead of padding them.
    """

    padding_free: bool = False

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        masks = []
        for side in ("chosen", "rejected"):
            for example in examples:
                mask = example.get(f"{side}_critique_mask")
                masks.append(torch.tensor(mask if mask is not None else [0] * len(example[f"{side}_ids"])))
        if self.padding_free:
            output = pack_sequences([torch.tensor(e[f"{side}_ids"]) for side in ("chosen", "rejected") for e in examples])
            output["critique_mask"] = torch.cat(masks)[None]
            if "margin" in examples[0]:
                output["margin"] = torch.tensor([e["margin"] for e in examples], dtype=torch.float)
            return output
        output = super().torch_call(examples)
        output["critique_mask"] = pad(masks, padding_value=0, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)
        return output


class CriticRMTrainer(SafeResumeMixin, RewardTrainer):
    """TRL's RewardTrainer with a critique-writing LM head (Critic-RM). See the module docstring.

    Args:
        model (`str`, `os.PathLike`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            A causal LM id/path or instance (a reward head ``score`` is added), or a checkpoint saved by this
            trainer. An id or path is loaded with :func:`load_critic_lm` and `args.model_init_kwargs` (`dtype`
            defaults to float32); a `PeftModel` must already carry the head.
        args ([`CriticRMConfig`], *optional*, defaults to `None`):
            Configuration for this trainer. If `None`, a default configuration is used, with `output_dir`
            `"<model name>-CriticRM"`.
        data_collator ([`~transformers.DataCollator`], *optional*, defaults to `None`):
            Function that forms a batch from processed rows. If `None`, a [`DataCollatorForCritiquePreference`]
            built from `args.pad_to_multiple_of` and `args.padding_free` is used.
        train_dataset ([`~datasets.Dataset`], *optional*, defaults to `None`):
            Rows with ``prompt``, ``chosen``, ``rejected``, ``chosen_critique``, ``rejected_critique`` (and
            optionally ``margin``), or already tokenized rows with ``chosen_ids``, ``rejected_ids``,
            ``chosen_critique_mask``, ``rejected_critique_mask``. Column names follow `args.prompt_column`,
            `args.chosen_critique_column` and `args.rejected_critique_column`.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*, defaults to `None`):
            The same; critique columns may be missing (the reward is then read right after the critique prompt:
            the fast path).
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*, defaults to `None`):
            Tokenizer used to process the data. If `None`, it is loaded from the model's name. Without a pad token,
            `eos_token` pads (TRL's rule) when the default collator is built.
        peft_config ([`~peft.PeftConfig`], *optional*, defaults to `None`):
            PEFT configuration used to wrap the model; ``score`` is added to (a copy of) its ``modules_to_save`` so
            the reward head trains and is saved with the adapter. If `None`, the model is not wrapped.
        **kwargs:
            Other arguments as in ``trl.RewardTrainer`` (`compute_metrics`, `callbacks`, `optimizers`, ...).
    """

    _tag_names = ["trl", "reward-trainer", "critic-rm", "hf_ext"]
    _name = "Critic-RM"

    def __init__(self, model: Any, args: CriticRMConfig | None = None, data_collator: Any = None, train_dataset: Any = None,
                 eval_dataset: Any = None, processing_class: PreTrainedTokenizerBase | None = None, peft_config: Any = None,
                 **kwargs: Any) -> None:
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = CriticRMConfig(f"{str(name).rstrip('/').split('/')[-1]}-CriticRM")
        if not isinstance(args, CriticRMConfig):
            raise InputError(f"CriticRMTrainer needs a CriticRMConfig, got {type(args).__name__}.")
        set_seed(args.seed)  # as TRL does before it adds a random head: reproducible head init
        if isinstance(model, (str, os.PathLike)):
            model = load_critic_lm(str(model), **(args.model_init_kwargs or {}) if isinstance(args.model_init_kwargs, dict) else {})
        elif not is_peft_model(model):
            model = attach_reward_head(model)
        if peft_config is not None:
            peft_config = _with_reward_head_saved(peft_config)
        if processing_class is None:
            from hf_ext.models import load_tokenizer

            processing_class = load_tokenizer(getattr(model.config, "_name_or_path", None) or str(model))
        if data_collator is None:
            # TRL's rule: no pad token → EOS pads (RewardModelConfig refuses TRL's deprecated args.pad_token)
            processing_class.pad_token = processing_class.pad_token or processing_class.eos_token
            data_collator = DataCollatorForCritiquePreference(
                pad_token_id=processing_class.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of, padding_free=args.padding_free
            )
        super().__init__(model, args, data_collator=data_collator, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, peft_config=peft_config, **kwargs)
        if args.padding_free:
            use_packed_sdpa(self.model)
            check_packed_attention(self.model)
        self._tap = _HiddenTap(self.model)
        unwrap(self.model).get_decoder().register_forward_hook(self._tap)
        if is_peft_model(self.model):  # a model built from a config saves base_model_name_or_path=None
            name = getattr(unwrap(self.model).config, "_name_or_path", None) or None
            for adapter_config in self.model.peft_config.values():
                adapter_config.base_model_name_or_path = adapter_config.base_model_name_or_path or name

    # ---- data
    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "chosen_critique_mask", "rejected_critique_mask"]

    def _prepare_dataset(self, dataset: Any, processing_class: PreTrainedTokenizerBase, args: CriticRMConfig, dataset_name: str) -> Any:
        columns = list(dataset.column_names or [])
        if "chosen_ids" in columns and "rejected_ids" in columns:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        needed = [args.prompt_column, "chosen", "rejected"]
        missing = [c for c in needed if c not in columns]
        critique_cols = [args.chosen_critique_column, args.rejected_critique_column]
        has_critiques = all(c in columns for c in critique_cols)
        if dataset_name == "train" and not has_critiques:
            missing += [c for c in critique_cols if c not in columns]
        if missing:
            raise InputError(
                f"The {dataset_name} dataset for CriticRMTrainer is missing column(s) {missing}; it has {columns}. "
                "Generate critiques with hf_ext.critique.generate_critiques + consistency_filter + to_training_pairs, "
                "or rename your columns (prompt_column / chosen_critique_column / rejected_critique_column)."
            )

        def tokenize(example: dict[str, Any]) -> dict[str, Any]:
            out = {}
            for side, critique_col in zip(("chosen", "rejected"), critique_cols):
                context = critique_context(processing_class, example[args.prompt_column], example[side])
                critique = critique_tokens(processing_class, example[critique_col], args.max_critique_length) if has_critiques else []
                out[f"{side}_ids"] = context + critique
                out[f"{side}_critique_mask"] = [0] * len(context) + [1] * len(critique)
            return out

        keep = [c for c in ("margin",) if c in columns]
        dataset = dataset.map(tokenize, remove_columns=[c for c in columns if c not in keep], desc=f"Tokenizing {dataset_name} critiques")
        before = len(dataset)
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if len(dataset) < before:
            import logging

            logging.getLogger(__name__).warning(
                "%d of %d %s rows are longer than max_length=%s and were dropped (as TRL's RewardTrainer does).",
                before - len(dataset), before, dataset_name, args.max_length)
        return dataset

    # ---- loss
    def critique_weight(self) -> float:
        """λ at the current step."""
        max_steps = max(1, self.state.max_steps or self.args.max_steps or 1)
        return critique_weight(self.args.critique_weight_schedule, self.args.critique_weight_start,
                               self.args.critique_weight_end, self.state.global_step / max_steps)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        lam = self.critique_weight()
        critique_mask, input_ids = inputs["critique_mask"], inputs["input_ids"]
        packed = "attention_mask" not in inputs  # padding_free: one row, position_ids restart per sequence
        has_critique = bool(critique_mask.any())
        keep: int | torch.Tensor = 1
        if has_critique and packed:  # LM logits only where the next token is a critique token
            keep = torch.nonzero(critique_mask[0, 1:]).squeeze(-1)
        elif has_critique:  # LM logits only from the earliest critique token on: the vocabulary head is costly
            first = int(critique_mask.float().argmax(-1)[critique_mask.any(-1)].min())
            keep = input_ids.shape[1] - first + 1
        rewards, outputs = forward_rewards(model, self._tap, input_ids, inputs.get("attention_mask"), keep,
                                           position_ids=inputs.get("position_ids"))
        all_rewards = self._tap.last.reshape(-1)
        rewards_chosen, rewards_rejected = torch.chunk(rewards, chunks=2)
        bt_loss = self._bradley_terry(rewards_chosen, rewards_rejected, inputs.get("margin"))
        if self.args.fast_path_weight > 0 and has_critique:
            # Reward at the last token before the critique (the last token itself for rows without one).
            counts = packed_sums(critique_mask, inputs["position_ids"]) if packed else critique_mask.sum(-1)
            fast = all_rewards[reward_index(inputs) - counts]
            w = self.args.fast_path_weight
            bt_loss = (1 - w) * bt_loss + w * self._bradley_terry(*torch.chunk(fast, chunks=2), inputs.get("margin"))
        self._tap.last = None

        if has_critique and packed:
            labels = input_ids[0, keep + 1]
            critique_loss = F.cross_entropy(outputs.logits[0].float(), labels)
        elif has_critique:
            logits = outputs.logits[:, :-1].float()  # position p predicts token p + 1
            labels = input_ids[:, -keep + 1 :].masked_fill(critique_mask[:, -keep + 1 :] == 0, -100)
            critique_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        else:  # keep the LM head in the graph (DDP waits for a gradient of every trainable parameter)
            critique_loss = 0.0 * outputs.logits.sum()
        loss = lam * critique_loss + (1.0 - lam) * bt_loss if lam > 0 else bt_loss

        log_num_tokens(self, inputs, mode)
        with torch.no_grad():
            gather = lambda t: self.accelerator.gather_for_metrics(t.detach().float().reshape(1)).mean().item()  # noqa: E731
            all_rewards = self.accelerator.gather(rewards.detach())
            self._metrics[mode]["min_reward"].append(all_rewards.min().item())
            self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
            self._metrics[mode]["max_reward"].append(all_rewards.max().item())
            self._metrics[mode]["accuracy"].append(gather((rewards_chosen > rewards_rejected).float().mean()))
            self._metrics[mode]["margin"].append(gather((rewards_chosen - rewards_rejected).mean()))
            self._metrics[mode]["reward_loss"].append(gather(bt_loss))
            self._metrics[mode]["critique_loss"].append(gather(critique_loss))
            self._metrics[mode]["critique_tokens"].append(gather(critique_mask.sum()))
            self._metrics[mode]["critique_weight"].append(lam)
        if return_outputs:
            return loss, {"logits": torch.stack([rewards_chosen, rewards_rejected], dim=1)}
        return loss

    def _bradley_terry(self, rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor, margin: torch.Tensor | None) -> torch.Tensor:
        """Exactly trl.RewardTrainer.compute_loss: −log σ(r_c − r_r − margin) + centering."""
        if margin is not None:
            loss = -F.logsigmoid(rewards_chosen - rewards_rejected - margin).mean()
        else:
            loss = -F.logsigmoid(rewards_chosen - rewards_rejected).mean()
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        return loss

    # ---- inference
    def score(self, prompt: str, response: str, num_critiques: int = 1, **generate_kwargs: Any) -> float:
        """Reward of `response` to `prompt`: mean over `num_critiques` generated critiques
        (0 = fast path without generation)."""
        scorer = CriticRewardModel(self.model, self.processing_class)
        return scorer.score(prompt, response, num_critiques=num_critiques, **generate_kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            save_reward_head(self.model, output_dir)


def _with_reward_head_saved(peft_config: Any) -> Any:
    """PEFT pitfall: a head that is not in ``modules_to_save`` stays frozen at its random init
    and is missing from the saved adapter. Add ``score`` (on a copy of the config)."""
    import copy

    config = copy.deepcopy(peft_config)
    modules = list(config.modules_to_save or [])
    if REWARD_HEAD not in modules:
        modules.append(REWARD_HEAD)
    config.modules_to_save = modules
    return config


def compute_reward_accuracy(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for reward trainers whose predictions are (pairs, 2) = (chosen,
    rejected) rewards; uses the ``reward_accuracy`` evaluate module (loaded by local path).

    Args:
        eval_pred ([`~transformers.EvalPrediction`] or `tuple`):
            What `Trainer` passes to `compute_metrics`: predictions of shape `(pairs, 2)`, chosen then rejected
            reward (the first element is used when predictions are a tuple).
    """
    import numpy as np

    from hf_ext.metrics import load_metric

    predictions = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred[0]
    predictions = np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions, dtype=np.float64)
    if predictions.ndim != 2 or predictions.shape[1] != 2:
        raise InputError(f"compute_reward_accuracy expects (pairs, 2) rewards (chosen, rejected), got shape {predictions.shape}.")
    metric = load_metric("reward_accuracy")
    return metric.compute(chosen_rewards=predictions[:, 0].tolist(), rejected_rewards=predictions[:, 1].tolist())
