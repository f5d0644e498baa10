"""mergekit YAML configs, run by hf_ext's streaming merge (mergekit itself is never imported).

:func:`from_mergekit_config` reads a config in mergekit's schema — ``merge_method``, ``base_model``,
``models: [{model, parameters}]`` or ``slices: [{sources: [{model, layer_range, parameters}]}]``, global
``parameters``, ``dtype``, ``out_dtype``, ``tokenizer_source`` — and returns a :class:`MergekitMerge`
whose :meth:`~MergekitMerge.run` writes the merged model like ``mergekit-yaml CONFIG OUT``:

- **Parameters** resolve as mergekit resolves them, per output tensor: a model's own ``parameters``, then
  the slice's, then the global ones; a value is a number, a gradient (``t: [0, 0.5, 1]``, interpolated
  linearly over the layers of each slice, ``t = layer / (layers − 1)``; embeddings and the head take the
  first value) or a list of ``{filter, value}`` whose ``filter`` is a substring of the tensor name.
- **Methods** map to hf_ext's method objects (:mod:`hf_ext.merge.methods`): ``linear``, ``task_arithmetic``,
  ``ties``, ``dare_ties``, ``dare_linear``, ``della``, ``della_linear``, ``breadcrumbs``, ``breadcrumbs_ties``,
  ``slerp``, ``nuslerp``, ``model_stock``, ``passthrough``. TIES and DARE use ``convention="mergekit"``
  (signs elected on the weighted task vectors, normalised by the sum of the agreeing weights), so a ported
  config keeps its meaning; hf_ext's own recipes keep PEFT's arithmetic (``convention="peft"``).
- **Random methods** (DARE, DELLA) draw from one generator seeded once with `seed`, in mergekit's tensor
  order, so the output equals ``mergekit-yaml --random-seed SEED``.
- ``int8_mask`` changes only the dtype of mergekit's sign mask, never the result: accepted, no effect.
  hf_ext computes in float32 and casts to ``out_dtype`` (else ``dtype``, else the input's); with
  ``dtype: float32`` (or fp32 inputs) the result equals mergekit's to ≤ 1e-6.
- ``slices`` stack layers (``passthrough`` frankenmerges): the output config's ``num_hidden_layers`` is the
  sum of the slices' layer counts. Layer tensors must be named ``….layers.N.…`` (Llama, Mistral, Qwen,
  Gemma, …).

Anything else in the schema (``modules``, ``tokenizer``, ``chat_template``, LoRA references ``model+lora``,
``tokenizer_source: union``, other methods) is refused naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import InputError
from .methods import (
    MERGE_METHODS,
    BreadcrumbsMerge,
    DareMerge,
    DellaMerge,
    LinearMerge,
    MergeMethod,
    ModelStockMerge,
    NuSlerpMerge,
    PassthroughMerge,
    SlerpMerge,
    TaskArithmetic,
    TiesMerge,
)
from ..weights import WeightSource, check_finite

__all__ = ["from_mergekit_config", "MergekitMerge", "MERGEKIT_METHODS", "is_mergekit_config"]

REQUIRED = object()
_TOP_KEYS = {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "tokenizer_source"}
_REFUSED_TOP = {"modules": "per-module configs", "tokenizer": "tokenizer surgery (use tokenizer_source: base or a model)",
                "chat_template": "chat templates (the tokenizer's is copied)"}  # fmt: skip
_GTA_SHARED = {"int8_mask": False, "lambda": 1.0}
_GTA_MODEL = {"weight": REQUIRED, "density": 1.0}


@dataclass(frozen=True)
class _Spec:
    """A mergekit method: the hf_ext class, fixed settings, mergekit's parameters (name -> default) by scope."""

    cls: type[MergeMethod]
    fixed: dict[str, Any]
    shared: dict[str, Any]
    per_model: dict[str, Any]  # non-base models (GTA, nuslerp)
    per_input: dict[str, Any] = dataclasses.field(default_factory=dict)  # every input, base included
    base: str = "required"  # required / optional / ignored


def _gta(cls: type[MergeMethod], normalize: bool, rescale: bool, extra: dict[str, Any] | None = None, **fixed: Any) -> _Spec:
    return _Spec(cls, fixed, {**_GTA_SHARED, "normalize": normalize, "rescale": rescale}, {**_GTA_MODEL, **(extra or {})})


MERGEKIT_METHODS: dict[str, _Spec] = {
    "linear": _Spec(LinearMerge, {}, {"normalize": True}, {}, {"weight": REQUIRED}, base="ignored"),
    "task_arithmetic": _gta(TaskArithmetic, False, False),
    "ties": _gta(TiesMerge, True, False, convention="mergekit"),
    "dare_ties": _gta(DareMerge, False, True, convention="mergekit", ties=True, seed=None),
    "dare_linear": _gta(DareMerge, False, True, convention="mergekit", ties=False, seed=None),
    "breadcrumbs": _gta(BreadcrumbsMerge, False, False, {"gamma": 0.01}, ties=False),
    "breadcrumbs_ties": _gta(BreadcrumbsMerge, False, False, {"gamma": 0.01}, ties=True),
    "della": _gta(DellaMerge, True, True, {"epsilon": 0.15}, ties=True, seed=None),
    "della_linear": _gta(DellaMerge, False, True, {"epsilon": 0.15}, ties=False, seed=None),
    "slerp": _Spec(SlerpMerge, {}, {"t": REQUIRED}, {}),
    "nuslerp": _Spec(NuSlerpMerge, {}, {"nuslerp_row_wise": False, "nuslerp_flatten": True}, {"weight": REQUIRED}, base="optional"),
    "model_stock": _Spec(ModelStockMerge, {}, {"filter_wise": False}, {}),
    "passthrough": _Spec(PassthroughMerge, {}, {}, {}, {"scale": None}, base="ignored"),
}
# mergekit parameter -> hf_ext field, where the names differ.
_RENAMED = {"lambda": "scale", "nuslerp_row_wise": "row_wise", "nuslerp_flatten": "flatten"}
_NO_EFFECT = {"int8_mask"}  # only the dtype of mergekit's sign mask
_LAYER = re.compile(r"^(?P<head>(?:.*\.)?layers\.)(?P<index>\d+)\.(?P<rest>.+)$")


def is_mergekit_config(values: Mapping[str, Any]) -> bool:
    """A mapping in mergekit's schema (it has ``merge_method``)."""
    return isinstance(values, Mapping) and "merge_method" in values


def _ref(value: Any, where: str) -> str:
    if isinstance(value, dict) and set(value) <= {"model"} and isinstance(value.get("model"), str):
        value = value["model"]
    if not isinstance(value, str) or not value:
        raise InputError(f"{where} must be a model path or Hub id (a string), got {value!r}.")
    if "+" in value:
        raise InputError(f"{where} = {value!r} names a LoRA (model+lora); hf_ext does not merge LoRA references. "
                         "Merge the adapter into its model first (PeftModel.merge_and_unload) and name that folder.")
    return value


def _check_keys(mapping: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise InputError(f"{where} must be a mapping, got {type(mapping).__name__}.")
    for key in mapping:
        if key not in allowed:
            raise InputError(f"Unsupported key {key!r} in {where} of the mergekit config. Supported: {sorted(allowed)}.")
    return mapping


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _evaluate(setting: Any, tensor_name: str, t: float) -> Any:
    """mergekit's ``evaluate_setting``: filters by substring, gradients interpolated at `t`."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, (bool, int, float, str)) for e in setting):
            if not all(_is_number(e) for e in setting):
                return setting[int(t * (len(setting) - 1))]
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * setting[i0] + frac * setting[i1]
        for cond in setting:
            flt = cond.get("filter")
            if flt is None or flt == "*" or (tensor_name and flt in tensor_name):
                return _evaluate(cond["value"], tensor_name, t)
        return None
    raise InputError(f"Unexpected mergekit parameter value {setting!r}.")


def _check_setting(name: str, setting: Any, where: str, layers: int) -> None:
    """Refuse malformed settings and gradients with more points than the slice has layers."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list) and setting and all(isinstance(c, dict) for c in setting):
        for i, cond in enumerate(setting):
            _check_keys(cond, {"filter", "value"}, f"{where}.{name}[{i}]")
            if "value" not in cond:
                raise InputError(f"{where}.{name}[{i}] needs a `value` (with an optional `filter`).")
            _check_setting("value", cond["value"], f"{where}.{name}[{i}]", layers)
        return
    if isinstance(setting, list):
        if not all(isinstance(e, (bool, int, float, str)) for e in setting):
            raise InputError(f"{where}.{name} must be a value, a gradient list of numbers or a list of {{filter, value}}; got {setting!r}.")
        if len(setting) > layers:
            raise InputError(f"{where}.{name} is a gradient of {len(setting)} values over a slice of {layers} layers; "
                             f"give at most {layers} values (they are interpolated across the layers).")
        return
    if not isinstance(setting, (bool, int, float, str)) and setting is not None:
        raise InputError(f"{where}.{name} has an unsupported value {setting!r}.")


@dataclass
class _Source:
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any]
    where: str


@dataclass
class _Slice:
    sources: list[_Source]
    base_model: str | None
    parameters: dict[str, Any]
    where: str


@dataclass
class _Planned:
    """One output tensor: its inputs (source index, tensor name) in the method's order, and the method."""

    name: str
    inputs: list[tuple[str, str]]
    base: tuple[str, str] | None
    method: MergeMethod
    weights: torch.Tensor


class MergekitMerge:
    """A parsed, validated mergekit config; :meth:`run` writes the merged model (see the module docs).

    Args:
        config (`dict[str, Any]`):
            The config mapping (mergekit's schema).
        seed (`int`, *optional*, defaults to `0`):
            Seed of DARE/DELLA drop masks (mergekit-yaml's ``--random-seed``).
        text (`str` or `None`, *optional*, defaults to `None`):
            The YAML text it was read from (embedded in the card).
    """

    def __init__(self, config: dict[str, Any], *, seed: int = 0, text: str | None = None):
        self.config, self.seed, self.text = config, seed, text
        _check_keys(config, _TOP_KEYS | set(_REFUSED_TOP), "the top level")
        for key, what in _REFUSED_TOP.items():
            if config.get(key) is not None:
                raise InputError(f"mergekit key {key!r} ({what}) is not supported by hf_ext; remove it.")
        name = config.get("merge_method")
        if name not in MERGEKIT_METHODS:
            raise InputError(f"Unknown merge_method {name!r}. hf_ext runs these mergekit methods: {', '.join(MERGEKIT_METHODS)}.")
        self.method_name: str = name
        self.spec = MERGEKIT_METHODS[name]
        self.dtype = self._dtype("dtype")
        self.out_dtype = self._dtype("out_dtype")
        self.base_model = _ref(config["base_model"], "base_model") if config.get("base_model") is not None else None
        if (config.get("models") is None) == (config.get("slices") is None):
            raise InputError("A mergekit config needs exactly one of `models` or `slices`.")
        self.parameters = self._params(config.get("parameters"), "parameters")
        self._sources: dict[str, WeightSource] = {}
        self.slices = self._slices()
        self.tokenizer_source = self._tokenizer_source(config.get("tokenizer_source"))

    # -- parsing ---------------------------------------------------------------------------------------------
    def _dtype(self, key: str) -> torch.dtype | None:
        from .merge import output_dtype

        return output_dtype(self.config.get(key), key)

    def _params(self, params: Any, where: str) -> dict[str, Any]:
        if params is None:
            return {}
        valid = set(self.spec.shared) | set(self.spec.per_model) | set(self.spec.per_input)
        _check_keys(params, valid, f"{where} (merge_method {self.method_name!r})")
        return params

    def source(self, model: str, where: str = "model") -> WeightSource:
        """The :class:`WeightSource` of a model reference (read once); a missing local path is refused."""
        if model not in self._sources:
            path = Path(model).expanduser()
            looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep == "\\" and "\\" in model
            if not path.exists() and looks_local:
                raise InputError(f"{where}: model path {model!r} does not exist. Fix the path (relative paths are "
                                 "read from the current directory, as mergekit does) or give a Hub id.")
            self._sources[model] = WeightSource(model, name=model)
        return self._sources[model]

    def _layers(self, model: str, where: str) -> int:
        src = self.source(model, where)
        n = (src.config or {}).get("num_hidden_layers")
        if n is None:
            found = {int(m.group("index")) for k in src.keys() if (m := _LAYER.match(k))}
            n = max(found) + 1 if found else 0
        return int(n)

    def _slices(self) -> list[_Slice]:
        cfg = self.config
        if cfg.get("models") is not None:
            if not isinstance(cfg["models"], list) or not cfg["models"]:
                raise InputError("`models` must be a non-empty list of {model, parameters}.")
            sources = []
            for i, entry in enumerate(cfg["models"]):
                where = f"models[{i}]"
                entry = _check_keys(entry if isinstance(entry, dict) else {"model": entry}, {"model", "parameters"}, where)
                model = _ref(entry.get("model"), f"{where}.model")
                sources.append(_Source(model, (0, self._layers(model, f"{where}.model")),
                                       self._params(entry.get("parameters"), f"{where}.parameters"), where))  # fmt: skip
            if self.base_model and self.base_model not in [s.model for s in sources]:
                sources.append(_Source(self.base_model, (0, self._layers(self.base_model, "base_model")), {}, "base_model"))
            slices = [_Slice(sources, None, {}, "models")]
        else:
            if not isinstance(cfg["slices"], list) or not cfg["slices"]:
                raise InputError("`slices` must be a non-empty list of {sources: [{model, layer_range}]}.")
            slices = []
            for i, sl in enumerate(cfg["slices"]):
                where = f"slices[{i}]"
                _check_keys(sl, {"sources", "base_model", "parameters"}, where)
                if not isinstance(sl.get("sources"), list) or not sl["sources"]:
                    raise InputError(f"{where}.sources must be a non-empty list of {{model, layer_range}}.")
                sources = []
                for j, src in enumerate(sl["sources"]):
                    w = f"{where}.sources[{j}]"
                    _check_keys(src, {"model", "layer_range", "parameters"}, w)
                    model = _ref(src.get("model"), f"{w}.model")
                    lr = src.get("layer_range")
                    n = self._layers(model, f"{w}.model")
                    if not (isinstance(lr, list) and len(lr) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in lr)):
                        raise InputError(f"{w}.layer_range must be [start, end] (two integers), got {lr!r}.")
                    if not 0 <= lr[0] < lr[1] <= n:
                        raise InputError(f"{w}.layer_range {lr} is out of bounds for {model!r}, which has {n} layers: "
                                         f"need 0 <= start < end <= {n}.")
                    sources.append(_Source(model, (lr[0], lr[1]), self._params(src.get("parameters"), f"{w}.parameters"), w))
                base = _ref(sl["base_model"], f"{where}.base_model") if sl.get("base_model") is not None else None
                slices.append(_Slice(sources, base, self._params(sl.get("parameters"), f"{where}.parameters"), where))
        for sl in slices:
            lengths = {s.layer_range[1] - s.layer_range[0] for s in sl.sources}
            if len(lengths) > 1:
                raise InputError(f"{sl.where}: all sources of a slice must span the same number of layers, got "
                                 f"{[list(s.layer_range) for s in sl.sources]}.")
            layers = lengths.pop()
            for scope, where in [(sl.parameters, f"{sl.where}.parameters"), (self.parameters, "parameters")] + [
                    (s.parameters, f"{s.where}.parameters") for s in sl.sources]:  # fmt: skip
                for name, setting in scope.items():
                    _check_setting(name, setting, where, layers)
            self._check_inputs(sl)
        return slices

    def _check_inputs(self, sl: _Slice) -> None:
        base = sl.base_model or self.base_model
        models = [s.model for s in sl.sources]
        non_base = [m for m in models if m != base]
        name, spec = self.method_name, self.spec
        if spec.base == "required" and base is None:
            raise InputError(f"merge_method {name!r} needs `base_model` (the model the others were finetuned from).")
        counts = {"slerp": (2, 2), "nuslerp": (2, 2), "model_stock": (2, None), "passthrough": (1, 1)}
        lo, hi = counts.get(name, (1, None))
        n = len(models) if name in ("passthrough", "slerp") else len(non_base)
        if name == "slerp" and base not in models:
            raise InputError(f"{sl.where}: merge_method 'slerp' interpolates from base_model {base!r} to the other model; "
                             "list the base among the slice's sources.")
        if n < lo or (hi is not None and n > hi):
            need = f"exactly {lo}" if lo == hi else f"at least {lo}"
            what = "source" if name == "passthrough" else ("model besides the base" if name != "slerp" else "models (the base and one other)")
            raise InputError(f"{sl.where}: merge_method {name!r} takes {need} {what}; got {models}.")

    def _tokenizer_source(self, value: Any) -> str | None:
        if value is None:
            return None
        if value == "union":
            raise InputError("tokenizer_source: union (a merged vocabulary) is not supported by hf_ext; use `base` or a model.")
        model = self.base_model if value == "base" else _ref(value, "tokenizer_source")
        if model is None:
            raise InputError("tokenizer_source: base needs a base_model.")
        vocab = _vocab(self.source(model, "tokenizer_source"))
        for ref in self.referenced_models():
            other = _vocab(self.source(ref))
            if vocab is not None and other is not None and other != vocab:
                raise InputError(f"tokenizer_source {value!r}: {ref!r} has another vocabulary than {model!r}; merging "
                                 "embeddings across vocabularies (mergekit's token permutation) is not supported by hf_ext.")
        return model

    def referenced_models(self) -> list[str]:
        """Every model the config names, base first, in order of appearance."""
        refs = [self.base_model] if self.base_model else []
        for sl in self.slices:
            refs += ([sl.base_model] if sl.base_model else []) + [s.model for s in sl.sources]
        return list(dict.fromkeys(refs))

    # -- planning --------------------------------------------------------------------------------------------
    def _resolve(self, name: str, default: Any, scopes: list[dict[str, Any]], tensor: str, t: float, who: str) -> Any:
        for scope in scopes:
            if name in scope:
                value = _evaluate(scope[name], tensor, t)
                if value is not None:
                    return value
        if default is REQUIRED:
            raise InputError(f"Missing parameter {name!r} for {who} (tensor {tensor!r}) with merge_method "
                             f"{self.method_name!r}: set it in that model's `parameters` or in the global `parameters`.")
        return default

    def _plan_tensor(self, out: str, names: list[str], sl: _Slice, t: float) -> _Planned:
        spec, base = self.spec, sl.base_model or self.base_model
        order = [(s, n) for s, n in zip(sl.sources, names)]
        shared = {p: self._resolve(p, d, [sl.parameters, self.parameters], out, t, "the merge") for p, d in spec.shared.items()}

        def per(s: _Source, n: str, table: dict[str, Any]) -> dict[str, Any]:
            scopes = [x.parameters for x in sl.sources if x.model == s.model] + [sl.parameters, self.parameters]
            return {p: self._resolve(p, d, scopes, n, t, f"model {s.model!r}") for p, d in table.items()}

        base_in = None
        if spec.base != "ignored" and base is not None and any(s.model == base for s, _ in order):
            base_in = next((s.model, n) for s, n in order if s.model == base)
            order = [(s, n) for s, n in order if s.model != base]
        values = {**shared}
        if spec.per_model or spec.per_input:
            table = spec.per_input or spec.per_model
            rows = [per(s, n, table) for s, n in order]
            for p in table:
                values[p] = [row[p] for row in rows]
        weights = torch.tensor([float(w) for w in values.pop("weight", [1.0] * len(order))], dtype=torch.float32)
        kwargs = {**spec.fixed}
        for p, v in values.items():
            if p in _NO_EFFECT or (p == "rescale" and spec.cls is TaskArithmetic):
                continue
            if p == "density" and spec.cls is TaskArithmetic:
                continue
            if p == "scale" and spec.cls is PassthroughMerge:
                v = v[0]
            kwargs[_RENAMED.get(p, p)] = v
        if spec.cls is SlerpMerge:
            kwargs["t"] = float(kwargs["t"])
        valid = {f.name for f in dataclasses.fields(spec.cls)}
        method = spec.cls(**{k: v for k, v in kwargs.items() if k in valid})
        if spec.cls is SlerpMerge:  # mergekit: interpolate from the base (t=0) to the other model
            order_models = [(base_in[0], base_in[1])] + [(s.model, n) for s, n in order]
            return _Planned(out, order_models, None, method, weights)
        method.check_weights(weights)
        return _Planned(out, [(s.model, n) for s, n in order], base_in, method, weights)

    def plan(self) -> list[_Planned]:
        """Every output tensor with its inputs and method, in mergekit's order; checks shapes before any merge."""
        planned: list[_Planned] = []
        first, last = self.slices[0], self.slices[-1]
        ref = self.source(first.sources[0].model)
        layer_keys: dict[int, list[tuple[str, str]]] = {}
        other = []
        for key in ref.keys():
            m = _LAYER.match(key)
            if m:
                layer_keys.setdefault(int(m.group("index")), []).append((m.group("head"), m.group("rest")))
            else:
                other.append(key)
        pre = [k for k in other if "embed" in k]
        post = [k for k in other if "embed" not in k]
        for key in pre:
            planned.append(self._plan_tensor(key, [key] * len(first.sources), first, 0.0))
        out_layer = 0
        layer_shapes: dict[str, tuple[int, ...]] = {}
        for sl in self.slices:
            n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
            for idx in range(n):
                t = idx / (n - 1) if n > 1 else 1.0
                first_src = sl.sources[0]
                parts = layer_keys.get(first_src.layer_range[0] + idx) or layer_keys.get(0, [])
                for head, rest in parts:
                    names = [f"{head}{s.layer_range[0] + idx}.{rest}" for s in sl.sources]
                    shapes = []
                    for s, name in zip(sl.sources, names):
                        src = self.source(s.model)
                        if name not in src:
                            raise InputError(f"{s.where}: tensor {name!r} is missing from {s.model!r}; slices must "
                                             "come from models of one architecture.")
                        shapes.append(src.shape(name))
                    ref_shape = layer_shapes.setdefault(rest, shapes[0])
                    for s, shape in zip(sl.sources, shapes):
                        if shape != ref_shape:
                            raise InputError(f"{s.where}: tensor {rest!r} has shape {list(shape)} but {list(ref_shape)} in "
                                             "the other layers; these slices cannot stack (models of another width).")
                    planned.append(self._plan_tensor(f"{head}{out_layer}.{rest}", names, sl, t))
                out_layer += 1
        for key in post:
            planned.append(self._plan_tensor(key, [key] * len(last.sources), last, 0.0))
        self.num_layers = out_layer
        for p in planned:  # every input present and of one shape
            shapes = {(m, self.source(m).shape(n)) if n in self.source(m) else (m, None) for m, n in p.inputs + ([p.base] if p.base else [])}
            missing = [m for m, s in shapes if s is None]
            if missing:
                raise InputError(f"Tensor {p.name!r} is missing from {missing[0]!r}; merges need one architecture.")
            if len({s for _, s in shapes}) > 1:
                raise InputError(f"Tensor {p.name!r} has different shapes across models: {sorted(shapes, key=str)}; "
                                 "merges need models of one architecture and size.")
        planned.sort(key=lambda p: p.name)  # mergekit executes (and draws random masks) in name order
        return planned

    def tensors(self, planned: list[_Planned] | None = None, *, check_values: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, merged tensor)`` one at a time, in :meth:`plan` order."""
        from .merge import checked_output

        planned = self.plan() if planned is None else planned
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for p in planned:
                inputs = [self._read(m, n, check_values) for m, n in p.inputs]
                base = self._read(*p.base, check_values) if p.base else None
                ref = base if base is not None else inputs[0]
                if not ref.is_floating_point():
                    yield p.name, ref
                    continue
                out_dtype = self.out_dtype or self.dtype or ref.dtype
                inputs, base, ref = [x.float() for x in inputs], None if base is None else base.float(), None
                merged = p.method.merge(inputs, p.weights, base, key=p.name)  # the method may free the inputs early
                del inputs, base  # freed before the next tensor's inputs are read
                yield p.name, checked_output(merged.to(out_dtype), p.name, p.method)
                del merged

    def _read(self, model: str, name: str, check_values: bool) -> torch.Tensor:
        tensor = self.source(model).get(name)
        if check_values:
            check_finite(tensor, name, model)
        return tensor.to(self.dtype) if self.dtype is not None and tensor.is_floating_point() else tensor

    # -- writing ---------------------------------------------------------------------------------------------
    def card_ids(self, hub_ids: Mapping[str, str] | None = None) -> dict[str, str]:
        """Hub id per referenced model (local folders need one in `hub_ids`, or a packaged copy's id)."""
        ids = {}
        for ref in self.referenced_models():
            hub_id = (hub_ids or {}).get(ref) or self.source(ref).hub_id
            if hub_id is None and not Path(ref).expanduser().exists():
                hub_id = ref
            if hub_id is None:
                raise InputError(f"Model {ref!r} is a local folder without a Hub id for the card (base_model lists Hub "
                                 "ids, never local paths): pass hub_ids={path: hub_id} (job field `input_hub_ids`, one per "
                                 "referenced model, base first).")
            ids[ref] = hub_id
        return ids

    def card_yaml(self, ids: Mapping[str, str]) -> str:
        """The config as YAML with every model reference replaced by its Hub id."""

        def sub(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: (ids.get(v, v) if k in ("model", "base_model", "tokenizer_source") and isinstance(v, str) else sub(v))
                        for k, v in value.items()}  # fmt: skip
            if isinstance(value, list):
                return [sub(v) for v in value]
            return value

        return yaml.safe_dump(sub(self.config), sort_keys=False, default_flow_style=None).rstrip() + "\n"

    def run(self, output_dir: str | os.PathLike, *, hub_ids: Mapping[str, str] | None = None, max_shard_size: int | str = "5GB",
            check_values: bool = True, push_to_hub: str | None = None, hub_endpoint: str | None = None,
            overwrite: bool = False) -> Path:
        """Write the merged model to `output_dir` (safetensors, config, tokenizer, card with the config).

        Args:
            hub_ids (`Mapping[str, str]` or `None`, *optional*, defaults to `None`):
                Hub id per local model reference, for the card (``base_model`` lists Hub ids only).
            push_to_hub (`str` or `None`, *optional*, defaults to `None`):
                Repo id to upload the finished folder to.
            overwrite (`bool`, *optional*, defaults to `False`):
                Replace an existing folder hf_ext did not write (:func:`hf_ext.outputs.output_folder`).
        """
        import time

        from .merge import write_merged

        start = time.perf_counter()
        ids = self.card_ids(hub_ids)  # fail before any work
        planned = self.plan()
        layout = []
        for p in planned:
            src_model, src_name = p.base or p.inputs[0]
            src = self.source(src_model)
            dtype = src.dtype(src_name)
            if dtype.is_floating_point:
                dtype = self.out_dtype or self.dtype or dtype
            layout.append((p.name, src.shape(src_name), dtype))
        side = self.source(self.tokenizer_source or self.base_model or self.slices[0].sources[0].model)
        config_src = self.source(self.base_model or self.slices[0].sources[0].model)
        update: dict[str, Any] = {}
        base_cfg = config_src.config or {}
        if "num_hidden_layers" in base_cfg and base_cfg["num_hidden_layers"] != self.num_layers:
            update["num_hidden_layers"] = self.num_layers
            if isinstance(base_cfg.get("layer_types"), list):
                types = []
                for sl in self.slices:
                    s = sl.sources[0]
                    src_types = (self.source(s.model).config or {}).get("layer_types") or []
                    types += [src_types[i] if i < len(src_types) else src_types[-1] for i in range(*s.layer_range)]
                update["layer_types"] = types
        if self.out_dtype or self.dtype:
            update["dtype"] = str(self.out_dtype or self.dtype).removeprefix("torch.")
        text = self.card_yaml(ids)

        def card(folder: Path) -> None:
            from ..hub.cards import render_model_card

            (folder / "mergekit_config.yml").write_text(text)
            card_ids = list(dict.fromkeys(ids.values()))
            weights = {}
            for p in planned[:1]:
                weights = {ids.get(m, m): round(float(w), 6) for (m, _), w in zip(p.inputs, p.weights)}
            rows = [{"model": ids[m], "weight": weights.get(ids[m], "per tensor (see the config)")} for m in self.referenced_models()
                    if m != self.base_model]  # fmt: skip
            render_model_card(
                "merge_model.md.j2",
                {"base_model": card_ids, "base_model_relation": "merge", "tags": ["hf-ext", "merge", "mergekit", self.method_name]},
                title=f"{self.method_name} merge of {len(card_ids)} models (mergekit config)",
                method={"method": self.method_name, "convention": "mergekit", "seed": self.seed}, rows=rows,
                base=ids.get(self.base_model) if self.base_model else None,
                extra={"seconds": round(time.perf_counter() - start, 3), "layers": self.num_layers},
                base_model=card_ids, mergekit_config=text,
            ).save(str(folder / "README.md"))

        return write_merged(output_dir, layout, self.tensors(planned, check_values=check_values), side_files=side, card=card,
                            max_shard_size=max_shard_size, config_update=update, push_to_hub=push_to_hub, overwrite=overwrite,
                            inputs={ref: src.folder for ref, src in self._sources.items() if src.folder is not None},
                            hub_endpoint=hub_endpoint, commit_message=f"hf_ext: {self.method_name} merge (mergekit config)")  # fmt: skip


def _vocab(src: WeightSource) -> dict[str, int] | None:
    if src.folder is None or not (src.folder / "tokenizer.json").is_file():
        return None
    return json.loads((src.folder / "tokenizer.json").read_text()).get("model", {}).get("vocab")


def from_mergekit_config(path_or_dict: str | os.PathLike | Mapping[str, Any], *, seed: int = 0) -> MergekitMerge:
    """Read a mergekit config (a YAML path or a mapping) into a :class:`MergekitMerge`.

    Example:
        >>> merge = from_mergekit_config({"merge_method": "karcher", "models": []})  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        hf_ext.errors.InputError: Unknown merge_method 'karcher'. hf_ext runs these mergekit methods: linear, ...
    """
    text = None
    if isinstance(path_or_dict, Mapping):
        config = dict(path_or_dict)
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise InputError(f"mergekit config {str(path)!r} does not exist.")
        text = path.read_text(encoding="utf-8")
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"mergekit config {str(path)!r} is not valid YAML: {exc}") from None
    if not is_mergekit_config(config):
        raise InputError("Not a mergekit config: it has no `merge_method` key (hf_ext's own recipes use `method`).")
    return MergekitMerge(config, seed=seed, text=text)


assert set(MERGE_METHODS) >= {s.cls.name for s in MERGEKIT_METHODS.values()}
