"""The ``merge`` job: ``hf-ext merge RECIPE.yaml`` (or ``hf-ext run`` with ``job: merge``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import InputError
from ..jobs import JobOptions, job_output

__all__ = ["MergeConfig", "run_merge"]

_METHOD_FIELDS = ("normalize", "scale", "density", "majority_sign_method", "ties")


@dataclass
class MergeConfig(JobOptions):
    """Settings of a merge; every field is a recipe key and a ``--flag``."""

    mergekit_config: dict[str, Any] | None = field(default=None, metadata={"help": "A mergekit YAML config (its schema unchanged: merge_method, base_model, models/slices, parameters, dtype, ...), run by hf_ext with mergekit's semantics; a recipe in mergekit's schema lands here by itself (`hf-ext merge config.yml --output_dir OUT`). Then models/method/weights/base_model stay unset; `input_hub_ids` lists a Hub id per referenced model (base first, in order of appearance) and `seed` is mergekit-yaml's --random-seed."})
    models: list[str] = field(default_factory=list, metadata={"help": "Models to merge: Hub ids or local folders (safetensors), same architecture."})
    method: str = field(default="linear", metadata={"help": "A method of hf_ext.merge.MERGE_METHODS: linear (model soup / checkpoint averaging), task_arithmetic, ties, dare, della, breadcrumbs, slerp, nuslerp, model_stock, passthrough."})
    method_options: dict[str, Any] | None = field(default=None, metadata={"help": "Further settings of the method's dataclass, checked by it (e.g. {t: 0.3} for slerp, {epsilon: 0.1} for della, {convention: mergekit} for ties/dare)."})
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

    # Keys of a mergekit-schema recipe that are this job's own (where to write, the Hub, ids for the card).
    _JOB_KEYS: ClassVar[tuple[str, ...]] = ("output_dir", "overwrite_output_dir", "push_to_hub", "hub_model_id", "hub_endpoint",
                                            "hub_private_repo", "input_hub_ids", "max_shard_size", "seed")

    @classmethod
    def adapt_recipe(cls, values: dict[str, Any]) -> dict[str, Any]:
        """A recipe in mergekit's schema (it has ``merge_method``) becomes ``mergekit_config``; job keys stay."""
        from .mergekit import is_mergekit_config

        if not is_mergekit_config(values):
            return values
        return {"mergekit_config": {k: v for k, v in values.items() if k not in cls._JOB_KEYS},
                **{k: v for k, v in values.items() if k in cls._JOB_KEYS}}

    def __post_init__(self) -> None:
        if self.mergekit_config is not None:
            if self.models or self.method != "linear" or self.weights or self.base_model or self.method_options:
                raise InputError("MergeConfig: give either mergekit_config or models/method/weights/base_model, not both.")
            super().__post_init__()
            return
        if not self.models:
            raise InputError("MergeConfig.models is empty: list the Hub ids or folders of the models to merge.")
        super().__post_init__()  # output folder and Hub settings

    def method_params(self) -> dict[str, Any]:
        params = {name: getattr(self, name) for name in _METHOD_FIELDS if getattr(self, name) is not None}
        if self.method in ("dare", "della"):
            params["seed"] = self.seed
        overlap = sorted(set(params) & set(self.method_options or {}))
        if overlap:
            raise InputError(f"{overlap[0]!r} is set both as a field and in method_options; set it once.")
        return {**params, **(self.method_options or {})}


def run_merge(config: MergeConfig) -> dict[str, Any]:
    """Run a merge recipe; writes the model, its card and ``metrics.json`` to ``output_dir``."""
    from .merge import merge_models

    start = time.perf_counter()
    if config.mergekit_config is not None:
        return _run_mergekit(config, start)
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


def _run_mergekit(config: MergeConfig, start: float) -> dict[str, Any]:
    from .mergekit import from_mergekit_config

    merge = from_mergekit_config(config.mergekit_config, seed=config.seed)
    refs = merge.referenced_models()
    if config.input_hub_ids is not None and len(config.input_hub_ids) != len(refs):
        raise InputError(f"input_hub_ids has {len(config.input_hub_ids)} entries for the {len(refs)} models the mergekit "
                         f"config names ({refs}, base first); give one Hub id each.")
    hub_ids = dict(zip(refs, config.input_hub_ids)) if config.input_hub_ids else None
    with job_output(config, repo_type="model", writer="merge", commit_message=f"hf_ext: {merge.method_name} merge (mergekit config)") as out:
        merge.run(out.dir, hub_ids=hub_ids, max_shard_size=config.max_shard_size)
        out.metrics = {"method": merge.method_name, "mergekit_config": True, "models": refs, "output_dir": str(config.output_dir),
                       "layers": merge.num_layers, "elapsed_seconds": round(time.perf_counter() - start, 3),
                       "pushed_to": config.hub_model_id if config.push_to_hub else None}  # fmt: skip
    return out.metrics
