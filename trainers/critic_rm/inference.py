"""Critique-then-score inference with a trained Critic-RM."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase
from trl.trainer.utils import pad

from hf_ext.errors import InputError

from ..reward_common import unwrap
from .modeling import _HiddenTap, critique_context, critique_tokens, forward_rewards, load_critic_lm


class CriticRewardModel:
    """Critique-then-score inference with a trained Critic-RM.

    >>> from hf_ext.testing import tiny_llama, tiny_tokenizer
    >>> from trainers.critic_rm import attach_reward_head
    >>> rm = CriticRewardModel(attach_reward_head(tiny_llama()), tiny_tokenizer())
    >>> isinstance(rm.score("2+2?", "4", num_critiques=0), float)
    True

    Args:
        model (`PreTrainedModel`):
            A trained Critic-RM: a causal LM with its reward head attached (:func:`attach_reward_head`).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        max_new_tokens (`int`, *optional*, defaults to `128`):
            Longest critique generated.
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature when several critiques are drawn (one critique is greedy).
        top_p (`float`, *optional*, defaults to `0.95`):
            Nucleus sampling when several critiques are drawn.
    """

    def __init__(self, model: Any, tokenizer: PreTrainedTokenizerBase, *, max_new_tokens: int = 128,
                 temperature: float = 0.7, top_p: float = 0.95) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tap = _HiddenTap(model)

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> CriticRewardModel:
        """A trained Critic-RM from a folder or Hub id (full checkpoint or PEFT adapter, however it
        was saved); refuses one without a saved reward head (see :func:`load_critic_lm`)."""
        from hf_ext.models import load_tokenizer

        return cls(load_critic_lm(path, new_head=False).eval(), load_tokenizer(path), **kwargs)

    @torch.no_grad()
    def rewards(self, sequences: list[list[int]]) -> list[float]:
        """Reward read at the end of each token sequence (batched, right-padded)."""
        device = next(self.model.parameters()).device
        ids = pad([torch.tensor(s) for s in sequences], padding_value=self.tokenizer.pad_token_id, padding_side="right").to(device)
        mask = pad([torch.ones(len(s), dtype=torch.long) for s in sequences], padding_value=0, padding_side="right").to(device)
        handle = unwrap(self.model).get_decoder().register_forward_hook(self._tap)
        try:
            rewards, _ = forward_rewards(self.model, self._tap, ids, mask)
        finally:
            handle.remove()
        return rewards.tolist()

    @torch.no_grad()
    def critique(self, prompt: str, response: str, num_critiques: int = 1, seed: int | None = 0) -> list[str]:
        """Sample `num_critiques` critiques with the model's LM head."""
        context = critique_context(self.tokenizer, prompt, response)
        device = next(self.model.parameters()).device
        ids = torch.tensor([context] * num_critiques, device=device)
        if seed is not None:
            torch.manual_seed(seed)
        sample = num_critiques > 1 and self.temperature > 0
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                  do_sample=sample, temperature=self.temperature if sample else None,
                                  top_p=self.top_p if sample else None, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, len(context):], skip_special_tokens=True)

    @torch.no_grad()
    def score_batch(self, prompts: list[str], responses: list[str], num_critiques: int = 1, *, batch_size: int = 8,
                    seed: int | None = 0) -> list[float]:
        """:meth:`score` for many (prompt, response) pairs, generating in left-padded batches."""
        contexts = [critique_context(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        if num_critiques == 0:
            return [x for i in range(0, len(contexts), batch_size) for x in self.rewards(contexts[i : i + batch_size])]
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        if seed is not None:
            torch.manual_seed(seed)
        sample = num_critiques > 1 and self.temperature > 0
        pad_id = self.tokenizer.pad_token_id
        scores: list[float] = []
        try:
            for start in range(0, len(contexts), batch_size):
                chunk = [c for c in contexts[start : start + batch_size] for _ in range(num_critiques)]
                width = max(len(c) for c in chunk)
                ids = torch.tensor([[pad_id] * (width - len(c)) + c for c in chunk], device=device)
                mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                          temperature=self.temperature if sample else None, top_p=self.top_p if sample else None,
                                          pad_token_id=pad_id)
                critiques = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
                rewards = self.rewards([c + critique_tokens(self.tokenizer, t) for c, t in zip(chunk, critiques)])
                scores += [sum(rewards[i : i + num_critiques]) / num_critiques for i in range(0, len(rewards), num_critiques)]
        finally:
            self.model.train(was_training)
        return scores

    def reward_with_critiques(self, prompt: str, response: str, critiques: list[str]) -> list[float]:
        """Reward after each given critique of (prompt, response)."""
        context = critique_context(self.tokenizer, prompt, response)
        return self.rewards([context + critique_tokens(self.tokenizer, c) for c in critiques])

    def score(self, prompt: str, response: str, num_critiques: int = 1, seed: int | None = 0) -> float:
        """Mean reward over `num_critiques` generated critiques; 0 = fast path (no generation)."""
        if not isinstance(num_critiques, int) or num_critiques < 0:
            raise InputError(f"num_critiques must be a non-negative integer, got {num_critiques!r}.")
        was_training = self.model.training
        self.model.eval()
        try:
            if num_critiques == 0:
                return self.rewards([critique_context(self.tokenizer, prompt, response)])[0]
            critiques = self.critique(prompt, response, num_critiques, seed=seed)
            rewards = self.reward_with_critiques(prompt, response, critiques)
            return float(sum(rewards) / len(rewards))
        finally:
            self.model.train(was_training)
