"""The ``merge`` job: ``hf-ext merge RECIPE.yaml`` (or ``hf-ext run`` with ``job: merge``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..jobs import JobOptions, job_output

__all__ = ["MergeConfig", "run_merge"]

_METHOD_FIELDS = ("normalize", "scale", "density", "majority_sign_method", "ties")


@dataclass
class MergeConfig(JobOptions):
    """Settings of a merge; every field is a recipe key and a ``--flag``."""

    models: list[str] = field(default_factory=list, metadata={"help": "Models to merge: Hub ids or local folders (safetensors), same architecture."})
    method: str = field(default="linear", metadata={"help": "linear (model soup / checkpoint averaging), task_arithmetic, ties or dare."})
    weights: list[float] | None = field(default=None, metadata={"help": "One weight per model (default uniform)."})
    base_model: str | None = field(default=None, metadata={"help": "The shared base (Hub id or folder); task_arithmetic, ties and dare take task vectors against it."})
    input_hub_ids: list[str] | None = field(default=None, metadata={"help": "Hub ids the card names for the models when they are local folders."})
    base_hub_id: str | None = field(default=None, metadata={"help": "Hub id the card names for a local base_model."})
    normalize: bool | None = field(default=None, metadata={"help": "linear: divide by the sum of weights (default true)."})
    scale: float | None = field(default=None, metadata={"help": "task_arithmetic / ties / dare: λ multiplying the merged task vector (default 1)."})
    density: float | None = field(default=None, metadata={"help": "ties / dare: fraction of task-vector entries kept."})
    majority_sign_method: str | None = field(default=None, metadata={"help": "ties / dare with ties: 'total' or 'frequency'."})
    ties: bool | None = field(default=None, metadata={"help": "dare: TIES sign election after dropping (dare_ties)."})
    seed: int = field(default=0, metadata={"help": "dare: seed of the drop masks."})
    dtype: str | None = field(default=None, metadata={"help": "Output dtype (float32, bfloat16, float16); default: the inputs'."})
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest safetensors shard, like save_pretrained's."})
    output_dir: str = field(default="outputs/merge", metadata={"help": "Folder for the merged model, its card and metrics.json."})

    def __post_init__(self) -> None:
        if not self.models:
            raise InputError("MergeConfig.models is empty: list the Hub ids or folders of the models to merge.")
        super().__post_init__()  # output folder and Hub settings

    def method_params(self) -> dict[str, Any]:
        params = {name: getattr(self, name) for name in _METHOD_FIELDS if getattr(self, name) is not None}
        if self.method == "dare":
            params["seed"] = self.seed
        return params


def run_merge(config: MergeConfig) -> dict[str, Any]:
    """Run a merge recipe; writes the model, its card and ``metrics.json`` to ``output_dir``."""
    from .merge import merge_models

    start = time.perf_counter()
    with job_output(config, repo_type="model", writer="merge", commit_message=f"hf_ext: {config.method} merge") as out:
        merge_models(
            config.models, config.method, output_dir=out.dir, weights=config.weights, base=config.base_model,
            hub_ids=config.input_hub_ids, base_hub_id=config.base_hub_id, dtype=config.dtype,
            max_shard_size=config.max_shard_size, **config.method_params(),
        )  # fmt: skip; merge_models writes the card, job_output the metrics and then the push
        out.metrics = {"method": config.method, "models": config.models, "output_dir": str(config.output_dir),
                       "elapsed_seconds": round(time.perf_counter() - start, 3),
                       "pushed_to": config.hub_model_id if config.push_to_hub else None}  # fmt: skip
    return out.metrics
