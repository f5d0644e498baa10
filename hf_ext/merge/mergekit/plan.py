"""The plan of a mergekit config: every output tensor, its inputs (model, tensor name) in the method's order, the
method object with its parameters resolved for that tensor, and the weights — in mergekit's order (by name).

Parameters resolve as mergekit resolves them, per output tensor: a model's own ``parameters``, then the
slice's, then the global ones (:func:`~hf_ext.merge.mergekit.settings.evaluate_setting` for gradients and
filters); layers of each slice are renumbered into the output's stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ...errors import InputError
from ..methods import MergeMethod, PassthroughMerge, SlerpMerge, TaskArithmetic
from ...weights import WeightSource
from .settings import LAYER, NO_EFFECT, RENAMED, REQUIRED, MethodSpec, evaluate_setting

__all__ = ["PlannedTensor", "plan_tensors"]


class ParsedConfig(Protocol):
    """What planning reads of a parsed config (:class:`~hf_ext.merge.mergekit.config.MergekitMerge`)."""

    method_name: str
    spec: MethodSpec
    parameters: dict[str, Any]
    base_model: str | None
    slices: list[Any]

    def source(self, model: str, where: str = "model") -> WeightSource: ...


@dataclass
class PlannedTensor:
    """One output tensor: its inputs (model reference, tensor name) in the method's order, and the method.

    Args:
        name (`str`):
            The output tensor's name (layer index renumbered into the output's stack).
        inputs (`list[tuple[str, str]]`):
            ``(model reference, tensor name)`` of each input, in the method's order (for slerp the base first).
        base (`tuple[str, str]` or `None`):
            ``(model reference, tensor name)`` of the base's tensor the task vectors are taken against; None when
            the method uses no base (or, for slerp, has it first among `inputs`).
        method (`MergeMethod`):
            The method object, its parameters resolved for this tensor.
        weights (`torch.Tensor`):
            The weights the method gets: one per model besides the base (per input where the base is merged like
            the others); 1.0 each where the method takes no ``weight``.
    """

    name: str
    inputs: list[tuple[str, str]]
    base: tuple[str, str] | None
    method: MergeMethod
    weights: torch.Tensor


def _resolve(config: ParsedConfig, name: str, default: Any, scopes: list[dict[str, Any]], tensor: str, t: float, who: str) -> Any:
    for scope in scopes:
        if name in scope:
            value = evaluate_setting(scope[name], tensor, t)
            if value is not None:
                return value
    if default is REQUIRED:
        raise InputError(f"Missing parameter {name!r} for {who} (tensor {tensor!r}) with merge_method "
                         f"{config.method_name!r}: set it in that model's `parameters` or in the global `parameters`.")
    return default

def _plan_tensor(config: ParsedConfig, out: str, names: list[str], sl: Any, t: float) -> PlannedTensor:
    spec, base = config.spec, sl.base_model or config.base_model
    order = [(s, n) for s, n in zip(sl.sources, names)]
    shared = {p: _resolve(config, p, d, [sl.parameters, config.parameters], out, t, "the merge") for p, d in spec.shared.items()}

    def per(s: Any, n: str, table: dict[str, Any]) -> dict[str, Any]:
        scopes = [x.parameters for x in sl.sources if x.model == s.model] + [sl.parameters, config.parameters]
        return {p: _resolve(config, p, d, scopes, n, t, f"model {s.model!r}") for p, d in table.items()}

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
        if p in NO_EFFECT or (p == "rescale" and spec.cls is TaskArithmetic):
            continue
        if p == "density" and spec.cls is TaskArithmetic:
            continue
        if p == "scale" and spec.cls is PassthroughMerge:
            v = v[0]
        kwargs[RENAMED.get(p, p)] = v
    if spec.cls is SlerpMerge:
        kwargs["t"] = float(kwargs["t"])
    valid = {f.name for f in dataclasses.fields(spec.cls)}
    method = spec.cls(**{k: v for k, v in kwargs.items() if k in valid})
    if spec.cls is SlerpMerge:  # mergekit: interpolate from the base (t=0) to the other model
        order_models = [(base_in[0], base_in[1])] + [(s.model, n) for s, n in order]
        return PlannedTensor(out, order_models, None, method, weights)
    method.check_weights(weights)
    return PlannedTensor(out, [(s.model, n) for s, n in order], base_in, method, weights)

def plan_tensors(config: ParsedConfig) -> tuple[list[PlannedTensor], int]:
    """Every output tensor with its inputs and method, in mergekit's order, and the output's layer count; checks
    shapes before any merge.

    Args:
        config (`ParsedConfig`):
            The parsed config (a :class:`~hf_ext.merge.mergekit.config.MergekitMerge`): method, parameters, base
            model, slices and the models' weight sources.
    """
    planned: list[PlannedTensor] = []
    first, last = config.slices[0], config.slices[-1]
    ref = config.source(first.sources[0].model)
    layer_keys: dict[int, list[tuple[str, str]]] = {}
    other = []
    for key in ref.keys():
        m = LAYER.match(key)
        if m:
            layer_keys.setdefault(int(m.group("index")), []).append((m.group("head"), m.group("rest")))
        else:
            other.append(key)
    pre = [k for k in other if "embed" in k]
    post = [k for k in other if "embed" not in k]
    for key in pre:
        planned.append(_plan_tensor(config, key, [key] * len(first.sources), first, 0.0))
    out_layer = 0
    layer_shapes: dict[str, tuple[int, ...]] = {}
    for sl in config.slices:
        n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
        for idx in range(n):
            t = idx / (n - 1) if n > 1 else 1.0
            first_src = sl.sources[0]
            parts = layer_keys.get(first_src.layer_range[0] + idx) or layer_keys.get(0, [])
            for head, rest in parts:
                names = [f"{head}{s.layer_range[0] + idx}.{rest}" for s in sl.sources]
                shapes = []
                for s, name in zip(sl.sources, names):
                    src = config.source(s.model)
                    if name not in src:
                        raise InputError(f"{s.where}: tensor {name!r} is missing from {s.model!r}; slices must "
                                         "come from models of one architecture.")
                    shapes.append(src.shape(name))
                ref_shape = layer_shapes.setdefault(rest, shapes[0])
                for s, shape in zip(sl.sources, shapes):
                    if shape != ref_shape:
                        raise InputError(f"{s.where}: tensor {rest!r} has shape {list(shape)} but {list(ref_shape)} in "
                                         "the other layers; these slices cannot stack (models of another width).")
                planned.append(_plan_tensor(config, f"{head}{out_layer}.{rest}", names, sl, t))
            out_layer += 1
    for key in post:
        planned.append(_plan_tensor(config, key, [key] * len(last.sources), last, 0.0))
    for p in planned:  # every input present and of one shape
        shapes = {(m, config.source(m).shape(n)) if n in config.source(m) else (m, None) for m, n in p.inputs + ([p.base] if p.base else [])}
        missing = [m for m, s in shapes if s is None]
        if missing:
            raise InputError(f"Tensor {p.name!r} is missing from {missing[0]!r}; merges need one architecture.")
        if len({s for _, s in shapes}) > 1:
            raise InputError(f"Tensor {p.name!r} has different shapes across models: {sorted(shapes, key=str)}; "
                             "merges need models of one architecture and size.")
    planned.sort(key=lambda p: p.name)  # mergekit executes (and draws random masks) in name order
    return planned, out_layer
