"""`SelectionConfig`: the settings of the selection job (``job: select`` in a recipe).

The job's own fields say what to read, which methods to run and where to write. A component's
settings are one value, checked by that component's own dataclass with its own field names:
``featurizer`` holds :class:`~hf_ext.select.sae.SAEFeaturizer`'s fields, ``sae_training``
:class:`~hf_ext.select.sae.SAETrainingConfig`'s and ``judge`` the AlpaGasus judge's backend's
(:class:`~hf_ext.critique.backends.TransformersBackend` or ``OpenAIBackend``, chosen by ``judge_backend``
as in the quality-judge job), and ``method_options`` each method's own keyword arguments (its
selector function's, by method name), as ``CurateConfig.step_options`` holds the steps' arguments:

>>> config = SelectionConfig(method="sae_greedy", featurizer={"layer": 15, "dtype": "bfloat16"},
...                          sae_training={"num_latents": 8192}, output_dir="outputs/demo")  # doctest: +SKIP
>>> SelectionConfig(featurizer={"layr": 15})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
hf_ext.errors.RecipeError: Unknown key 'layr' in `featurizer` (SAEFeaturizer's fields). Did you mean 'layer'? ...
>>> SelectionConfig(sae_training={"k": 64, "num_latents": 32})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
hf_ext.errors.RecipeError: In `sae_training` (SAETrainingConfig's fields): Invalid SAETrainingConfig: Need 0 < k <= num_latents...
>>> SelectionConfig(judge_backend="openai", judge={"base_url": "http://localhost:8000/v1", "concurency": 4})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
hf_ext.errors.RecipeError: Unknown key 'concurency' in `judge` (OpenAIBackend's fields). Did you mean 'concurrency'? ...
>>> SelectionConfig(method_options={"alpagasus": {"treshold": 4}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
hf_ext.errors.RecipeError: Unknown key 'treshold' in `method_options.alpagasus` (select_alpagasus's fields). Did you mean 'threshold'? ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

from ..errors import InputError, RecipeError
from ..jobs import JobOptions, refuse_old_hub_keys
from .selectors import SELECTORS, get_selector

# Featurizer fields the job sets itself: its text columns, the column names its selectors read,
# and the SAE's subfolder, which follows from `layer` (one source of truth).
JOB_FEATURIZER_FIELDS = {
    "instruction_column": "the job's instruction_column",
    "input_column": "the job's input_column",
    "response_column": "the job's response_column",
    "text_column": "the job's instruction/input/response columns",
    "prefix": "the job (its selectors read the sae_* columns)",
    "store_embedding": "the job (kcenter and the diversity report read sae_embedding)",
    "sae_subfolder": "featurizer.layer (the SAE folder layers.N, or blocks.N.hook_resid_post for sae-lens)",
}

# Keys of earlier recipes, when SelectionConfig mirrored the components' fields -> what to write.
OLD_KEYS = {
    "sae_model": "featurizer: {model: ...}",
    "sae_model_revision": "featurizer: {revision: ...}",
    "sae_layer": "featurizer: {layer: ...}",
    "sae_path": "featurizer: {sae: ...}",
    "sae_hookpoint": "nothing: the SAE's subfolder is derived from featurizer.layer (layers.N or blocks.N.hook_resid_post)",
    "sae_format": "featurizer: {sae_format: ...}",
    "sae_threshold": "featurizer: {threshold: ...}",
    "sae_threshold_quantile": "threshold_quantile: ...",
    "sae_max_length": "featurizer: {max_length: ...}",
    "sae_batch_tokens": "featurizer: {max_batch_tokens: ...}",
    "sae_dtype": "featurizer: {dtype: ...}",
    "sae_chat_template": "featurizer: {use_chat_template: ...}",
    "sae_num_latents": "sae_training: {num_latents: ...}",
    "sae_k": "sae_training: {k: ...}",
    "sae_train_examples": "sae_training: {max_examples: ...}",
    "sae_train_tokens": "sae_training: {max_tokens: ...}",
    "sae_train_epochs": "sae_training: {epochs: ...}",
    "judge_model": "judge: {model: ...}",
    "judge_base_url": "judge: {base_url: ...}",
    "judge_api_key_env": "judge: {api_key_env: ...}",
    "judge_max_new_tokens": "judge: {max_new_tokens: ...}",
    "judge_batch_size": "judge: {batch_size: ...} (transformers) or judge: {concurrency: ...} (openai)",
    "judge_threshold": "method_options: {alpagasus: {threshold: ...}}",
    "simscale_similarity": "method_options: {sae_simscale: {similarity: ...}}",
}

# The judge's settings the job sets unless `judge` does (the transformers backend's seed is the job's).
JUDGE_DEFAULTS = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_new_tokens": 32}


def refuse_old_keys(values: dict[str, Any], argv: list[str] | None = None) -> None:
    """One error for every key of the earlier mirrored schema, each with what to write instead.

    Args:
        values (`dict[str, Any]`):
            The recipe's keys and values.
        argv (`list[str]` or `None`, *optional*, defaults to `None`):
            Command-line arguments; their `--key` / `--key=value` names are checked too.
    """
    refuse_old_hub_keys(values, argv)
    from ..config import given_keys

    old = [k for k in given_keys(values, argv) if k in OLD_KEYS]
    if old:
        fixes = "; ".join(f"{k!r} -> {OLD_KEYS[k]}" for k in old)
        raise RecipeError(f"The selection job now takes the SAE and judge settings under the components' own names: {fixes}. "
                          "`featurizer` holds SAEFeaturizer's fields, `sae_training` SAETrainingConfig's, `judge` the "
                          "judge_backend's (TransformersBackend / OpenAIBackend in hf_ext.critique.backends), "
                          "`method_options` each method's keyword arguments.")


def _component(cls: type, values: dict[str, Any], name: str, given: dict[str, Any]) -> Any:
    """`cls` built from `values` as a recipe section: unknown keys (of `given`, the user's), types and
    NaN refused, the error naming the section `name` and the keys a user may set there."""
    import difflib
    from dataclasses import fields

    from ..config import parse_config

    valid = sorted(f.name for f in fields(cls) if f.init and f.name not in JOB_FEATURIZER_FIELDS)
    for key in given:
        if key in JOB_FEATURIZER_FIELDS and cls.__name__ == "SAEFeaturizer":
            raise RecipeError(f"featurizer.{key} is set by {JOB_FEATURIZER_FIELDS[key]}; remove it from `featurizer`.")
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"Unknown key {key!r} in `{name}` ({cls.__name__}'s fields).{hint} Valid keys: {', '.join(valid)}.")
    try:
        return parse_config(cls, values)
    except InputError as exc:
        raise type(exc)(f"In `{name}` ({cls.__name__}'s fields): {exc}") from None


@dataclass
class SelectionConfig(JobOptions):
    """Settings of the selection job (`job: select` in a recipe).

    Args:
        dataset (`str`, *optional*, defaults to `"dolly_alpagasus_3k"`):
            Pool to select from: a bundled name (dolly_alpagasus_3k), a local file/folder, or a Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            Split of the pool to use.
        dataset_license (`str` or `None`, *optional*, defaults to `None`):
            Licence of the pool, for the card, when it is not bundled (e.g. cc-by-4.0).
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input/context (null if none).
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the response.
        category_column (`str` or `None`, *optional*, defaults to `"category"`):
            Column with a category to count per selection (null if none).
        method (`str`, *optional*, defaults to `"longest"`):
            Selection method whose picks are written and pushed. Registered: ['alpagasus', 'kcenter', 'longest',
            'random', 'sae_greedy', 'sae_greedy_sorted', 'sae_simscale'].
        compare_methods (`list[str]`, *optional*, defaults to `['random']`):
            Other methods to run on the same pool and report beside `method` (statistics only).
        budget (`int`, *optional*, defaults to `300`):
            Number of examples to select.
        seed (`int`, *optional*, defaults to `42`):
            Seed for random selection and any sampling.
        tokenizer (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Tokenizer (Hub id or path) that counts response tokens for `longest` and the statistics.
        judge_backend (`Literal['none', 'transformers', 'openai']`, *optional*, defaults to `"none"`):
            AlpaGasus judge: 'transformers' (local model), 'openai' (OpenAI-compatible server) or 'none'.
        judge (`dict`, *optional*, defaults to `{}`):
            The judge_backend's settings, checked by it: TransformersBackend fields (model, revision, max_new_tokens,
            batch_size, device, dtype, seed, ...) or OpenAIBackend fields (base_url, model, api_key_env,
            max_new_tokens, concurrency, timeout, ...), e.g. {base_url: http://localhost:8000/v1, model: judge};
            model defaults to HuggingFaceTB/SmolLM2-135M-Instruct, max_new_tokens to 32, seed to the job's.
        featurizer (`dict`, *optional*, defaults to `{}`):
            SAEFeaturizer fields (model, revision, layer, sae, sae_format, threshold, max_length, max_batch_tokens,
            dtype, use_chat_template, batch_size, device) for the SAE methods and kcenter, e.g. {model:
            HuggingFaceTB/SmolLM2-135M-Instruct, layer: 15, sae: org/repo, threshold: 10, dtype: bfloat16}; the text
            columns are the job's, and the SAE's subfolder follows from layer.
        sae_training (`dict`, *optional*, defaults to `{}`):
            SAETrainingConfig fields for the SAE trained on the pool when featurizer.sae is unset, e.g. {num_latents:
            8192, k: 32, max_examples: 400}; seed defaults to the job's.
        threshold_quantile (`float` or `None`, *optional*, defaults to `None`):
            Keep SAE latents above this quantile (0-1) of the pool's max-pooled values instead of
            featurizer.threshold; portable across SAEs whose activation scale differs (e.g. ones trained here).
        method_options (`dict`, *optional*, defaults to `{}`):
            Each method's own keyword arguments, by method name, checked by its selector function's signature, e.g.
            {alpagasus: {threshold: 4.5}} (AlpaGasus keeps examples scored at or above it, 0-5) or {sae_simscale:
            {similarity: cosine}} (Jaccard on feature ids, the default, or cosine on max-pooled values).
        output_dir (`str`, *optional*, defaults to `"outputs/quickstart"`):
            Folder for the dataset, card and metrics.
        map_batch_size (`int`, *optional*, defaults to `1000`):
            Batch size of the datasets.map scoring passes.
        num_proc (`int` or `None`, *optional*, defaults to `None`):
            Processes for datasets.map (None: one).
    """

    dataset: str = field(
        default="dolly_alpagasus_3k",
        metadata={"help": "Pool to select from: a bundled name (dolly_alpagasus_3k), a local file/folder, or a Hub dataset id."},
    )
    split: str = field(default="train", metadata={"help": "Split of the pool to use."})
    dataset_license: Optional[str] = field(
        default=None, metadata={"help": "Licence of the pool, for the card, when it is not bundled (e.g. cc-by-4.0)."}
    )
    instruction_column: str = field(default="instruction", metadata={"help": "Column with the instruction."})
    input_column: Optional[str] = field(default="input", metadata={"help": "Column with the optional input/context (null if none)."})
    response_column: str = field(default="output", metadata={"help": "Column with the response."})
    category_column: Optional[str] = field(
        default="category", metadata={"help": "Column with a category to count per selection (null if none)."}
    )
    method: str = field(
        default="longest",
        metadata={"help": f"Selection method whose picks are written and pushed. Registered: {sorted(SELECTORS)}."},
    )
    compare_methods: list[str] = field(
        default_factory=lambda: ["random"],
        metadata={"help": "Other methods to run on the same pool and report beside `method` (statistics only)."},
    )
    budget: int = field(default=300, metadata={"help": "Number of examples to select."})
    seed: int = field(default=42, metadata={"help": "Seed for random selection and any sampling."})
    tokenizer: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Tokenizer (Hub id or path) that counts response tokens for `longest` and the statistics."},
    )
    judge_backend: Literal["none", "transformers", "openai"] = field(
        default="none",
        metadata={"help": "AlpaGasus judge: 'transformers' (local model), 'openai' (OpenAI-compatible server) or 'none'."},
    )
    judge: dict = field(
        default_factory=dict,
        metadata={"help": "The judge_backend's settings, checked by it: TransformersBackend fields (model, revision, "
                          "max_new_tokens, batch_size, device, dtype, seed, ...) or OpenAIBackend fields (base_url, model, "
                          "api_key_env, max_new_tokens, concurrency, timeout, ...), e.g. {base_url: http://localhost:8000/v1, "
                          "model: judge}; model defaults to HuggingFaceTB/SmolLM2-135M-Instruct, max_new_tokens to 32, seed "
                          "to the job's."},
    )
    featurizer: dict = field(
        default_factory=dict,
        metadata={"help": "SAEFeaturizer fields (model, revision, layer, sae, sae_format, threshold, max_length, max_batch_tokens, "
                          "dtype, use_chat_template, batch_size, device) for the SAE methods and kcenter, e.g. {model: "
                          "HuggingFaceTB/SmolLM2-135M-Instruct, layer: 15, sae: org/repo, threshold: 10, dtype: bfloat16}; the text "
                          "columns are the job's, and the SAE's subfolder follows from layer."},
    )
    sae_training: dict = field(
        default_factory=dict,
        metadata={"help": "SAETrainingConfig fields for the SAE trained on the pool when featurizer.sae is unset, e.g. "
                          "{num_latents: 8192, k: 32, max_examples: 400}; seed defaults to the job's."},
    )
    threshold_quantile: Optional[float] = field(
        default=None,
        metadata={"help": "Keep SAE latents above this quantile (0-1) of the pool's max-pooled values instead of "
                          "featurizer.threshold; portable across SAEs whose activation scale differs (e.g. ones trained here)."},
    )
    method_options: dict = field(
        default_factory=dict,
        metadata={"help": "Each method's own keyword arguments, by method name, checked by its selector function's "
                          "signature, e.g. {alpagasus: {threshold: 4.5}} (AlpaGasus keeps examples scored at or above it, "
                          "0-5) or {sae_simscale: {similarity: cosine}} (Jaccard on feature ids, the default, or cosine on "
                          "max-pooled values)."},
    )
    output_dir: str = field(default="outputs/quickstart", metadata={"help": "Folder for the dataset, card and metrics."})
    map_batch_size: int = field(default=1000, metadata={"help": "Batch size of the datasets.map scoring passes."})
    num_proc: Optional[int] = field(default=None, metadata={"help": "Processes for datasets.map (None: one)."})

    check_recipe: ClassVar = staticmethod(refuse_old_keys)

    def __post_init__(self) -> None:
        for name in [self.method, *self.compare_methods]:
            get_selector(name)  # fails early, naming the registered methods
        if self.budget <= 0:
            raise InputError(f"budget must be a positive integer, got {self.budget}.")
        if self.judge_backend == "openai" and not (isinstance(self.judge, dict) and self.judge.get("base_url")):
            raise InputError("judge_backend='openai' needs judge.base_url (e.g. judge: {base_url: http://localhost:8000/v1}).")
        if self.judge_backend != "none":
            self.judge_settings()
        elif self.judge:
            raise InputError("judge is set but judge_backend is 'none'; set judge_backend to 'transformers' or 'openai'.")
        if not isinstance(self.method_options, dict):
            raise InputError(f"method_options must be a mapping of method name -> its options, got {self.method_options!r}.")
        for name in self.method_options:
            self.selector_options(name)
        if self.featurizer or self.reads_sae_features:  # the components' own checks, before any work
            self.featurizer_settings()
        if self.sae_training or self.reads_sae_features:
            self.training_config()
        if self.threshold_quantile is not None:
            if not 0 <= self.threshold_quantile < 1:
                raise InputError(f"threshold_quantile must be in [0, 1), got {self.threshold_quantile}.")
            if self.featurizer.get("threshold") is not None:
                raise InputError("Give one SAE threshold: featurizer.threshold (an absolute value) or threshold_quantile "
                                 f"(a quantile of the pool's values), not both (got {self.featurizer['threshold']} and "
                                 f"{self.threshold_quantile}).")
        super().__post_init__()  # output folder and Hub settings

    @property
    def methods(self) -> list[str]:
        """`method` first, then the comparisons, without repeats."""
        return list(dict.fromkeys([self.method, *self.compare_methods]))

    @property
    def reads_sae_features(self) -> bool:
        """Whether one of the methods reads the SAE featurizer's columns."""
        return any(get_selector(m).prefix == "sae" for m in self.methods)

    def featurizer_settings(self, **overrides: Any):
        """The `SAEFeaturizer` of this job: `featurizer`'s fields and the job's columns; `overrides`
        (the prepared SAE: ``sae=``, ``sae_subfolder=``) replace fields."""
        if not isinstance(self.featurizer, dict):
            raise InputError(f"featurizer must be a mapping of SAEFeaturizer fields, got {self.featurizer!r}.")
        from .sae.featurizer import SAEFeaturizer

        values = {**self.featurizer, "instruction_column": self.instruction_column, "input_column": self.input_column,
                  "response_column": self.response_column, **overrides}
        return _component(SAEFeaturizer, values, "featurizer", self.featurizer)

    def training_config(self):
        """The `SAETrainingConfig` of the SAE trained on the pool (``seed``: the job's unless `sae_training` sets it)."""
        if not isinstance(self.sae_training, dict):
            raise InputError(f"sae_training must be a mapping of SAETrainingConfig fields, got {self.sae_training!r}.")
        from .sae.train import SAETrainingConfig

        return _component(SAETrainingConfig, {"seed": self.seed, **self.sae_training}, "sae_training", self.sae_training)

    def judge_settings(self):
        """The AlpaGasus judge's backend (`judge_backend`'s class) built from `judge` over the job's defaults."""
        if not isinstance(self.judge, dict):
            raise InputError(f"judge must be a mapping of the {self.judge_backend} backend's fields, got {self.judge!r}.")
        if self.judge_backend == "none":
            raise InputError("Method 'alpagasus' needs judge scores: set judge_backend to 'transformers' or 'openai'.")
        from ..critique.backends import BACKENDS

        defaults = {**JUDGE_DEFAULTS, **({"seed": self.seed} if self.judge_backend == "transformers" else {})}
        return _component(BACKENDS[self.judge_backend], {**defaults, **self.judge}, "judge", self.judge)

    def selector_options(self, method: str) -> dict[str, Any]:
        """Keyword arguments of `method`'s selector: `method_options[method]` over the function's defaults, checked."""
        from dataclasses import asdict

        given = self.method_options.get(method) or {}
        if not isinstance(given, dict):
            raise InputError(f"method_options.{method} must be a mapping of the method's options, got {given!r}.")
        options = get_selector(method).options_class()
        return asdict(_component(options, given, f"method_options.{method}", given))


__all__ = ["JUDGE_DEFAULTS", "SelectionConfig", "OLD_KEYS", "refuse_old_keys"]
