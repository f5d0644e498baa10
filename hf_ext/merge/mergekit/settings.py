"""mergekit's parameter language and method table, as hf_ext reads them.

- :data:`MERGEKIT_METHODS`: each mergekit ``merge_method`` as an hf_ext method class (:mod:`hf_ext.merge.methods`),
  its fixed settings and mergekit's parameters (name → default) by scope: shared, per non-base model, per input.
- :func:`evaluate_setting`: a parameter's value for one tensor, as mergekit's ``evaluate_setting`` computes it: a
  number, a gradient (``[0, 0.5, 1]`` interpolated linearly at the layer's position ``t``) or a list of
  ``{filter, value}`` whose ``filter`` is a substring of the tensor name; :func:`check_setting` refuses
  malformed values and gradients longer than the slice.
- :func:`check_keys`, :func:`model_ref`: the schema checks every part of a config shares.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ...errors import InputError
from ..methods import (
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

__all__ = ["MERGEKIT_METHODS", "MethodSpec", "REQUIRED", "RENAMED", "NO_EFFECT", "LAYER", "evaluate_setting",
           "check_setting", "check_keys", "model_ref"]  # fmt: skip

REQUIRED = object()
_GTA_SHARED = {"int8_mask": False, "lambda": 1.0}
_GTA_MODEL = {"weight": REQUIRED, "density": 1.0}


@dataclass(frozen=True)
class MethodSpec:
    """A mergekit method: the hf_ext class, fixed settings, mergekit's parameters (name -> default) by scope.

    Args:
        cls (`type[MergeMethod]`):
            The hf_ext merge method class that runs it.
        fixed (`dict[str, Any]`):
            Settings of `cls` the mergekit method fixes (e.g. ``convention="mergekit", ties=True`` for ``dare_ties``).
        shared (`dict[str, Any]`):
            Parameters with one value for the merge (global or slice ``parameters``) -> default; :data:`REQUIRED`
            marks a parameter without one.
        per_model (`dict[str, Any]`):
            Parameters given per non-base model (``weight``, ``density``, ...) -> default; the method gets a list.
        per_input (`dict[str, Any]`, *optional*, defaults to `{}`):
            Parameters given per input, the base included (linear's ``weight``, passthrough's ``scale``); used
            instead of `per_model` when not empty.
        base (`str`, *optional*, defaults to `"required"`):
            ``"required"``: the method needs ``base_model``; ``"optional"``: it uses one when given (nuslerp, on
            task vectors); ``"ignored"``: a base is merged like any other input.
    """

    cls: type[MergeMethod]
    fixed: dict[str, Any]
    shared: dict[str, Any]
    per_model: dict[str, Any]  # non-base models (GTA, nuslerp)
    per_input: dict[str, Any] = dataclasses.field(default_factory=dict)  # every input, base included
    base: str = "required"  # required / optional / ignored


def _gta(cls: type[MergeMethod], normalize: bool, rescale: bool, extra: dict[str, Any] | None = None, **fixed: Any) -> MethodSpec:
    return MethodSpec(cls, fixed, {**_GTA_SHARED, "normalize": normalize, "rescale": rescale}, {**_GTA_MODEL, **(extra or {})})


MERGEKIT_METHODS: dict[str, MethodSpec] = {
    "linear": MethodSpec(LinearMerge, {}, {"normalize": True}, {}, {"weight": REQUIRED}, base="ignored"),
    "task_arithmetic": _gta(TaskArithmetic, False, False),
    "ties": _gta(TiesMerge, True, False, convention="mergekit"),
    "dare_ties": _gta(DareMerge, False, True, convention="mergekit", ties=True, seed=None),
    "dare_linear": _gta(DareMerge, False, True, convention="mergekit", ties=False, seed=None),
    "breadcrumbs": _gta(BreadcrumbsMerge, False, False, {"gamma": 0.01}, ties=False),
    "breadcrumbs_ties": _gta(BreadcrumbsMerge, False, False, {"gamma": 0.01}, ties=True),
    "della": _gta(DellaMerge, True, True, {"epsilon": 0.15}, ties=True, seed=None),
    "della_linear": _gta(DellaMerge, False, True, {"epsilon": 0.15}, ties=False, seed=None),
    "slerp": MethodSpec(SlerpMerge, {}, {"t": REQUIRED}, {}),
    "nuslerp": MethodSpec(NuSlerpMerge, {}, {"nuslerp_row_wise": False, "nuslerp_flatten": True}, {"weight": REQUIRED}, base="optional"),
    "model_stock": MethodSpec(ModelStockMerge, {}, {"filter_wise": False}, {}),
    "passthrough": MethodSpec(PassthroughMerge, {}, {}, {}, {"scale": None}, base="ignored"),
}
# mergekit parameter -> hf_ext field, where the names differ.
RENAMED = {"lambda": "scale", "nuslerp_row_wise": "row_wise", "nuslerp_flatten": "flatten"}
NO_EFFECT = {"int8_mask"}  # only the dtype of mergekit's sign mask
LAYER = re.compile(r"^(?P<head>(?:.*\.)?layers\.)(?P<index>\d+)\.(?P<rest>.+)$")


def model_ref(value: Any, where: str) -> str:
    """The model path or Hub id of a config's model reference; a LoRA reference (``model+lora``) is refused.

    Args:
        value (`Any`):
            The reference as written: a non-empty string or ``{model: <string>}``.
        where (`str`):
            Its place in the config (e.g. ``"slices[0].sources[1].model"``), for error messages.
    """
    if isinstance(value, dict) and set(value) <= {"model"} and isinstance(value.get("model"), str):
        value = value["model"]
    if not isinstance(value, str) or not value:
        raise InputError(f"{where} must be a model path or Hub id (a string), got {value!r}.")
    if "+" in value:
        raise InputError(f"{where} = {value!r} names a LoRA (model+lora); hf_ext does not merge LoRA references. "
                         "Merge the adapter into its model first (PeftModel.merge_and_unload) and name that folder.")
    return value


def check_keys(mapping: Any, allowed: set[str], where: str) -> dict[str, Any]:
    """`mapping` itself, once it is a dict with only `allowed` keys (else an InputError naming the key).

    Args:
        mapping (`Any`):
            A part of the config.
        allowed (`set[str]`):
            The keys it may have.
        where (`str`):
            Its place in the config, for error messages.
    """
    if not isinstance(mapping, dict):
        raise InputError(f"{where} must be a mapping, got {type(mapping).__name__}.")
    for key in mapping:
        if key not in allowed:
            raise InputError(f"Unsupported key {key!r} in {where} of the mergekit config. Supported: {sorted(allowed)}.")
    return mapping


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def evaluate_setting(setting: Any, tensor_name: str, t: float) -> Any:
    """mergekit's ``evaluate_setting``: filters by substring, gradients interpolated at `t`.

    Args:
        setting (`Any`):
            A parameter's value: a scalar (returned as is), a gradient list (numbers interpolated linearly at `t`,
            other values picked by position), or a ``{filter, value}`` mapping or list of them (the value of the
            first whose ``filter`` is absent, ``"*"`` or a substring of `tensor_name`; None when none matches).
        tensor_name (`str`):
            The name of the tensor being merged.
        t (`float`):
            The layer's position in its slice, from 0 (first layer) to 1 (last).
    """
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
                return evaluate_setting(cond["value"], tensor_name, t)
        return None
    raise InputError(f"Unexpected mergekit parameter value {setting!r}.")


def check_setting(name: str, setting: Any, where: str, layers: int) -> None:
    """Refuse malformed settings and gradients with more points than the slice has layers.

    Args:
        name (`str`):
            The parameter's name, for error messages.
        setting (`Any`):
            Its value, in :func:`evaluate_setting`'s forms (``{filter, value}`` entries checked recursively).
        where (`str`):
            The place of the ``parameters`` mapping in the config, for error messages.
        layers (`int`):
            Number of layers of the slice; a gradient may have at most this many values.
    """
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list) and setting and all(isinstance(c, dict) for c in setting):
        for i, cond in enumerate(setting):
            check_keys(cond, {"filter", "value"}, f"{where}.{name}[{i}]")
            if "value" not in cond:
                raise InputError(f"{where}.{name}[{i}] needs a `value` (with an optional `filter`).")
            check_setting("value", cond["value"], f"{where}.{name}[{i}]", layers)
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
