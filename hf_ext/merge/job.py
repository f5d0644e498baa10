"""The ``merge`` job: ``hf-ext merge RECIPE.yaml`` (or ``hf-ext run`` with ``job: merge``)."""

from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InputError, RecipeError
from ..jobs import JobOptions, job_output, refuse_old_hub_keys

if TYPE_CHECKING:
    from .methods import MergeMethod

__all__ = ["MergeConfig", "run_merge"]

# Settings that were MergeConfig fields mirroring the methods' own; they live in `method_options` now.
_MOVED_TO_METHOD_OPTIONS = ("density", "majority_sign_method", "normalize", "scale", "ties")


@dataclass
class MergeConfig(JobOptions):
    """Settings of a merge; every field is a recipe key and a ``--flag``.

    The method's own settings are one value, ``method_options``, checked by the method's dataclass
    (:mod:`hf_ext.merge.methods`) when the config is built, as ``CurateConfig.step_options`` is by each step.

    Args:
        mergekit_config (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            A mergekit YAML config (its schema unchanged: merge_method, base_model, models/slices, parameters, dtype,
            ...), run by hf_ext with mergekit's semantics; a recipe in mergekit's schema lands here by itself (`hf-ext
            merge config.yml --output_dir OUT`). Then models/method/method_options/weights/base_model stay unset;
            `input_hub_ids` lists a Hub id per referenced model (base first, in order of appearance) and `seed` is
            mergekit-yaml's --random-seed.
        models (`list[str]`, *optional*, defaults to `[]`):
            Models to merge: Hub ids or local folders (safetensors), same architecture.
        method (`str`, *optional*, defaults to `"linear"`):
            A method of hf_ext.merge.MERGE_METHODS: linear (model soup / checkpoint averaging), task_arithmetic, ties,
            dare, della, breadcrumbs, slerp, nuslerp, model_stock, passthrough.
        method_options (`dict[str, Any]`, *optional*, defaults to `{}`):
            The method's settings, the fields of its dataclass in hf_ext.merge.methods, checked by it (e.g. {density:
            0.2, majority_sign_method: total, scale: 1.0} for ties, {t: 0.3} for slerp, {normalize: false} for linear,
            {ties: true} for dare). As a flag: --method_options '{density: 0.3}' (YAML; its keys update the recipe's).
        weights (`list[float]` or `None`, *optional*, defaults to `None`):
            One weight per model (default uniform).
        base_model (`str` or `None`, *optional*, defaults to `None`):
            The shared base (Hub id or folder); task_arithmetic, ties and dare take task vectors against it.
        input_hub_ids (`list[str]` or `None`, *optional*, defaults to `None`):
            Hub ids the card names for the models when they are local folders.
        base_hub_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id the card names for a local base_model.
        seed (`int`, *optional*, defaults to `0`):
            Seed of random methods' drop masks (dare, della: their `seed` unless method_options sets it);
            mergekit-yaml's --random-seed for a mergekit config.
        dtype (`str` or `None`, *optional*, defaults to `None`):
            Output dtype (float32, bfloat16, float16); default: the inputs'.
        max_shard_size (`str`, *optional*, defaults to `"5GB"`):
            Largest safetensors shard, like save_pretrained's.
        output_dir (`str`, *optional*, defaults to `"outputs/merge"`):
            Folder for the merged model, its card and metrics.json.
    """

    mergekit_config: dict[str, Any] | None = field(default=None, metadata={"help": "A mergekit YAML config (its schema unchanged: merge_method, base_model, models/slices, parameters, dtype, ...), run by hf_ext with mergekit's semantics; a recipe in mergekit's schema lands here by itself (`hf-ext merge config.yml --output_dir OUT`). Then models/method/method_options/weights/base_model stay unset; `input_hub_ids` lists a Hub id per referenced model (base first, in order of appearance) and `seed` is mergekit-yaml's --random-seed."})
    models: list[str] = field(default_factory=list, metadata={"help": "Models to merge: Hub ids or local folders (safetensors), same architecture."})
    method: str = field(default="linear", metadata={"help": "A method of hf_ext.merge.MERGE_METHODS: linear (model soup / checkpoint averaging), task_arithmetic, ties, dare, della, breadcrumbs, slerp, nuslerp, model_stock, passthrough."})
    method_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "The method's settings, the fields of its dataclass in hf_ext.merge.methods, checked by it (e.g. {density: 0.2, majority_sign_method: total, scale: 1.0} for ties, {t: 0.3} for slerp, {normalize: false} for linear, {ties: true} for dare). As a flag: --method_options '{density: 0.3}' (YAML; its keys update the recipe's)."})
    weights: list[float] | None = field(default=None, metadata={"help": "One weight per model (default uniform)."})
    base_model: str | None = field(default=None, metadata={"help": "The shared base (Hub id or folder); task_arithmetic, ties and dare take task vectors against it."})
    input_hub_ids: list[str] | None = field(default=None, metadata={"help": "Hub ids the card names for the models when they are local folders."})
    base_hub_id: str | None = field(default=None, metadata={"help": "Hub id the card names for a local base_model."})
    seed: int = field(default=0, metadata={"help": "Seed of random methods' drop masks (dare, della: their `seed` unless method_options sets it); mergekit-yaml's --random-seed for a mergekit config."})
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

    @staticmethod
    def check_recipe(values: dict[str, Any], argv: list[str] | None = None) -> None:
        """Refuse the keys that moved into ``method_options`` (and the old Hub keys), naming the new spelling."""
        refuse_old_hub_keys(values, argv)
        from ..config import given_keys

        given = given_keys(values, argv)
        for old in _MOVED_TO_METHOD_OPTIONS:
            if old in given:
                raise RecipeError(f"`{old}` moved: use method_options: {{{old}: ...}} (a setting of the merge method's own "
                                  f"dataclass, checked by it; as a flag: --method_options '{{{old}: ...}}').")

    def __post_init__(self) -> None:
        if self.mergekit_config is not None:
            if self.models or self.method != "linear" or self.weights or self.base_model or self.method_options:
                raise InputError("MergeConfig: give either mergekit_config or models/method/method_options/weights/base_model, not both.")
            super().__post_init__()
            return
        if not self.models:
            raise InputError("MergeConfig.models is empty: list the Hub ids or folders of the models to merge.")
        self.merge_method()  # the method's dataclass checks method_options now, before any tensor is read
        super().__post_init__()  # output folder and Hub settings

    def merge_method(self) -> MergeMethod:
        """The method object: ``method`` built from ``method_options`` (and the job's ``seed`` for random methods)."""
        from ..config import coerce
        from .methods import MERGE_METHODS, get_merge_method

        options = dict(self.method_options or {})
        cls = MERGE_METHODS.get(self.method)
        if cls is not None:  # an unknown method or setting is refused by get_merge_method, naming the valid ones
            names, hints = {f.name for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)
            options = {k: coerce(v, hints[k], f"method_options.{k}") if k in names else v for k, v in options.items()}
            if "seed" in names:
                options.setdefault("seed", self.seed)
        return get_merge_method(self.method, **options)


def run_merge(config: MergeConfig) -> dict[str, Any]:
    """Run a merge recipe; writes the model, its card and ``metrics.json`` to ``output_dir``.

    Args:
        config (`MergeConfig`):
            The merge's settings: the models, method and options (or a mergekit config), output and Hub settings.

    Returns:
        The metrics written to ``metrics.json`` (method, models, output folder, seconds, where it was pushed).
    """
    from .merge import merge_models

    start = time.perf_counter()
    if config.mergekit_config is not None:
        return _run_mergekit(config, start)
    with job_output(config, repo_type="model", writer="merge", commit_message=f"hf_ext: {config.method} merge") as out:
        merge_models(
            config.models, config.merge_method(), output_dir=out.dir, weights=config.weights, base=config.base_model,
            hub_ids=config.input_hub_ids, base_hub_id=config.base_hub_id, dtype=config.dtype,
            max_shard_size=config.max_shard_size,
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
