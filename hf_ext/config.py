"""Recipes: YAML files whose keys are exactly the fields of a config dataclass.

Every job and step of hf_ext has a config dataclass whose fields carry a ``help`` text, so
``transformers.HfArgumentParser`` can build its command line. A recipe is a YAML mapping of
those fields plus ``job`` (which config to use). Precedence, as in TRL's ``TrlParser``:
dataclass defaults < recipe YAML < command-line flags.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class MyConfig:
...     budget: int = field(default=300, metadata={"help": "How many examples to keep."})
>>> parse_config(MyConfig, {"budget": 10}, ["--budget", "20"]).budget
20
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from .errors import InputError, RecipeError

T = TypeVar("T")

class Job(typing.NamedTuple):
    """A runnable job: its config dataclass and run function ("module:attribute" paths, imported
    lazily so ``hf-ext --help`` stays fast) and the one line ``hf-ext --help`` shows for it."""

    config: str
    runner: str
    help: str = ""


# Jobs that `hf-ext run` knows, by the value of the recipe's `job` key; each is also a
# subcommand (`hf-ext JOB [RECIPE] [--field value ...]`). Register more with `register_job`.
JOBS: dict[str, Job] = {
    "select": Job("hf_ext.select.pipeline:SelectionConfig", "hf_ext.select.pipeline:run_selection",
                  "Select instruction data (SAE-GreedSelect, longest, AlpaGasus, k-center, random) with a card."),
    "less_warmup": Job("hf_ext.select.less.warmup:LessWarmupConfig", "hf_ext.select.less.warmup:run_less_warmup",
                       "LESS step 1: LoRA warmup on a random slice of the pool, a checkpoint per epoch."),
    "less_select": Job("hf_ext.select.less.job:LessSelectConfig", "hf_ext.select.less.job:run_less_select",
                       "LESS steps 2-3: gradient datastore and target matching; writes the top examples."),
    "curate": Job("hf_ext.curate.job:CurateConfig", "hf_ext.curate.job:run_curate",
                  "Curate pretraining text: DCLM / Llama 3 heuristics, dedup, quality scores, drop counts."),
    "audit": Job("hf_ext.curate.job:AuditConfig", "hf_ext.curate.job:run_audit",
                 "Audit a filter (AboutMe): retention by group with bootstrap CIs, plots, card."),
    "quality_classifier": Job("hf_ext.curate.quality_job:QualityClassifierConfig", "hf_ext.curate.quality_job:run_quality_classifier",
                              "Train a page-quality scorer (embedding head or fastText), held-out AUC vs length, card."),
    "quality_judge": Job("hf_ext.curate.quality_job:QualityJudgeConfig", "hf_ext.curate.quality_job:run_quality_judge",
                         "FineWeb-Edu recipe: a judge LM labels pages, an embedding head learns them and scores a corpus."),
    "merge": Job("hf_ext.merge.job:MergeConfig", "hf_ext.merge.job:run_merge",
                 "Merge models, streamed: soup, task arithmetic, TIES, DARE; card with the base_model list."),
    "critic_rm": Job("trainers.jobs.critic_rm:CriticRMJobConfig", "trainers.jobs.critic_rm:run_critic_rm",
                     "Critic-RM: generate and filter critiques, train the critique-then-score reward model."),
    "bts": Job("trainers.jobs.bts:BTSConfig", "trainers.jobs.bts:run_bts",
               "Branch-Train-Stitch replication: seed, experts, stitch layers, loss table vs baselines."),
    "time_vectors": Job("trainers.jobs.time_vectors:TimeVectorExperimentConfig",
                        "trainers.jobs.time_vectors:run_time_vectors",
                        "Time vectors replication: yearly models, interpolation and analogy vs end-year models."),
    "xelm": Job("trainers.jobs.xelm:XELMConfig", "trainers.jobs.xelm:run_xelm",
                "X-ELM replication: experts per cluster vs a compute-matched dense model."),
    "scaling_tiny": Job("trainers.jobs.scaling_tiny:ScalingTestbedConfig", "trainers.jobs.scaling_tiny:run_scaling_testbed",
                        "Scaling-law testbed: tiny Llamas at several sizes, fit L(N, M), predict the largest."),
    "evaluate": Job("hf_ext.evaluation.job:EvaluateConfig", "hf_ext.evaluation.job:run_evaluate",
                    "Evaluate a model with lm-evaluation-harness (local tasks offline), response NLL, DCLM aggregates."),
    "embedding_select": Job("hf_ext.select.embedding_target:EmbeddingSelectConfig", "hf_ext.select.embedding_target:run_embedding_select",
                            "Embedding-similarity baseline of LESS: the pool rows closest to a target set (MiniLM cosine)."),
    "sft": Job("trainers.jobs.sft:SFTJobConfig", "trainers.jobs.sft:run_sft",
               "Fine-tune with TRL's SFTTrainer on a selection (response tokens only; LoRA via peft_config)."),
    "compare": Job("trainers.jobs.compare:CompareConfig", "trainers.jobs.compare:run_compare",
                   "Judge selection methods downstream: select -> sft -> evaluate each, one table, plot and verdict."),
}


def register_job(name: str, config_path: str, runner_path: str, help: str = "") -> None:
    """Make `hf-ext run` accept recipes with `job: name` and add the `hf-ext name` subcommand.

    Args:
        name (`str`):
            The recipe's `job` value and the subcommand.
        config_path (`str`):
            "module:ConfigClass" of the job's config dataclass.
        runner_path (`str`):
            "module:function" that takes the config and returns the metrics.
        help (`str`, *optional*, defaults to `""`):
            The one line `hf-ext --help` shows.
    """
    JOBS[name] = Job(config_path, runner_path, help)


def import_path(path: str) -> Any:
    """The object a ``"module:attribute"`` path names (what `JOBS` entries hold), imported now.

    Args:
        path (`str`):
            ``"package.module:attribute"``, e.g. ``"hf_ext.curate.job:CurateConfig"``.
    """
    module, _, attribute = path.partition(":")
    import importlib

    return getattr(importlib.import_module(module), attribute)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int):
        self.key, self.first, self.second = key, first, second


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _mapping_without_duplicates(loader: RecipeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        except TypeError:  # an unhashable key: construct_mapping reports it
            break
    return loader.construct_mapping(node, deep=deep)


RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe file with a ``yaml.SafeLoader``; it must be a UTF-8 mapping of field names,
    each given once.

    Args:
        path (`str` or `os.PathLike`):
            The YAML recipe.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file {str(path)!r} does not exist. Pass the path of a YAML recipe, e.g. recipes/quickstart.yaml.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError(f"Recipe {str(path)!r} is not UTF-8 text (byte {exc.start}, line {line}: {raw[exc.start:exc.start + 1]!r}). "
                          "Save it as UTF-8.") from None
    try:
        data = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        raise RecipeError(f"Recipe {str(path)!r} sets {dup.key!r} twice (lines {dup.first} and {dup.second}); "
                          "keep one of them.") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"Recipe {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"Recipe {str(path)!r} must be a YAML mapping of config fields, got a {type(data).__name__}.")
    return data


def recipe_job(values: dict[str, Any], default: str = "select", source: str = "the recipe") -> str:
    """Pop ``job`` from recipe values and check it names a registered job.

    Args:
        values (`dict[str, Any]`):
            Recipe values; ``job`` is removed from them.
        default (`str`, *optional*, defaults to `"select"`):
            The job when the recipe names none.
        source (`str`, *optional*, defaults to `"the recipe"`):
            What the values came from, for the error message.
    """
    job = values.pop("job", default)
    if not isinstance(job, str) or job not in JOBS:
        raise RecipeError(f"Unknown job {job!r} in {source}: `job` must be one name, one of {', '.join(sorted(JOBS))} "
                          "(e.g. `job: select`).")
    return job


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """Read a JSON config file written by hf_ext (or a peer) that must hold one JSON object.

    Args:
        path (`str` or `os.PathLike`):
            The file.
        fix (`str`):
            What the user can do when it is not valid JSON, e.g. "save it again with save_pretrained"; it ends the
            error message.

    Raises:
        InputError: the file is not UTF-8 JSON, or not an object; the message names the file.
    """
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); {fix}.") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(data).__name__}; {fix}.")
    return data


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a config dataclass that a recipe may set (those with ``init=True``), by name.

    Args:
        config_cls (`type`):
            The config dataclass.

    Returns:
        `dict[str, dataclasses.Field]`: the init fields in declaration order.
    """
    return {f.name: f for f in dataclasses.fields(config_cls) if f.init}


def given_keys(values: dict[str, Any], argv: list[str] | None = None) -> list[str]:
    """The keys a user set: the recipe's, then each ``--key`` / ``--key=value`` flag's (dashes read as
    underscores), in order, each once. What ``check_recipe`` hooks test for renamed or moved keys.

    Args:
        values (`dict[str, Any]`):
            The recipe's keys and values.
        argv (`list[str]` or `None`, *optional*, defaults to `None`):
            Command-line flags.

    >>> given_keys({"budget": 3}, ["--push-to-hub", "--seed=1", "2"])
    ['budget', 'push_to_hub', 'seed']
    """
    flags = [a[2:].split("=", 1)[0].replace("-", "_") for a in (argv or []) if a.startswith("--")]
    return list(dict.fromkeys([*values, *flags]))


def check_keys(config_cls: type, values: dict[str, Any], source: str = "recipe") -> None:
    """Fail on the first key that is not a field of `config_cls`, naming the valid ones.

    Args:
        config_cls (`type`):
            The config dataclass.
        values (`dict[str, Any]`):
            Recipe values.
        source (`str`, *optional*, defaults to `"recipe"`):
            What the values came from, for the error message.
    """
    valid = config_fields(config_cls)
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(
                f"Unknown key {key!r} in the {source} for {config_cls.__name__}.{hint} "
                f"Valid keys: {', '.join(sorted(valid))}."
            )


_YAML_BOOL_WORDS = {True: ("yes", "on", "true", "y"), False: ("no", "off", "false", "n")}


def _quote_hint(value: Any, name: str, words: tuple = ()) -> str:
    """For a bool where a string was expected: YAML 1.1 reads unquoted yes/no/on/off as booleans."""
    if not isinstance(value, bool):
        return ""
    word = next((w for w in words if isinstance(w, str) and w.lower() in _YAML_BOOL_WORDS[value]), None)
    example = f'{name}: "{word}"' if word else f'{name}: "{str(value).lower()}"'
    return (f" YAML reads an unquoted yes/no/on/off/true/false as a boolean: quote it ({example}).")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Check a YAML value against a field's annotation; convert only what is lossless
    (int -> float, a scalar -> a one-element list when the field is a list).

    Args:
        value (`Any`):
            The value read from the recipe (or a flag).
        tp (`Any`):
            The field's resolved annotation: `bool`, `int`, `float`, `str`, a `list`/`tuple`/`dict` (parametrised
            or not), a `Literal`, an optional or a union of those; other types pass unchecked.
        name (`str`):
            The field's name, for the error message (``name[i]`` for list items).

    Returns:
        `Any`: the value, converted where lossless.

    Raises:
        RecipeError: the value does not fit the annotation; the message names the field and, for a YAML
            boolean where a string was expected, how to quote it.
    """
    origin = get_origin(tp)
    if tp is Any or tp is typing.Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, name)
            except RecipeError as exc:
                errors.append(exc)
        literal_words = tuple(w for a in args if get_origin(a) is Literal for w in get_args(a))
        hint = _quote_hint(value, name, literal_words) if str in args or literal_words else ""
        raise RecipeError(f"Field {name!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__}).{hint}")
    if origin is Literal:
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in get_args(tp)) or value not in get_args(tp):
            raise RecipeError(f"Field {name!r} must be one of {list(get_args(tp))}, got {value!r}."
                              + _quote_hint(value, name, get_args(tp)))
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"Field {name!r} must be a list, got {value!r} ({type(value).__name__}).")
        args = get_args(tp)
        item = args[0] if args else Any
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"Field {name!r} must be a mapping, got {value!r} ({type(value).__name__}).")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"Field {name!r} must be true or false, got {value!r} ({type(value).__name__}).")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"Field {name!r} must be an integer, got {value!r} ({type(value).__name__}).")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"Field {name!r} must be a number, got {value!r} ({type(value).__name__}).")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            hint = _quote_hint(value, name) or " Quote it in YAML."
            raise RecipeError(f"Field {name!r} must be a string, got {value!r} ({type(value).__name__}).{hint}")
        return value
    return value


def _is_seed(name: str) -> bool:
    return name == "seed" or name.endswith("_seed")


def _is_dtype(name: str) -> bool:
    return name == "dtype" or name.endswith("_dtype")


def check_config(config: Any) -> Any:
    """Rules every job shares, checked once after parsing (recipe values and flags alike):
    no NaN numbers, seeds in numpy's range [0, 2**32), and precisions that hf_ext writes.

    Args:
        config (`Any`):
            A config dataclass instance. Fields named ``seed``/``*_seed`` are range-checked, ``dtype``/``*_dtype``
            must be one of `hf_ext.models.DTYPES`, and a non-empty ``output_dir`` must be writable
            (:func:`check_writable_dir`).

    Returns:
        `Any`: the same `config`.
    """
    _check_values({f.name: getattr(config, f.name, None) for f in dataclasses.fields(config) if f.init})
    return config


def _check_values(values: dict[str, Any]) -> None:
    from .models import DTYPES

    for name, value in values.items():
        if isinstance(value, float) and math.isnan(value):
            raise RecipeError(f"Field {name!r} is NaN; give a number.")
        if _is_seed(name) and isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < 2**32:
            raise RecipeError(f"Field {name!r} must be in [0, 2**32 - 1] (numpy and torch seeds), got {value}.")
        if _is_dtype(name) and isinstance(value, str) and value not in DTYPES:
            raise RecipeError(f"Field {name!r} must be one of {list(DTYPES)} (or null for the checkpoint's), got {value!r}.")
        if name == "output_dir" and isinstance(value, str) and value:
            check_writable_dir(value, name)


def check_writable_dir(path: str | os.PathLike, field: str = "output_dir") -> None:
    """Fail now, before any work, when ``path`` cannot become a folder we can write in: probe the
    nearest existing ancestor with a temporary file (works for root and read-only mounts too).

    Args:
        path (`str` or `os.PathLike`):
            The folder to write in; it need not exist yet (``~`` is expanded).
        field (`str`, *optional*, defaults to `"output_dir"`):
            The config field the path came from, named in the error message.

    Raises:
        RecipeError: the path is a file, sits below a file, or its nearest existing ancestor is not writable.
    """
    import tempfile

    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise RecipeError(f"{field} {str(path)!r} is a file, not a folder; choose a folder path.")
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RecipeError(f"{field} {str(path)!r} cannot be created: {str(ancestor)!r} is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hf_ext-write-probe-", dir=ancestor)
    except OSError as exc:
        raise RecipeError(f"{field} {str(path)!r} is not writable ({str(ancestor)!r}: {exc.strerror or exc}); "
                          "choose a folder you can write to.") from None
    os.close(fd)
    os.unlink(probe)


def _mapping_flags(config_cls: type, hints: dict[str, Any], checked: dict[str, Any], argv: list[str]) -> tuple[dict, list]:
    """Take ``--name VALUE`` of a mapping field out of `argv`: VALUE is YAML (``--featurizer '{layer: 15}'``),
    and its keys update the recipe's mapping one by one (the flag wins for the keys it names)."""
    mappings = {name for name, f in config_fields(config_cls).items() if hints[name] is dict or get_origin(hints[name]) is dict}
    rest, checked = [], dict(checked)
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in mappings and (eq or i + 1 < len(argv)):
            if not eq:
                value, i = argv[i + 1], i + 1
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise RecipeError(f"Flag --{name} takes a YAML mapping, e.g. --{name} '{{key: value}}'; got {value!r} ({exc}).") from None
            parsed = coerce(parsed, hints[name], name)
            _check_values(parsed)
            base = checked.get(name)
            if base is None:
                field = config_fields(config_cls)[name]
                base = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            checked[name] = {**(base or {}), **parsed}
        else:
            rest.append(arg)
        i += 1
    return checked, rest


def parse_config(config_cls: type[T], values: dict[str, Any] | None = None, argv: list[str] | None = None) -> T:
    """Build `config_cls` from recipe values (checked) and command-line flags (which win).

    Args:
        config_cls (`type[T]`):
            A dataclass whose fields all have `metadata={"help": ...}`.
        values (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Recipe values (keys must be fields of `config_cls`).
        argv (`list[str]` or `None`, *optional*, defaults to `None`):
            Flags such as ``["--budget", "100"]``, parsed by ``HfArgumentParser``. A mapping field's flag
            takes YAML and updates the recipe's mapping key by key (``--featurizer '{layer: 15}'``).
    """
    values = dict(values or {})
    adapt = getattr(config_cls, "adapt_recipe", None)  # a config that also reads another tool's schema
    if adapt is not None:
        values = adapt(values)
    check_recipe = getattr(config_cls, "check_recipe", None)  # e.g. renamed keys refused with the new names
    if check_recipe is not None:
        check_recipe(values, argv)
    check_keys(config_cls, values)
    hints = typing.get_type_hints(config_cls)
    checked = {k: coerce(v, hints[k], k) for k, v in values.items()}
    _check_values(checked)
    if argv:
        checked, argv = _mapping_flags(config_cls, hints, checked, list(argv))
    if argv:
        from transformers import HfArgumentParser

        parser = HfArgumentParser(config_cls)
        parser.set_defaults(**checked)
        try:
            namespace, remaining = parser.parse_known_args(args=list(argv))
            if remaining:
                raise ValueError(f"Some specified arguments are not used by the HfArgumentParser: {remaining}")
            flagged = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(config_cls)
                       if f.init and hasattr(namespace, f.name)}
            _check_values(flagged)  # before the config's own checks (which may look at output_dir, load files...)
            config = config_cls(**flagged)
        except ValueError as exc:
            if isinstance(exc, RecipeError) or type(exc).__module__.startswith("hf_ext"):
                raise
            valid = ", ".join(f"--{name}" for name in sorted(config_fields(config_cls)))
            raise RecipeError(f"{exc}. Valid flags for {config_cls.__name__}: {valid}.") from None
        return check_config(config)
    try:
        config = config_cls(**checked)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RecipeError):
            raise
        raise RecipeError(f"Invalid {config_cls.__name__}: {exc}") from None
    return check_config(config)
