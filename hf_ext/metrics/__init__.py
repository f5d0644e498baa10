"""The suite's own metrics as `evaluate` modules, loadable by local path.

Hub metric scripts cannot be fetched offline, so each metric here is a folder with an
``evaluate.Metric`` script that ``evaluate.load`` accepts by path:

>>> import evaluate
>>> from hf_ext.metrics import metric_path
>>> stats = evaluate.load(metric_path("selection_stats"))
>>> stats.compute(response_tokens=[10, 30], categories=["qa", "qa"])["mean_response_tokens"]
{'selected': 20.0}
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import InputError


def available_metrics() -> list[str]:
    root = Path(str(resources.files("hf_ext.metrics")))
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}.py").is_file())


def metric_path(name: str) -> str:
    """Folder of the evaluate module `name`, for ``evaluate.load(metric_path(name))``.

    Args:
        name (`str`):
            One of :func:`available_metrics` (a folder of ``hf_ext/metrics`` holding ``<name>.py``), e.g.
            ``"selection_stats"``; an unknown name raises `InputError` listing them.

    Returns:
        `str`: the metric's folder.
    """
    path = Path(str(resources.files("hf_ext.metrics"))) / name
    if not (path / f"{name}.py").is_file():
        raise InputError(f"Unknown hf_ext metric {name!r}; available: {available_metrics()}.")
    return str(path)


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of one of our metrics by its local path (works offline).

    Args:
        name (`str`):
            One of :func:`available_metrics`, e.g. ``"feature_coverage"``.
        **kwargs:
            Passed to ``evaluate.load`` (e.g. ``config_name``, ``experiment_id``).

    Returns:
        `evaluate.EvaluationModule`: the loaded metric.
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
