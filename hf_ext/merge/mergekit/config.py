"""A mergekit config, parsed and checked (:class:`MergekitMerge`), and its run: the planned tensors streamed
through hf_ext's method objects and written like ``mergekit-yaml CONFIG OUT`` (see :mod:`hf_ext.merge.mergekit`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ...errors import InputError
from ..methods import MERGE_METHODS
from ...weights import WeightSource, check_finite
from .plan import PlannedTensor, plan_tensors
from .settings import LAYER, MERGEKIT_METHODS, check_keys, check_setting, model_ref

__all__ = ["from_mergekit_config", "MergekitMerge", "is_mergekit_config"]

_TOP_KEYS = {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "tokenizer_source"}
_REFUSED_TOP = {"modules": "per-module configs", "tokenizer": "tokenizer surgery (use tokenizer_source: base or a model)",
                "chat_template": "chat templates (the tokenizer's is copied)"}  # fmt: skip


def is_mergekit_config(values: Mapping[str, Any]) -> bool:
    """A mapping in mergekit's schema (it has ``merge_method``).

    Args:
        values (`Mapping[str, Any]`):
            A recipe or config as read from YAML (anything else gives False).
    """
    return isinstance(values, Mapping) and "merge_method" in values


@dataclass
class Source:
    """One source of a slice: a model, its layer range and its own parameters (`where`: its place in the config).

    Args:
        model (`str`):
            The model's path or Hub id, as the config names it.
        layer_range (`tuple[int, int]`):
            ``(start, end)`` of the model's layers taken, end excluded (all layers for a ``models`` config).
        parameters (`dict[str, Any]`):
            The source's own ``parameters`` (they win over the slice's and the global ones).
        where (`str`):
            Its place in the config (e.g. ``"models[1]"``, ``"slices[0].sources[1]"``), for error messages.
    """

    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any]
    where: str


@dataclass
class Slice:
    """A slice: sources of equal layer counts merged into consecutive output layers.

    Args:
        sources (`list[Source]`):
            The slice's sources, each spanning the same number of layers.
        base_model (`str` or `None`):
            The slice's own ``base_model``; None: the config's.
        parameters (`dict[str, Any]`):
            The slice's ``parameters`` (between its sources' own and the global ones).
        where (`str`):
            Its place in the config (``"slices[i]"``, or ``"models"`` for a ``models`` config), for error messages.
    """

    sources: list[Source]
    base_model: str | None
    parameters: dict[str, Any]
    where: str


class MergekitMerge:
    """A parsed, validated mergekit config; :meth:`run` writes the merged model (see :mod:`hf_ext.merge.mergekit`).

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
        check_keys(config, _TOP_KEYS | set(_REFUSED_TOP), "the top level")
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
        self.base_model = model_ref(config["base_model"], "base_model") if config.get("base_model") is not None else None
        if (config.get("models") is None) == (config.get("slices") is None):
            raise InputError("A mergekit config needs exactly one of `models` or `slices`.")
        self.parameters = self._params(config.get("parameters"), "parameters")
        self._sources: dict[str, WeightSource] = {}
        self.slices = self._slices()
        self.tokenizer_source = self._tokenizer_source(config.get("tokenizer_source"))

    # -- parsing ---------------------------------------------------------------------------------------------
    def _dtype(self, key: str) -> torch.dtype | None:
        from ..merge import output_dtype

        return output_dtype(self.config.get(key), key)

    def _params(self, params: Any, where: str) -> dict[str, Any]:
        if params is None:
            return {}
        valid = set(self.spec.shared) | set(self.spec.per_model) | set(self.spec.per_input)
        check_keys(params, valid, f"{where} (merge_method {self.method_name!r})")
        return params

    def source(self, model: str, where: str = "model") -> WeightSource:
        """The :class:`WeightSource` of a model reference (read once); a missing local path is refused.

        Args:
            model (`str`):
                The model's path or Hub id, as the config names it.
            where (`str`, *optional*, defaults to `"model"`):
                Its place in the config, for error messages.
        """
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
            found = {int(m.group("index")) for k in src.keys() if (m := LAYER.match(k))}
            n = max(found) + 1 if found else 0
        return int(n)

    def _slices(self) -> list[Slice]:
        cfg = self.config
        if cfg.get("models") is not None:
            if not isinstance(cfg["models"], list) or not cfg["models"]:
                raise InputError("`models` must be a non-empty list of {model, parameters}.")
            sources = []
            for i, entry in enumerate(cfg["models"]):
                where = f"models[{i}]"
                entry = check_keys(entry if isinstance(entry, dict) else {"model": entry}, {"model", "parameters"}, where)
                model = model_ref(entry.get("model"), f"{where}.model")
                sources.append(Source(model, (0, self._layers(model, f"{where}.model")),
                                       self._params(entry.get("parameters"), f"{where}.parameters"), where))  # fmt: skip
            if self.base_model and self.base_model not in [s.model for s in sources]:
                sources.append(Source(self.base_model, (0, self._layers(self.base_model, "base_model")), {}, "base_model"))
            slices = [Slice(sources, None, {}, "models")]
        else:
            if not isinstance(cfg["slices"], list) or not cfg["slices"]:
                raise InputError("`slices` must be a non-empty list of {sources: [{model, layer_range}]}.")
            slices = []
            for i, sl in enumerate(cfg["slices"]):
                where = f"slices[{i}]"
                check_keys(sl, {"sources", "base_model", "parameters"}, where)
                if not isinstance(sl.get("sources"), list) or not sl["sources"]:
                    raise InputError(f"{where}.sources must be a non-empty list of {{model, layer_range}}.")
                sources = []
                for j, src in enumerate(sl["sources"]):
                    w = f"{where}.sources[{j}]"
                    check_keys(src, {"model", "layer_range", "parameters"}, w)
                    model = model_ref(src.get("model"), f"{w}.model")
                    lr = src.get("layer_range")
                    n = self._layers(model, f"{w}.model")
                    if not (isinstance(lr, list) and len(lr) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in lr)):
                        raise InputError(f"{w}.layer_range must be [start, end] (two integers), got {lr!r}.")
                    if not 0 <= lr[0] < lr[1] <= n:
                        raise InputError(f"{w}.layer_range {lr} is out of bounds for {model!r}, which has {n} layers: "
                                         f"need 0 <= start < end <= {n}.")
                    sources.append(Source(model, (lr[0], lr[1]), self._params(src.get("parameters"), f"{w}.parameters"), w))
                base = model_ref(sl["base_model"], f"{where}.base_model") if sl.get("base_model") is not None else None
                slices.append(Slice(sources, base, self._params(sl.get("parameters"), f"{where}.parameters"), where))
        for sl in slices:
            lengths = {s.layer_range[1] - s.layer_range[0] for s in sl.sources}
            if len(lengths) > 1:
                raise InputError(f"{sl.where}: all sources of a slice must span the same number of layers, got "
                                 f"{[list(s.layer_range) for s in sl.sources]}.")
            layers = lengths.pop()
            for scope, where in [(sl.parameters, f"{sl.where}.parameters"), (self.parameters, "parameters")] + [
                    (s.parameters, f"{s.where}.parameters") for s in sl.sources]:  # fmt: skip
                for name, setting in scope.items():
                    check_setting(name, setting, where, layers)
            self._check_inputs(sl)
        return slices

    def _check_inputs(self, sl: Slice) -> None:
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
        model = self.base_model if value == "base" else model_ref(value, "tokenizer_source")
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

    def plan(self) -> list[PlannedTensor]:
        """Every output tensor with its inputs and method, in mergekit's order (:func:`.plan.plan_tensors`); sets
        ``num_layers``, the output's layer count."""
        planned, self.num_layers = plan_tensors(self)
        return planned

    def tensors(self, planned: list[PlannedTensor] | None = None, *, check_values: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, merged tensor)`` one at a time, in :meth:`plan` order.

        Args:
            planned (`list[PlannedTensor]` or `None`, *optional*, defaults to `None`):
                The plan to run (default: :meth:`plan`).
            check_values (`bool`, *optional*, defaults to `True`):
                Refuse NaN/inf values in the inputs, naming the tensor and the model.
        """
        from ..merge import checked_output

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
        """Hub id per referenced model (local folders need one in `hub_ids`, or a packaged copy's id).

        Args:
            hub_ids (`Mapping[str, str]` or `None`, *optional*, defaults to `None`):
                Hub id per model reference, winning over the id each source knows itself.
        """
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
        """The config as YAML with every model reference replaced by its Hub id.

        Args:
            ids (`Mapping[str, str]`):
                Hub id per model reference (:meth:`card_ids`); references not in it are kept.
        """

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
            output_dir (`str` or `os.PathLike`):
                The folder of the merged model (replaced only once complete).
            hub_ids (`Mapping[str, str]` or `None`, *optional*, defaults to `None`):
                Hub id per local model reference, for the card (``base_model`` lists Hub ids only).
            max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`):
                Largest safetensors shard, like ``save_pretrained``'s.
            check_values (`bool`, *optional*, defaults to `True`):
                Refuse NaN/inf values in the inputs, naming the tensor and the model (merged tensors are always checked).
            push_to_hub (`str` or `None`, *optional*, defaults to `None`):
                Repo id to upload the finished folder to.
            hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
                Hub URL for the push (default: ``HF_ENDPOINT`` or https://huggingface.co).
            overwrite (`bool`, *optional*, defaults to `False`):
                Replace an existing folder hf_ext did not write (:func:`hf_ext.outputs.output_folder`).
        """
        import time

        from ..merge import write_merged

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
            from ...hub.cards import render_model_card

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

    Args:
        path_or_dict (`str` or `os.PathLike` or `Mapping[str, Any]`):
            Path of a mergekit YAML file (its text goes into the card) or the config mapping itself.
        seed (`int`, *optional*, defaults to `0`):
            Seed of DARE/DELLA drop masks (mergekit-yaml's ``--random-seed``).

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
