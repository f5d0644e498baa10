"""Merge drivers: stream aligned tensors of several models through a merge method.

- :func:`merge_models` writes the merged model to a folder tensor by tensor (safetensors shards,
  config and tokenizer copied from the first input, a card whose ``base_model`` lists the
  inputs with ``base_model_relation: merge``), optionally pushing it to the Hub.
- :func:`average_models` returns an in-memory model: the uniform (or weighted) average of the
  inputs' weights, i.e. a model soup. This is the baseline other methods (Branch-Train-Stitch)
  compare against.
- :func:`average_checkpoints` is Llama 3's averaging of checkpoints / runs of one stage.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..models import load_causal_lm
from ..outputs import output_folder
from .methods import LinearMerge, MergeMethod, get_merge_method
from ..weights import CONFIG_FILES, SafetensorsWriter, WeightSource, check_compatible, check_finite, parse_size

__all__ = ["merge_models", "average_models", "average_checkpoints", "merged_tensors", "as_sources", "write_merged"]


def as_sources(models: Sequence[Any], hub_ids: Sequence[str | None] | None = None) -> list[WeightSource]:
    """Wrap folders / Hub ids / models / state dicts as :class:`WeightSource` objects.

    Args:
        models (`Sequence[Any]`):
            Folders, Hub ids, ``nn.Module`` models, state dicts or :class:`WeightSource` objects (kept as they are).
        hub_ids (`Sequence[str | None]` or `None`, *optional*, defaults to `None`):
            One Hub id per model for the card (None entries, or no list: the id each was loaded from, if any);
            ignored for models that are already :class:`WeightSource` objects.
    """
    if hub_ids is not None and len(hub_ids) != len(models):
        raise InputError(f"hub_ids has {len(hub_ids)} entries for {len(models)} models; give one Hub id per model.")
    ids = list(hub_ids) if hub_ids is not None else [None] * len(models)
    return [m if isinstance(m, WeightSource) else WeightSource(m, hub_id=i) for m, i in zip(models, ids)]


def _weights(weights: Sequence[float] | None, n: int) -> torch.Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n)
    if len(weights) != n:
        raise InputError(f"weights has {len(weights)} entries for {n} models; give one weight per model.")
    w = torch.tensor([float(x) for x in weights])
    if not torch.isfinite(w).all():
        raise InputError(f"weights must be finite numbers, got {list(weights)}.")
    return w


def merged_tensors(
    sources: Sequence[WeightSource],
    method: MergeMethod,
    weights: torch.Tensor,
    base: WeightSource | None = None,
    *,
    dtype: torch.dtype | None = None,
    check_values: bool = True,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, merged tensor)`` in the first model's order, one tensor in memory at a time.

    Floating-point tensors go through `method` in fp32 and come back in their own dtype (or
    `dtype`); integer and boolean buffers are copied from the base (or the first model).

    Args:
        sources (`Sequence[WeightSource]`):
            The models to merge, with the same tensor names and shapes.
        method (`MergeMethod`):
            The merge method applied to each floating-point tensor.
        weights (`torch.Tensor`):
            One weight per source, passed to `method`.
        base (`WeightSource` or `None`, *optional*, defaults to `None`):
            The shared base model, required when `method` works on task vectors (``method.needs_base``).
        dtype (`torch.dtype` or `None`, *optional*, defaults to `None`):
            Dtype of the merged floating-point tensors (default: each tensor's own).
        check_values (`bool`, *optional*, defaults to `True`):
            Refuse NaN/inf values in the inputs, naming the tensor and the model.
    """
    if not sources:
        raise InputError("Nothing to merge: pass at least one model.")
    if method.needs_base and base is None:
        raise InputError(f"The {method.name!r} merge needs a base model (the model the inputs were finetuned from); pass base=....")
    check_compatible(list(sources) + ([base] if base is not None else []))
    for key in sources[0].keys():
        tensors = [s.get(key) for s in sources]
        base_t = base.get(key) if base is not None else None
        if check_values:
            for i, s in enumerate(sources):
                check_finite(tensors[i], key, s.name)
            if base_t is not None:
                check_finite(base_t, key, base.name)
        if not tensors[0].is_floating_point():
            yield key, (base_t if base_t is not None else tensors[0])
            continue
        out_dtype = dtype or tensors[0].dtype
        tensors, base_t = [t.float() for t in tensors], None if base_t is None else base_t.float()
        merged = method.merge(tensors, weights, base_t, key=key)  # the method may free the inputs early
        del tensors, base_t  # the inputs go before the next tensor's are read
        yield key, checked_output(merged.to(out_dtype), key, method)
        del merged


def checked_output(tensor: torch.Tensor, key: str, method: MergeMethod) -> torch.Tensor:
    """`tensor` if every value is finite; else InputError naming the tensor (nothing NaN/inf is ever written).

    Args:
        tensor (`torch.Tensor`):
            A merged tensor.
        key (`str`):
            Its name, for the error message.
        method (`MergeMethod`):
            The method that produced it, for the error message.
    """
    try:
        check_finite(tensor, key, "the merge")
    except InputError:
        raise InputError(
            f"The {method.name!r} merge produced NaN/inf in tensor {key!r} (inputs are finite): the weights or "
            "settings blow up (e.g. an output dtype too narrow for the values, or weights that cancel). "
            "Nothing was kept; change the weights/settings or the output dtype."
        ) from None
    return tensor


def output_dtype(dtype: torch.dtype | str | None, field: str = "dtype") -> torch.dtype | None:
    """A floating-point torch dtype from its name (None: each tensor's own); integer dtypes are refused.

    Args:
        dtype (`torch.dtype` or `str` or `None`):
            A floating-point dtype or its name (``"bfloat16"``, ``"torch.float16"``, ...); None is returned as is.
        field (`str`, *optional*, defaults to `"dtype"`):
            Name of the setting, for error messages.
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        from ..models import check_dtype

        dtype = getattr(torch, check_dtype(dtype.removeprefix("torch."), field))
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"{field} must be a floating-point dtype (float32, bfloat16, float16), got {dtype!r}: "
                         "merged weights cast to an integer type are zeros.")
    return dtype


def _card_ids(sources: Sequence[WeightSource], base: WeightSource | None) -> list[str]:
    ids = []
    for src in ([base] if base is not None else []) + list(sources):
        if src.hub_id is None:
            raise InputError(
                f"Input {src.name!r} has no Hub id for the merged model's card (base_model lists the merged models "
                "by Hub id, never by local path). Pass hub_ids=[...] (and base_hub_id=...), or recipe fields "
                "`input_hub_ids` / `base_hub_id`."
            )
        ids.append(src.hub_id)
    return list(dict.fromkeys(ids))


def _copy_side_files(src: WeightSource, output_dir: Path) -> None:
    if src.folder is not None:
        for name in CONFIG_FILES:
            if (src.folder / name).is_file():
                shutil.copyfile(src.folder / name, output_dir / name)
    elif src.config is not None:
        (output_dir / "config.json").write_text(json.dumps(src.config, indent=2, default=str) + "\n")


def write_merge_card(output_dir: Path, card_ids: list[str], method: MergeMethod, weights: torch.Tensor,
                     sources: Sequence[WeightSource], base: WeightSource | None, extra: dict[str, Any] | None = None,
                     title: str | None = None) -> None:
    """README.md with ``base_model`` = the inputs' Hub ids, ``base_model_relation: merge``.

    Args:
        output_dir (`Path`):
            The folder the card is saved in.
        card_ids (`list[str]`):
            Hub ids of the base (first, if any) and the merged models, the card's ``base_model``.
        method (`MergeMethod`):
            The merge method; its settings (:meth:`MergeMethod.params`) go into the card's table.
        weights (`torch.Tensor`):
            One weight per source, listed next to each model.
        sources (`Sequence[WeightSource]`):
            The merged models, listed by Hub id (or name).
        base (`WeightSource` or `None`):
            The base model the task vectors were taken against, if any.
        extra (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Further facts listed under the method's settings (e.g. ``{"seconds": 12.3}``).
        title (`str` or `None`, *optional*, defaults to `None`):
            The card's heading (default: "<method> merge of <n> models").
    """
    from ..hub.cards import render_model_card

    params = method.params()
    rows = [{"model": s.hub_id or s.name, "weight": round(float(w), 6)} for s, w in zip(sources, weights)]
    card = render_model_card(
        "merge_model.md.j2",
        {"base_model": card_ids, "base_model_relation": "merge", "tags": ["hf-ext", "merge", method.name]},
        title=title or f"{method.name} merge of {len(sources)} models",
        method=params, rows=rows, base=(base.hub_id or base.name) if base is not None else None,
        extra=extra or {}, base_model=card_ids,
    )
    card.save(str(output_dir / "README.md"))


def merge_models(
    models: Sequence[Any],
    method: str | MergeMethod = "linear",
    *,
    output_dir: str | os.PathLike,
    weights: Sequence[float] | None = None,
    base: Any = None,
    hub_ids: Sequence[str] | None = None,
    base_hub_id: str | None = None,
    dtype: torch.dtype | str | None = None,
    max_shard_size: int | str = "5GB",
    check_values: bool = True,
    push_to_hub: str | None = None,
    hub_endpoint: str | None = None,
    card_title: str | None = None,
    overwrite: bool = False,
    **method_params: Any,
) -> Path:
    """Merge models into ``output_dir``, streaming one tensor at a time (peak memory ≈ a few tensors).

    Args:
        models (`Sequence[Any]`):
            Folders, Hub ids, models or :class:`WeightSource` objects of one architecture.
        method (`str` or `MergeMethod`, *optional*, defaults to `"linear"`):
            ``"linear"`` (soup), ``"task_arithmetic"``, ``"ties"``, ``"dare"`` or a :class:`MergeMethod` object;
            ``method_params`` set a named method's fields.
        output_dir (`str` or `os.PathLike`):
            Where the merged safetensors, config, tokenizer and card go.
        weights (`Sequence[float]` or `None`, *optional*, defaults to `None`):
            One weight per model (default uniform 1/n).
        base (`Any`, *optional*, defaults to `None`):
            The shared base model, needed by task arithmetic, TIES and DARE.
        hub_ids (`Sequence[str]` or `None`, *optional*, defaults to `None`):
            Hub ids the card names for local inputs.
        base_hub_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id the card names for a local base.
        dtype (`torch.dtype` or `str` or `None`, *optional*, defaults to `None`):
            Output dtype (default: each tensor's own).
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`):
            Shard size like ``save_pretrained``'s.
        check_values (`bool`, *optional*, defaults to `True`):
            Refuse NaN/inf weights (one extra pass over each tensor).
        push_to_hub (`str` or `None`, *optional*, defaults to `None`):
            Repo id to upload the finished folder to (one commit).
        hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL for the push (default: ``HF_ENDPOINT`` or https://huggingface.co).
        card_title (`str` or `None`, *optional*, defaults to `None`):
            The card's heading (default: "<method> merge of <n> models").
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing ``output_dir`` that hf_ext did not write (see
            :func:`hf_ext.outputs.output_folder`: the folder is written to a temporary sibling and moved into
            place, so a failure or a kill leaves the previous one intact).

    Returns:
        The output folder; it loads with ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        InputError: shapes or tensor names differ (the first mismatched tensor is named), a shard
            is missing, a weight is NaN/inf, a Hub id for the card is missing.
    """
    method = get_merge_method(method, **method_params)
    sources = as_sources(models, hub_ids)
    base_src = None if base is None else (base if isinstance(base, WeightSource) else WeightSource(base, hub_id=base_hub_id))
    w = _weights(weights, len(sources))
    card_ids = _card_ids(sources, base_src)  # fail before any work
    dtype = output_dtype(dtype)
    check_compatible(sources + ([base_src] if base_src else []))
    method.check_weights(w)
    ref = sources[0]
    layout = [(k, ref.shape(k), (dtype if dtype is not None and ref.dtype(k).is_floating_point else ref.dtype(k)))
              for k in ref.keys()]  # fmt: skip
    start = time.perf_counter()
    tensors = merged_tensors(sources, method, w, base_src, dtype=dtype, check_values=check_values)

    def card(output_dir: Path) -> None:
        write_merge_card(output_dir, card_ids, method, w, sources, base_src, title=card_title,
                         extra={"seconds": round(time.perf_counter() - start, 3)})

    inputs = {f"models[{i}]": s.folder for i, s in enumerate(sources) if s.folder is not None}
    if base_src is not None and base_src.folder is not None:
        inputs["base"] = base_src.folder
    return write_merged(output_dir, layout, tensors, side_files=base_src or ref, card=card, overwrite=overwrite, inputs=inputs,
                        max_shard_size=max_shard_size, push_to_hub=push_to_hub, hub_endpoint=hub_endpoint,
                        commit_message=f"hf_ext: {method.name} merge")  # fmt: skip


def write_merged(output_dir: str | os.PathLike, layout: Sequence[tuple[str, Sequence[int], torch.dtype]],
                 tensors: Iterator[tuple[str, torch.Tensor]], *, side_files: WeightSource,
                 card: Any, max_shard_size: int | str = "5GB", config_update: dict[str, Any] | None = None,
                 push_to_hub: str | None = None, hub_endpoint: str | None = None, commit_message: str = "hf_ext: merge",
                 overwrite: bool = False, inputs: dict[str, Any] | None = None) -> Path:
    """Write a merged model: the tensors (in `layout` order), config/tokenizer from `side_files` (the config
    updated with `config_update`), the card (``card(output_dir)``), then push. The one writer of every merge.

    Everything goes to a temporary sibling that replaces `output_dir` only when complete
    (:func:`hf_ext.outputs.output_folder`; `overwrite` and `inputs` as there), so a bad input or a
    kill leaves the previous folder intact and the finished folder holds exactly the new files.

    Args:
        output_dir (`str` or `os.PathLike`):
            The folder of the merged model.
        layout (`Sequence[tuple[str, Sequence[int], torch.dtype]]`):
            ``(name, shape, dtype)`` of every tensor, in the order `tensors` yields them (sets the shards).
        tensors (`Iterator[tuple[str, torch.Tensor]]`):
            ``(name, tensor)`` pairs, written one at a time (e.g. :func:`merged_tensors`).
        side_files (`WeightSource`):
            The model whose config and tokenizer files are copied (or whose config is written, for an in-memory model).
        card (`Callable[[Path], None]`):
            Called with the (temporary) folder to write the model card.
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`):
            Shard size like ``save_pretrained``'s.
        config_update (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Keys set in the copied ``config.json`` (e.g. a new ``num_hidden_layers``).
        push_to_hub (`str` or `None`, *optional*, defaults to `None`):
            Repo id to upload the finished folder to (one commit).
        hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL for the push (default: ``HF_ENDPOINT`` or https://huggingface.co).
        commit_message (`str`, *optional*, defaults to `"hf_ext: merge"`):
            Message of the Hub commit.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing ``output_dir`` that hf_ext did not write.
        inputs (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Name -> local input folder of the merge; `output_dir` may not be, or contain, any of them.
    """
    output_dir = Path(output_dir)
    with output_folder(output_dir, overwrite=overwrite, inputs=inputs, writer="merge", overwrite_field="overwrite") as tmp:
        with SafetensorsWriter(tmp, layout, max_shard_bytes=parse_size(max_shard_size)) as writer:
            for key, tensor in tensors:
                writer.write(key, tensor)
                del tensor  # free it before the next one is merged (peak memory: one tensor's inputs + output)
        _copy_side_files(side_files, tmp)
        if config_update and (tmp / "config.json").is_file():
            config = json.loads((tmp / "config.json").read_text())
            config.update(config_update)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        card(tmp)
    if push_to_hub:
        from ..hub import push_folder

        push_folder(output_dir, push_to_hub, repo_type="model", endpoint=hub_endpoint, commit_message=commit_message)
    return output_dir


def average_models(models: Sequence[Any], weights: Sequence[float] | None = None, *,
                   method: str | MergeMethod | None = None, base: Any = None, **method_params: Any):
    """The (weighted) average of models' weights, as a new in-memory model: a model soup.

    Args:
        models (`Sequence[Any]`):
            ``nn.Module`` models (or folders / Hub ids, loaded with ``AutoModelForCausalLM``) of one architecture,
            e.g. experts branched from one seed.
        weights (`Sequence[float]` or `None`, *optional*, defaults to `None`):
            One weight per model; default uniform. Weights are normalised to sum to 1.
        method (`str` or `MergeMethod` or `None`, *optional*, defaults to `None`):
            Another merge method (default :class:`LinearMerge`); ``base`` for methods that need one.
        base (`Any`, *optional*, defaults to `None`):
            The shared base (a model, or a Hub id / folder loaded with ``AutoModelForCausalLM``), for methods that
            take task vectors against it.

    Returns:
        A copy of the first model (same class and config) holding the merged weights, in eval mode.

    Example:
        >>> from hf_ext.testing import tiny_llama
        >>> a, b = tiny_llama(seed=0), tiny_llama(seed=1)
        >>> soup = average_models([a, b])
        >>> bool(torch.allclose(soup.lm_head.weight, (a.lm_head.weight + b.lm_head.weight) / 2))
        True
    """
    if not models:
        raise InputError("average_models needs at least one model.")
    modules = [load_causal_lm(m) for m in models]
    merge_method = get_merge_method(method or LinearMerge(), **method_params)
    base_src = None if base is None else WeightSource(base if not isinstance(base, (str, os.PathLike)) else load_causal_lm(base, role="base"))
    sources = [WeightSource(m) for m in modules]
    merge_method.check_weights(_weights(weights, len(sources)))
    state = dict(merged_tensors(sources, merge_method, _weights(weights, len(sources)), base_src))
    merged = copy.deepcopy(modules[0])
    missing, unexpected = merged.load_state_dict(state, strict=False)
    tied = set(merged.state_dict()) - set(sources[0].keys())  # tied weights follow their source
    if unexpected or set(missing) - tied:
        raise InputError(f"Merged weights do not fit {type(merged).__name__}: missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]}.")
    return merged.eval()


def average_checkpoints(
    checkpoints: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    output_dir: str | os.PathLike,
    last_n: int | None = None,
    weights: Sequence[float] | None = None,
    hub_ids: Sequence[str] | None = None,
    base_hub_id: str | None = None,
    **kwargs: Any,
) -> Path:
    """Llama-3-style model averaging: the uniform average of checkpoints (or of runs) of one stage.

    Args:
        checkpoints (`str` or `os.PathLike` or `Sequence[str | os.PathLike]`):
            Folders to average, or a Trainer ``output_dir`` whose ``checkpoint-N`` folders are averaged (the last
            `last_n` by step).
        output_dir (`str` or `os.PathLike`):
            Where the averaged model and its card go.
        last_n (`int` or `None`, *optional*, defaults to `None`):
            Average only the last `last_n` checkpoints (by step, or the last entries of a list); None: all of them.
        weights (`Sequence[float]` or `None`, *optional*, defaults to `None`):
            One weight per averaged checkpoint (default uniform).
        hub_ids (`Sequence[str]` or `None`, *optional*, defaults to `None`):
            Hub ids of the averaged models for the card. Checkpoints of a local run have none: then the card names
            ``base_hub_id`` (the model the run started from).
        base_hub_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id of the model the run started from; the card names it for every checkpoint when `hub_ids` is None
            (one of the two is required).
        **kwargs:
            Passed to :func:`merge_models` (``dtype``, ``max_shard_size``, ``push_to_hub``, ``overwrite``, ...).
    """
    if isinstance(checkpoints, (str, os.PathLike)):
        run = Path(checkpoints)
        found = sorted((p for p in run.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                       key=lambda p: int(p.name.split("-")[-1]))  # fmt: skip
        if not found:
            raise InputError(f"{str(run)!r} has no checkpoint-N folders; pass the folders to average as a list.")
        paths = found[-last_n:] if last_n else found
    else:
        paths = list(checkpoints)[-last_n:] if last_n else list(checkpoints)
    if hub_ids is None:
        if base_hub_id is None:
            raise InputError("average_checkpoints needs hub_ids=[...] for the averaged models, or base_hub_id= (the model "
                             "the run started from) so the card names where the weights came from.")
        hub_ids = [base_hub_id] * len(paths)
    return merge_models(paths, LinearMerge(), output_dir=output_dir, weights=weights, hub_ids=hub_ids,
                        card_title=f"Average of {len(paths)} checkpoints ({', '.join(Path(p).name for p in paths)})", **kwargs)
