"""Evaluation on lm-evaluation-harness: offline task YAMLs for the bundled evaluation sets,
an in-memory ``evaluate_model``, response NLL and DCLM aggregates, and the ``evaluate`` job."""

from .formatting import context_continuation, prompt_text, to_prompt_completion
from .job import EvaluateConfig, eval_results_for_card, evaluate_model, load_for_eval, run_evaluate
from .local_tasks import LOCAL_TASKS, local_task_config, resolve_tasks

__all__ = ["EvaluateConfig", "evaluate_model", "run_evaluate", "load_for_eval", "eval_results_for_card", "LOCAL_TASKS",
           "local_task_config", "resolve_tasks", "prompt_text", "to_prompt_completion", "context_continuation"]
