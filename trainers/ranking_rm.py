"""Ranking reward model (Llama 3, arXiv 2407.21783 §4.1.2): rows may rank more than two
responses (edited > chosen > rejected); the loss is the Bradley–Terry loss without margin,
averaged over all ordered pairs (i better than j) of every row. All responses of a row go
through the model once, so a row of k responses costs k forward passes for k(k−1)/2 pairs.
With two responses per row it is exactly TRL's RewardTrainer loss.

Dataset: ``prompt`` plus either ``responses`` (a list, best first) or the columns named by
``RankingRewardConfig.ranked_columns`` (default ``["edited", "chosen", "rejected"]``; missing
ones are skipped, so plain chosen/rejected data works unchanged). Tokenized rows use
``ranked_ids`` (a list of token lists, best first).

Example:
    >>> from datasets import Dataset
    >>> from hf_ext.testing import tiny_sequence_classifier, tiny_tokenizer
    >>> ds = Dataset.from_dict({"prompt": ["Hi."], "edited": [" Hello, how can I help?"],
    ...                         "chosen": [" Hello."], "rejected": [" Go away."]})
    >>> args = RankingRewardConfig("/tmp/rank-rm-doc", report_to="none", bf16=False, use_cpu=True)
    >>> trainer = RankingRewardTrainer(tiny_sequence_classifier(), args, train_dataset=ds,
    ...                                processing_class=tiny_tokenizer())
    >>> len(trainer.train_dataset[0]["ranked_ids"])
    3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers.data.data_collator import DataCollatorMixin
from trl import RewardTrainer
from trl.trainer.utils import pad

from hf_ext.errors import InputError
from hf_ext.outputs import SafeResumeMixin

from .reward_common import (
    RewardModelConfig,
    check_packed_attention,
    log_num_tokens,
    model_inputs,
    pack_sequences,
    unwrap,
    use_packed_sdpa,
)


@dataclass
class RankingRewardConfig(RewardModelConfig):
    """TRL's RewardConfig plus where the ranked responses live.

    Args:
        ranked_columns (`list[str]`, *optional*, defaults to `['edited', 'chosen', 'rejected']`):
            Response columns from best to worst; missing columns are skipped (a `responses` list column, best first,
            is used instead when present).
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column with the prompt text (prepended to each response).
    """

    ranked_columns: list[str] = field(
        default_factory=lambda: ["edited", "chosen", "rejected"],
        metadata={"help": "Response columns from best to worst; missing columns are skipped (a `responses` list "
                          "column, best first, is used instead when present)."},
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column with the prompt text (prepended to each response)."})


def ranked_pairs(num_responses: int) -> list[tuple[int, int]]:
    """All ordered pairs (better, worse) of a best-first ranking.

    Args:
        num_responses (`int`):
            Number of ranked responses; gives `num_responses * (num_responses - 1) / 2` pairs.
    """
    return [(i, j) for i in range(num_responses) for j in range(i + 1, num_responses)]


def pooled_index(inputs: dict[str, Any], pad_token_id: int | None) -> torch.Tensor:
    """Flat index of the token each packed sequence's reward is read at: where transformers'
    sequence classifiers pool a padded row, the last token that is not the pad token (so a
    final EOS that doubles as the pad token is skipped exactly as in the padded batch).

    Args:
        inputs (`dict[str, Any]`):
            A packed batch with `input_ids` and `position_ids` (restarting at 0 per sequence).
        pad_token_id (`int` or `None`):
            The tokenizer's pad token id, skipped at the end of a sequence; `None` reads at the last token.
    """
    ids, position_ids = inputs["input_ids"].reshape(-1), inputs["position_ids"].reshape(-1)
    sequence = (position_ids == 0).long().cumsum(0) - 1
    positions = torch.arange(ids.numel(), device=ids.device)
    candidates = positions if pad_token_id is None else torch.where(ids != pad_token_id, positions, positions - position_ids)
    out = torch.zeros(int(sequence[-1]) + 1, dtype=torch.long, device=ids.device)
    return out.scatter_reduce(0, sequence, candidates, reduce="amax", include_self=False)


@dataclass
class DataCollatorForRanking(DataCollatorMixin):
    """Flattens every row's ranked responses into one right-padded batch (or, with
    ``padding_free``, one packed row with ``position_ids`` restarting per response) and records,
    per pair, the indices of the better and the worse response.

    Args:
        pad_token_id (`int`):
            Token id that pads `input_ids`.
        pad_to_multiple_of (`int` or `None`, *optional*, defaults to `None`):
            Pad the batch length to a multiple of this value (padded batches only).
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Type of tensors to return; only `"pt"` is supported.
        padding_free (`bool`, *optional*, defaults to `False`):
            Pack all responses into one row with `position_ids` and no `attention_mask`, instead of padding them.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    padding_free: bool = False

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        sequences, better, worse = [], [], []
        for example in examples:
            offset = len(sequences)
            sequences.extend(torch.tensor(ids) for ids in example["ranked_ids"])
            for i, j in ranked_pairs(len(example["ranked_ids"])):
                better.append(offset + i)
                worse.append(offset + j)
        index = {"better_index": torch.tensor(better, dtype=torch.long), "worse_index": torch.tensor(worse, dtype=torch.long)}
        if self.padding_free:
            return {**pack_sequences(sequences), **index}
        return {
            "input_ids": pad(sequences, padding_value=self.pad_token_id, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of),
            "attention_mask": pad([torch.ones_like(s) for s in sequences], padding_value=0, padding_side="right",
                                  pad_to_multiple_of=self.pad_to_multiple_of),
            **index,
        }


class RankingRewardTrainer(SafeResumeMixin, RewardTrainer):
    """TRL's RewardTrainer over ranked rows (Llama 3): all ordered pairs, no margin.

    Args:
        model (`str` or `PreTrainedModel`):
            The reward model: a sequence classifier with one label, or its Hub id or folder.
        args (`RankingRewardConfig` or `None`, *optional*, defaults to `None`):
            Training settings (TRL's `RewardConfig` fields plus the ranking ones); ``None``: the defaults, with
            ``output_dir="ranking-rm"``.
        data_collator (`Any`, *optional*, defaults to `None`):
            Batches of ranked rows; ``None``: a :class:`DataCollatorForRanking` for `processing_class`.
        train_dataset (`datasets.Dataset`, *optional*, defaults to `None`):
            ``prompt`` plus ``responses`` (a list, best first) or the columns of ``args.ranked_columns``
            (edited > chosen > rejected), tokenised into ``ranked_ids``.
        eval_dataset (`datasets.Dataset`, *optional*, defaults to `None`):
            Held-out rows of the same shape.
        processing_class (`PreTrainedTokenizerBase`, *optional*, defaults to `None`):
            The tokenizer, as in TRL.
        **kwargs:
            Passed to TRL's `RewardTrainer` (callbacks, peft_config, ...).
    """

    _tag_names = ["trl", "reward-trainer", "ranking-rm", "hf_ext"]

    def __init__(self, model: Any, args: RankingRewardConfig | None = None, data_collator: Any = None,
                 train_dataset: Any = None, eval_dataset: Any = None, processing_class: Any = None, **kwargs: Any) -> None:
        args = args if args is not None else RankingRewardConfig("ranking-rm")
        if not isinstance(args, RankingRewardConfig):
            raise InputError(f"RankingRewardTrainer needs a RankingRewardConfig, got {type(args).__name__}.")
        if data_collator is None and processing_class is not None:
            processing_class.pad_token = processing_class.pad_token or processing_class.eos_token  # TRL's rule
            data_collator = DataCollatorForRanking(processing_class.pad_token_id, args.pad_to_multiple_of, padding_free=args.padding_free)
        super().__init__(model, args, data_collator=data_collator, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)
        self._scores = None
        if args.padding_free:
            head = getattr(unwrap(self.model), "score", None)
            if not isinstance(head, torch.nn.Module):
                raise InputError(f"padding_free=True reads the reward of every packed response from the head `score` "
                                 f"(transformers' *ForSequenceClassification), which {type(unwrap(self.model)).__name__} "
                                 "does not have; set padding_free=False.")
            use_packed_sdpa(self.model)
            check_packed_attention(self.model)
            head.register_forward_hook(self._keep_scores)  # per-position rewards, before the classifier pools them

    def _keep_scores(self, module: Any, args: Any, output: torch.Tensor) -> None:
        self._scores = output

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["ranked_ids"]

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: RankingRewardConfig, dataset_name: str) -> Any:
        columns = list(dataset.column_names or [])
        if "margin" in columns:
            raise InputError(f"The {dataset_name} dataset has a `margin` column, but the Llama 3 ranking loss uses no margin. "
                             "Drop the column, or train pairs with RewardTrainer / CriticRMTrainer to use margins.")
        if "ranked_ids" not in columns:
            if "responses" in columns:
                get = lambda ex: list(ex["responses"])  # noqa: E731
            else:
                present = [c for c in args.ranked_columns if c in columns]
                if len(present) < 2:
                    raise InputError(
                        f"The {dataset_name} dataset needs at least two ranked response columns out of {args.ranked_columns} "
                        f"(or a `responses` list column), but it has {columns}. Set `ranked_columns` to your column names, best first."
                    )
                get = lambda ex: [ex[c] for c in present if ex[c] is not None]  # noqa: E731
            if args.prompt_column not in columns:
                raise InputError(f"The {dataset_name} dataset has no prompt column {args.prompt_column!r}; it has {columns}.")
            if isinstance(dataset[0][args.prompt_column], list):
                raise InputError("RankingRewardTrainer takes plain-text prompts; apply the chat template first "
                                 "(tokenizer.apply_chat_template(..., tokenize=False)).")
            eos = processing_class.eos_token

            def tokenize(example: dict[str, Any]) -> dict[str, Any]:
                texts = [example[args.prompt_column] + r + ("" if r.endswith(eos) else eos) for r in get(example)]
                return {"ranked_ids": [processing_class(t)["input_ids"] for t in texts]}

            dataset = dataset.map(tokenize, remove_columns=columns, desc=f"Tokenizing {dataset_name} rankings")
        if args.max_length is not None:
            dataset = dataset.filter(lambda ids: all(len(x) <= args.max_length for x in ids), input_columns="ranked_ids",
                                     desc=f"Filtering {dataset_name} >{args.max_length} tokens")
        dataset = dataset.filter(lambda ids: len(ids) >= 2, input_columns="ranked_ids")
        return dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        outputs = model(**model_inputs(inputs))
        if "attention_mask" in inputs:
            rewards = outputs.logits.squeeze(-1)
        else:  # packed: the head's output where the classifier would pool a padded row
            scores, self._scores = self._scores, None
            rewards = scores.reshape(-1)[pooled_index(inputs, unwrap(model).config.pad_token_id)]
        better, worse = rewards[inputs["better_index"]], rewards[inputs["worse_index"]]
        loss = -F.logsigmoid(better - worse).mean()  # no margin (Llama 3)
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean((better + worse) ** 2)
        log_num_tokens(self, inputs, mode)
        with torch.no_grad():
            gather = lambda t: self.accelerator.gather_for_metrics(t.detach().float().reshape(1)).mean().item()  # noqa: E731
            self._metrics[mode]["mean_reward"].append(gather(rewards.mean()))
            self._metrics[mode]["accuracy"].append(gather((better > worse).float().mean()))
            self._metrics[mode]["margin"].append(gather((better - worse).mean()))
            self._metrics[mode]["pairs"].append(float(better.numel()))
        if return_outputs:
            return loss, {"logits": torch.stack([better, worse], dim=1)}
        return loss
