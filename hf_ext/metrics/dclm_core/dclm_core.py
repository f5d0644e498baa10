"""DCLM CORE / EXTENDED centered accuracy as an `evaluate` metric (loadable by local path)."""

import datasets
import evaluate

from hf_ext.curate.dclm_eval import aggregate

_DESCRIPTION = """DCLM's aggregate of downstream results: per-task centered accuracy (acc - b)/(1 - b)
with b the task's random baseline, CORE = mean over 22 low-variance tasks, EXTENDED = mean over
all 53 tasks, with the paper's ("v1") or the 2025 corrected ("v2") baselines."""

_KWARGS_DESCRIPTION = """
Args:
    tasks (`list[str]`): DCLM task names (e.g. "arc_easy", "hellaswag_zeroshot").
    accuracies (`list[float]`): accuracy in [0, 1] of each task.
    version (`str`, optional): "v1" or "v2" (default "v2").
Returns:
    dict with `core`, `extended` (None when a needed task is missing), `categories`,
    `missing_core` and `missing`.
Examples:
    >>> from hf_ext.metrics import metric_path
    >>> core = evaluate.load(metric_path("dclm_core"))
    >>> core.compute(tasks=["arc_easy"], accuracies=[0.25], version="v1")["categories"]
    {'world knowledge': 0.0}
"""

_CITATION = """@article{li2024datacomp, title={DataComp-LM: In search of the next generation of training sets
for language models}, author={Li, Jeffrey and others}, journal={arXiv preprint arXiv:2406.11794}, year={2024}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DclmCore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"tasks": datasets.Value("string"), "accuracies": datasets.Value("float64")}),
        )

    def _compute(self, tasks, accuracies, version="v2"):
        out = aggregate(dict(zip(tasks, accuracies)), version=version)
        return {k: out[k] for k in ("core", "extended", "categories", "missing_core", "missing")}
