"""Critic-RM (Yu et al. 2024, arXiv 2411.16646): one causal LM that writes a critique and
reads a scalar reward after it.

The model is a causal LM (its LM head writes critiques) plus a scalar reward head ``score``
(a bias-free linear layer on the final hidden state, as in transformers' sequence
classifiers). A training sequence is the critique prompt of (prompt, response) — the chat
template of :func:`hf_ext.critique.prompts.critique_messages` — followed by a critique from
stage 1 and EOS. The reward is read at the last non-pad token, i.e. after the critique. The
loss is

    λ(t) · L_critique + (1 − λ(t)) · L_BT

where L_critique is the next-token loss on the critique tokens only (chosen and rejected
sequences), L_BT is TRL's RewardTrainer loss (−log σ(r_c − r_r − margin) plus
``center_rewards_coefficient · mean((r_c + r_r)²)``), and t = step / max_steps goes from 0
to 1. λ decays from ``critique_weight_start`` to ``critique_weight_end``; the default is a
cosine decay 0.9 → 0.1 (critique-heavy first, reward-heavy last, as the paper describes; its
exact schedule is not published, so all three shapes are configurable).

Inference: :meth:`CriticRewardModel.score` generates m critiques with the LM head, reads the
reward after each, and averages; with ``num_critiques=0`` it is the fast path that reads the
reward right after the critique prompt, without generating.

Files (TRL's config / trainer split): ``config.py`` (:class:`CriticRMConfig`, the λ schedule),
``modeling.py`` (the reward head, the forward pass, the sequence layout, saving and loading the
head), ``trainer.py`` (the collator, :class:`CriticRMTrainer`), ``inference.py``
(:class:`CriticRewardModel`).

Example:
    >>> from hf_ext.testing import tiny_llama, tiny_tokenizer
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"prompt": ["2+2?"] * 4, "chosen": ["4"] * 4, "rejected": ["5"] * 4,
    ...     "chosen_critique": ["Correct. Score: 9"] * 4, "rejected_critique": ["Wrong. Score: 2"] * 4})
    >>> args = CriticRMConfig("/tmp/critic-rm-doc", max_steps=1, per_device_train_batch_size=2,
    ...     report_to="none", bf16=False, activation_checkpointing=False, use_cpu=True)
    >>> trainer = CriticRMTrainer(tiny_llama(), args, train_dataset=ds, processing_class=tiny_tokenizer())
    >>> 0.0 < trainer.critique_weight() <= 0.9
    True
"""

from .config import CriticRMConfig, critique_weight
from .inference import CriticRewardModel
from .modeling import (
    HEAD_FILE,
    REWARD_HEAD,
    _HiddenTap,
    attach_reward_head,
    critique_context,
    critique_tokens,
    forward_rewards,
    load_critic_lm,
    save_reward_head,
)
from .trainer import CriticRMTrainer, DataCollatorForCritiquePreference, compute_reward_accuracy

__all__ = ["CriticRMConfig", "CriticRMTrainer", "CriticRewardModel", "DataCollatorForCritiquePreference", "HEAD_FILE",
           "REWARD_HEAD", "attach_reward_head", "compute_reward_accuracy", "critique_context", "critique_tokens",
           "critique_weight", "forward_rewards", "load_critic_lm", "save_reward_head"]
