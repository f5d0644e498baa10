"""Offline lm-evaluation-harness tasks shipped with hf_ext, and the resolver from task names
to what ``lm_eval.simple_evaluate`` takes.

Each set in the ``eval/`` data folder (ARC, BoolQ, COPA, CommonsenseQA, LAMBADA, MMLU-Redux,
OpenBookQA, PIQA, SIQA, WinoGrande, BBH, GSM8K) has an lm-eval task YAML in
``hf_ext/evaluation/tasks/`` with ``dataset_path: json`` and a file name in
``dataset_kwargs.data_files``; :func:`resolve_tasks` joins that name to the job's
``eval_data_dir`` and hands lm-eval the task as a config dict. Without ``eval_data_dir`` a name
goes to lm-eval as is, so users online get lm-eval's own tasks (``mmlu``, ``hellaswag``, ...).

>>> sorted(LOCAL_TASKS)[:3]
['arc_challenge', 'arc_easy', 'bbh']
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

__all__ = ["LOCAL_TASKS", "local_task_config", "resolve_tasks"]

_TASK_DIR = Path(str(resources.files("hf_ext") / "evaluation" / "tasks"))
LOCAL_TASKS: dict[str, Path] = {p.stem: p for p in sorted(_TASK_DIR.glob("*.yaml"))}


def local_task_config(name: str, eval_data_dir: str | os.PathLike) -> dict[str, Any]:
    """The shipped YAML of task `name` as a dict, its data file joined to `eval_data_dir`.

    Args:
        name (`str`):
            A local task (a key of `LOCAL_TASKS`).
        eval_data_dir (`str` or `os.PathLike`):
            Folder holding the evaluation data files (``~`` is expanded).

    Raises:
        InputError: `name` is not a local task, or its data file is not in `eval_data_dir`.
    """
    if name not in LOCAL_TASKS:
        raise InputError(f"{name!r} is not a local task. Local tasks: {', '.join(LOCAL_TASKS)}.")
    config = yaml.safe_load(LOCAL_TASKS[name].read_text(encoding="utf-8"))
    filename = config["dataset_kwargs"]["data_files"]
    path = Path(os.path.expanduser(eval_data_dir)) / filename
    if not path.is_file():
        raise InputError(
            f"Task {name!r} reads {filename!r}, which is not in eval_data_dir={str(eval_data_dir)!r} ({path} does not exist). "
            f"Point the `eval_data_dir` field at the folder holding the evaluation files, or drop {name!r} from `tasks`."
        )
    config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": str(path.resolve())}
    return config


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "") in {"1", "true", "True"}


def resolve_tasks(names: list[str], eval_data_dir: str | os.PathLike | None) -> list[str | dict[str, Any]]:
    """Task specs for ``lm_eval.simple_evaluate``: local config dicts, or lm-eval's own names.

    With `eval_data_dir`, every local name becomes its local task; any other name must be one
    lm-eval knows. Without it, names go to lm-eval (which downloads the data), which needs
    the Hub: offline, a local name then asks for `eval_data_dir`.

    Args:
        names (`list[str]`):
            Task names: local tasks and/or lm-eval's own; at least one.
        eval_data_dir (`str`, `os.PathLike` or `None`):
            Folder with the local tasks' data files; `None` sends every name to lm-eval.
    """
    if not names:
        raise InputError(f"`tasks` is empty: name at least one task. Local tasks: {', '.join(LOCAL_TASKS)}.")
    specs: list[str | dict[str, Any]] = []
    remote: list[str] = []
    for name in names:
        if name in LOCAL_TASKS and eval_data_dir is not None:
            specs.append(local_task_config(name, eval_data_dir))
        else:
            remote.append(name)
            specs.append(name)
    if remote:
        if _offline() and any(n in LOCAL_TASKS for n in remote):
            local = [n for n in remote if n in LOCAL_TASKS]
            raise InputError(f"Tasks {local} run offline only from local files: set `eval_data_dir` to the folder with "
                             "their data (e.g. arc_easy.jsonl.gz), or unset HF_HUB_OFFLINE to use lm-eval's own tasks.")
        from lm_eval.tasks import TaskManager

        known = set(TaskManager().all_tasks)
        unknown = [n for n in remote if n not in known]
        if unknown:
            raise InputError(
                f"Unknown task(s) {unknown}: neither a local task nor one lm-eval knows. Local tasks (with "
                f"`eval_data_dir`): {', '.join(LOCAL_TASKS)}; lm-eval's names: `lm-eval ls tasks`."
            )
    return specs
