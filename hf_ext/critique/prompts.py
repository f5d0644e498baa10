"""Every prompt that critique generation sends, in one place.

Critic-RM (Yu et al. 2024, arXiv 2411.16646) asks an instruction-tuned LM to critique a
(prompt, response) and end with a discrete score; the Summ variant asks it to merge the kept
critiques into one, and the Rank variant asks a meta-judge to order them. All prompts are
chat conversations (lists of ``{"role", "content"}``) so the same text goes to a local
transformers model (through its chat template) or to an OpenAI-compatible server.

- :data:`CRITIQUE_SYSTEM` / :data:`CRITIQUE_USER`: one critique, which must end with the line
  ``Score: N`` where N is an integer from :data:`SCORE_MIN` to :data:`SCORE_MAX`; the request
  follows two worked examples (:data:`CRITIQUE_EXAMPLES`) as earlier chat turns.
- :data:`SUMMARY_USER`: several kept critiques of one response → one critique that also ends
  with ``Score: N`` (Summ variant).
- :data:`RANK_USER`: several numbered critiques → the numbers from most to least helpful on a
  line ``Ranking: 2 > 1 > 3`` (Rank variant).

The critique template is also what :class:`trainers.CriticRMTrainer` formats as the user turn
of its training sequences, so a trained Critic-RM sees the same text at inference.

>>> conv = critique_messages("What is 2+2?", "4")
>>> [m["role"] for m in conv]
['system', 'user', 'assistant', 'user', 'assistant', 'user']
>>> conv[-1]["content"].endswith("on a last line 'Score: N'.")
True
"""

from __future__ import annotations

SCORE_MIN, SCORE_MAX = 1, 10

CRITIQUE_SYSTEM = (
    "You are a careful and impartial reviewer of AI assistant answers. You point out what is "
    "correct, what is wrong or missing, and how helpful and harmless the answer is."
)
CRITIQUE_USER = (
    "[Question]\n{prompt}\n\n[Answer]\n{response}\n\n"
    "Critique the answer in one to three sentences (is it correct, helpful, complete and safe?), "
    "then rate it from " + str(SCORE_MIN) + " (very poor) to " + str(SCORE_MAX) + " (excellent) on a last line 'Score: N'."
)
# Two worked examples (written for this prompt, not taken from any dataset). Small models such
# as SmolLM2-135M-Instruct almost never end with a parsable score without them (0 of 16 in a
# zero-shot trial, 8 of 8 with them).
CRITIQUE_EXAMPLES = (
    ("What is the boiling point of water at sea level?", "Water boils at 50 degrees Celsius.",
     "The answer is wrong: water boils at 100 degrees Celsius at sea level.\nScore: 2"),
    ("Give a synonym of 'happy'.", "A synonym of 'happy' is 'joyful'.",
     "Correct and concise: 'joyful' means happy.\nScore: 9"),
)
SUMMARY_USER = (
    "[Question]\n{prompt}\n\n[Answer]\n{response}\n\n[Reviews]\n{critiques}\n\n"
    "Merge these reviews into one short critique that keeps their shared, well-founded points. "
    "End with a last line of the form:\nScore: N"
)
RANK_USER = (
    "[Question]\n{prompt}\n\n[Answer]\n{response}\n\n[Reviews]\n{critiques}\n\n"
    "Rank the reviews from most to least accurate and helpful. Answer with one line of the form:\n"
    "Ranking: 2 > 1 > 3"
)


def critique_messages(prompt: str, response: str, *, examples: bool = True) -> list[dict[str, str]]:
    """The conversation that asks for one critique of `response` to `prompt`, after the
    worked examples of :data:`CRITIQUE_EXAMPLES` (``examples=False`` leaves them out).

    Args:
        prompt (`str`):
            The question the response answers.
        response (`str`):
            The answer to critique.
        examples (`bool`, *optional*, defaults to `True`):
            Put the worked examples before the request as earlier user/assistant turns.
    """
    messages = [{"role": "system", "content": CRITIQUE_SYSTEM}]
    for question, answer, critique in CRITIQUE_EXAMPLES if examples else ():
        messages.append({"role": "user", "content": CRITIQUE_USER.format(prompt=question, response=answer)})
        messages.append({"role": "assistant", "content": critique})
    messages.append({"role": "user", "content": CRITIQUE_USER.format(prompt=prompt, response=response)})
    return messages


def _numbered(critiques: list[str]) -> str:
    return "\n\n".join(f"Review {i}:\n{c.strip()}" for i, c in enumerate(critiques, start=1))


def summary_messages(prompt: str, response: str, critiques: list[str]) -> list[dict[str, str]]:
    """The conversation that merges kept critiques into one (Summ variant).

    Args:
        prompt (`str`):
            The question the response answers.
        response (`str`):
            The answer the critiques are about.
        critiques (`list[str]`):
            The kept critiques, shown as "Review 1", "Review 2", ... (stripped).
    """
    text = SUMMARY_USER.format(prompt=prompt, response=response, critiques=_numbered(critiques))
    return [{"role": "system", "content": CRITIQUE_SYSTEM}, {"role": "user", "content": text}]


def rank_messages(prompt: str, response: str, critiques: list[str]) -> list[dict[str, str]]:
    """The conversation that asks a meta-judge to rank numbered critiques (Rank variant).

    Args:
        prompt (`str`):
            The question the response answers; the meta-judge sees it under ``[Question]``, then the response under
            ``[Answer]`` and the numbered critiques under ``[Reviews]``.
        response (`str`):
            The answer the critiques are about.
        critiques (`list[str]`):
            The critiques to rank, numbered from 1 in this order (the numbers `parse_ranking` reads back).
    """
    text = RANK_USER.format(prompt=prompt, response=response, critiques=_numbered(critiques))
    return [{"role": "system", "content": CRITIQUE_SYSTEM}, {"role": "user", "content": text}]
