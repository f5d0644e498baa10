"""Response NLL: mean negative log-likelihood per token of reference responses on a held-out
instruction set, scored by lm-eval's ``HFLM.loglikelihood`` (no scorer of our own).

At 135M parameters multiple-choice accuracy sits near chance; how well a model predicts good
responses to new instructions moves with fine-tuning long before that. Each item is the
response's summed log-likelihood divided by its token count; the metric is the mean over
items, with the standard error of that mean.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InputError
from .formatting import check_columns, context_continuation, to_prompt_completion

__all__ = ["response_nll"]


def response_nll(lm, config) -> dict[str, Any]:
    """Score `config.response_nll_dataset` with an lm-eval ``HFLM``; return mean, stderr, n, items.

    Args:
        lm (`lm_eval.models.huggingface.HFLM`):
            The model under evaluation, wrapped by lm-eval; its tokenizer formats and counts the responses.
        config (`EvaluateConfig`):
            The evaluation job's config: the `response_nll_*` settings (dataset, split, limit, max tokens), the
            instruction/input/response columns and `chat_template`.
    """
    from lm_eval.api.instance import Instance

    from ..data import load_pool

    ds, source = load_pool(config.response_nll_source(), split=config.response_nll_split)
    check_columns(ds.column_names, instruction_column=config.instruction_column, input_column=config.input_column,
                  response_column=config.response_column, what=f"response_nll_dataset {config.response_nll_dataset!r}")
    if config.response_nll_limit is not None:
        ds = ds.select(range(min(config.response_nll_limit, len(ds))))
    if len(ds) == 0:
        raise InputError(f"response_nll_dataset {config.response_nll_dataset!r} has no rows.")
    tokenizer = lm.tokenizer
    chat = config.chat_template
    if chat and not getattr(tokenizer, "chat_template", None):
        raise InputError("chat_template is true but the tokenizer has no chat template; set chat_template: false "
                         "(plain-text prompts) or use a tokenizer with one.")
    requests, counts = [], []
    for i, row in enumerate(ds):
        ids = tokenizer(row[config.response_column], add_special_tokens=False)["input_ids"][: config.response_nll_max_tokens]
        row = {**row, config.response_column: tokenizer.decode(ids)}
        context, continuation = context_continuation(
            to_prompt_completion(row, chat=chat, instruction_column=config.instruction_column,
                                 input_column=config.input_column, response_column=config.response_column), tokenizer)
        counts.append(len(lm._encode_pair(context, continuation)[1]))  # the tokens lm-eval scores
        requests.append(Instance(request_type="loglikelihood", doc=row, arguments=(context, continuation), idx=0))
    scores = lm.loglikelihood(requests)
    items = [-ll / n for (ll, _), n in zip(scores, counts)]
    mean = sum(items) / len(items)
    var = sum((x - mean) ** 2 for x in items) / max(len(items) - 1, 1)
    name = source.source_datasets[0] if source.source_datasets else source.name
    return {"mean": mean, "stderr": math.sqrt(var / len(items)), "n": len(items), "tokens": sum(counts), "dataset": name, "items": items}
