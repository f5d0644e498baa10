"""The ``merge`` job: ``hf-ext merge RECIPE.yaml`` (or ``hf-ext run`` with ``job: merge``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["MergeConfig", "run_merge"]

_METHOD_FIELDS = ("normalize", "scale", "density", "majority_sign_method", "ties")


@dataclass
class MergeConfig:
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
    push_to_hub: str | None = field(default=None, metadata={"help": "Repo id to upload the merged model to (one commit)."})
    hub_endpoint: str | None = field(default=None, metadata={"help": "Hub endpoint URL (default HF_ENDPOINT or huggingface.co)."})

    def __post_init__(self) -> None:
        if not self.models:
            raise InputError("MergeConfig.models is empty: list the Hub ids or folders of the models to merge.")

    def method_params(self) -> dict[str, Any]:
        params = {name: getattr(self, name) for name in _METHOD_FIELDS if getattr(self, name) is not None}
        if self.method == "dare":
            params["seed"] = self.seed
        return params


def run_merge(config: MergeConfig) -> dict[str, Any]:
    """Run a merge recipe; writes the model, its card and ``metrics.json`` to ``output_dir``."""
    from .merge import merge_models

    start = time.perf_counter()
    out = merge_models(
        config.models, config.method, output_dir=config.output_dir, weights=config.weights, base=config.base_model,
        hub_ids=config.input_hub_ids, base_hub_id=config.base_hub_id, dtype=config.dtype,
        max_shard_size=config.max_shard_size, push_to_hub=config.push_to_hub, hub_endpoint=config.hub_endpoint,
        **config.method_params(),
    )  # fmt: skip
    metrics = {"method": config.method, "models": config.models, "output_dir": str(out),
               "elapsed_seconds": round(time.perf_counter() - start, 3), "pushed_to": config.push_to_hub}  # fmt: skip
    Path(out, "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
