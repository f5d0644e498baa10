"""`TimeVector` (Nylund et al. 2023, arXiv 2312.13401): τ_t = θ_t − θ_pre, as a PEFT-style adapter.

A time vector is stored lazily as a linear combination ``Σ c_i · source_i`` of weight sources
(models, saved vectors, LoRA deltas). Arithmetic (``+``, ``−``, scalar ``*``), :func:`interpolate`
and :func:`analogy` only combine coefficients; tensors are computed one name at a time, in float64,
when the vector is applied or saved. So ``θ_base + (θ_ft − θ_base)`` gives θ_ft bit-exactly, and
applying or interpolating folders of safetensors shards streams tensor by tensor (a few tensors in
memory, not two or three models).

Integer buffers are not differenced: they are copied from the finetuned model. Every vector
records its base model's fingerprint; applying it to a different model is an error unless
``force=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ...fingerprint import VERSION as FINGERPRINT_VERSION
from ...hub.mixin import PushToHubMixin
from ...weights import CONFIG_FILES, SafetensorsWriter, WeightSource, check_compatible, check_finite, fingerprint, parse_size
from .config import WEIGHTS_PREFIX, TimeVectorConfig

__all__ = ["TimeVector", "interpolate", "analogy"]

Source = Any  # a folder, Hub id, nn.Module, state dict or WeightSource


def _source(x: Source, hub_id: str | None = None, snapshot: bool = False) -> WeightSource:
    if snapshot and isinstance(x, torch.nn.Module):
        # A snapshot, so applying τ to this very model in place later cannot change τ itself.
        # (For large models pass folders: they are streamed, never copied.)
        src = WeightSource(x, hub_id=hub_id)
        return WeightSource({k: src.get(k).clone() for k in src.keys()}, hub_id=hub_id, name=src.name)
    return x if isinstance(x, WeightSource) else WeightSource(x, hub_id=hub_id)


def _label(tv: TimeVector) -> str:
    return tv.config.formula or (f"τ({tv.config.period})" if tv.config.period else "τ")


class TimeVector(PushToHubMixin):
    """τ = θ_ft − θ_base over floating-point weights, with PEFT-style save / load / push.

    Build one with :meth:`from_models`, :meth:`from_pretrained` (folder or Hub id) or
    :meth:`from_lora`; combine with ``+``, ``-``, ``*`` (scalar), :func:`interpolate`,
    :func:`analogy`; use with :meth:`apply_to` / :meth:`merged_model`; export with :meth:`to_lora`.

    Args:
        terms (`Sequence[tuple[float, WeightSource]]`):
            The lazy linear combination ``Σ c_i · source_i`` that is τ: (coefficient, weight source) pairs, at least one.
        config (`TimeVectorConfig`):
            The vector's metadata (base model and its fingerprint, period, how it was made).
        copy_from (`WeightSource` or `None`, *optional*, defaults to `None`):
            The source that non-floating-point tensors (integer buffers) are copied from, e.g. the finetuned
            model; None: the first term holding the tensor.

    Example:
        >>> from hf_ext.testing import tiny_llama
        >>> base, ft = tiny_llama(seed=0), tiny_llama(seed=1)
        >>> tau = TimeVector.from_models(base, ft, period="2016")
        >>> model = tau.apply_to(tiny_llama(seed=0))
        >>> torch.equal(model.lm_head.weight, ft.lm_head.weight)
        True
    """

    def __init__(self, terms: Sequence[tuple[float, WeightSource]], config: TimeVectorConfig, copy_from: WeightSource | None = None):
        if not terms:
            raise InputError("A TimeVector needs at least one term.")
        self.terms = [(float(c), s) for c, s in terms]
        self.config = config
        self.copy_from = copy_from
        keys: dict[str, None] = {}
        for _, src in self.terms:
            keys.update(dict.fromkeys(src.keys()))
        self._keys = list(keys)

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def from_models(cls, base: Source, finetuned: Source, *, period: str | None = None, base_hub_id: str | None = None,
                    finetuned_hub_id: str | None = None, check_values: bool = True) -> TimeVector:
        """τ = θ_finetuned − θ_base. Models may be in memory, folders or Hub ids (read lazily).

        Args:
            base (`Source`):
                θ_base: a model, folder, Hub id, state dict or :class:`WeightSource` (an in-memory model is snapshotted,
                so changing it later does not change τ).
            finetuned (`Source`):
                θ_ft, of the same architecture; its integer buffers are the ones τ carries.
            period (`str` or `None`, *optional*, defaults to `None`):
                The period the vector moves the base to, e.g. ``"2016"`` (names τ in formulas and cards).
            base_hub_id (`str` or `None`, *optional*, defaults to `None`):
                Hub id recorded as ``config.base_model`` for a local or in-memory base.
            finetuned_hub_id (`str` or `None`, *optional*, defaults to `None`):
                Hub id recorded as ``config.finetuned_model`` for a local or in-memory finetuned model.
            check_values (`bool`, *optional*, defaults to `True`):
                Refuse NaN/inf weights in either model (one pass over each tensor).

        Raises:
            InputError: the two models differ in tensor names or shapes (the first mismatch is
                named), or hold NaN/inf weights (with ``check_values``).
        """
        b, f = _source(base, base_hub_id, snapshot=True), _source(finetuned, finetuned_hub_id, snapshot=True)
        check_compatible([b, f])
        if check_values:
            for src in (b, f):
                for key in src.keys():
                    check_finite(src.get(key), key, src.name)
        config = TimeVectorConfig(base_model=b.hub_id or (str(b.folder) if b.folder else None), base_fingerprint=fingerprint(b),
                                  period=period, relation="finetune", finetuned_model=f.hub_id,
                                  formula=f"τ({period})" if period else None)  # fmt: skip
        return cls([(1.0, f), (-1.0, b)], config, copy_from=f)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, revision: str | None = None, hub_endpoint: str | None = None) -> TimeVector:
        """Load a vector saved with :meth:`save_pretrained` from a folder or a Hub id (tensors stay on disk until used).

        Args:
            path (`str` or `os.PathLike`):
                A folder holding ``time_vector_config.json`` and the safetensors, or a Hub id (downloaded).
            revision (`str` or `None`, *optional*, defaults to `None`):
                Hub revision (branch, tag or commit) of a Hub id.
            hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
                Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
        """
        folder = Path(path)
        if not folder.is_dir():
            from ...hub import pull

            folder = pull(str(path), repo_type="model", revision=revision, endpoint=hub_endpoint)
        config = TimeVectorConfig.load(folder)
        src = WeightSource(folder, name=str(path), prefix=WEIGHTS_PREFIX)
        return cls([(1.0, src)], config, copy_from=src)

    @classmethod
    def from_lora(cls, adapter: Any, base: Source | None = None, *, adapter_name: str = "default", period: str | None = None,
                  base_hub_id: str | None = None) -> TimeVector:
        """The exact update of a PEFT LoRA adapter: τ[W] = scale · B · A for every LoRA-wrapped module
        (PEFT's own ``get_delta_weight``, so rsLoRA scaling and fan-in/fan-out are honoured).

        Combine several LoRA vectors with arithmetic (``w1 * tv1 + w2 * tv2``) to get
        Σ w_i · scale_i · B_i · A_i. PEFT's ``add_weighted_adapter(combination_type="linear")``
        instead mixes the A and B matrices separately, which adds cross terms B_i · A_j; its
        ``"cat"`` is exact (see ``tests/test_time_vector.py``).

        Args:
            adapter (`Any`):
                A ``PeftModel`` or the folder / Hub id of a saved LoRA adapter.
            base (`Source` or `None`, *optional*, defaults to `None`):
                The base model (needed for a saved adapter; default its ``base_model_name_or_path``).
            adapter_name (`str`, *optional*, defaults to `"default"`):
                Which adapter of the model to read.
            period (`str` or `None`, *optional*, defaults to `None`):
                The period the vector moves the base to, e.g. ``"2016"``.
            base_hub_id (`str` or `None`, *optional*, defaults to `None`):
                Hub id recorded as ``config.base_model`` (default: the adapter's base, when it is a Hub id).
        """
        from .lora import lora_deltas

        deltas, base_state, base_id = lora_deltas(adapter, base, adapter_name=adapter_name)
        base_src = WeightSource(base_state, hub_id=base_hub_id or base_id)
        config = TimeVectorConfig(base_model=base_hub_id or base_id, base_fingerprint=fingerprint(base_src), period=period,
                                  relation="lora", formula=f"τ({period})" if period else None)  # fmt: skip
        return cls([(1.0, WeightSource(deltas, name="lora deltas"))], config)

    # ---- tensors -------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return list(self._keys)

    def _first_with(self, key: str) -> WeightSource:
        for src in ([self.copy_from] if self.copy_from is not None else []) + [s for _, s in self.terms]:
            if key in src:
                return src
        raise KeyError(key)

    def is_float(self, key: str) -> bool:
        """Whether the tensor `key` is floating-point (differenced) rather than an integer buffer (copied).

        Args:
            key (`str`):
                A tensor name of the vector.
        """
        return self._first_with(key).dtype(key).is_floating_point

    def get(self, key: str) -> torch.Tensor:
        """τ[key] in float64 (integer buffers: the copied value).

        Args:
            key (`str`):
                A tensor name of the vector.
        """
        if not self.is_float(key):
            return self._first_with(key).get(key)
        total = None
        for coef, src in self.terms:
            if key in src and coef != 0.0:
                part = src.get(key).double() * coef if coef != 1.0 else src.get(key).double()
                total = part if total is None else total + part
        return total if total is not None else torch.zeros(self._first_with(key).shape(key), dtype=torch.float64)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for key in self._keys:
            yield key, self.get(key)

    def norm(self) -> float:
        """‖τ‖₂ over all floating-point tensors."""
        return float(sum(float(self.get(k).square().sum()) for k in self._keys if self.is_float(k))) ** 0.5

    # ---- arithmetic ----------------------------------------------------------------------------

    def _check_same_base(self, other: TimeVector, force: bool = False) -> None:
        a, b = self.config.base_fingerprint, other.config.base_fingerprint
        if force:
            return
        if not a or not b:
            raise InputError(
                f"Cannot check that these time vectors share a base: {'this one' if not a else 'the other'} has no base "
                "fingerprint (base_fingerprint is null in its time_vector_config.json). Re-create it with "
                "TimeVector.from_models, or pass force=True to combine anyway."
            )
        if a != b:
            raise InputError(
                f"Cannot combine time vectors of different base models ({self.config.base_model!r}, fingerprint {a[:12]} vs "
                f"{other.config.base_model!r}, {b[:12]}). Time vectors only add up over one base; pass force=True to combine anyway."
            )

    def _derived(self, terms: list[tuple[float, WeightSource]], formula: str, relation: str = "arithmetic",
                 period: str | None = None) -> TimeVector:
        # One term per source: coefficients of a shared source add up (so τ_t − τ_t cancels exactly
        # and a shared base is read once).
        merged: dict[int, list[Any]] = {}
        for c, s in terms:
            merged.setdefault(id(s), [0.0, s])[0] += c
        terms = [(c, s) for c, s in merged.values()]
        cfg = TimeVectorConfig(base_model=self.config.base_model, base_fingerprint=self.config.base_fingerprint,
                               period=period, relation=relation, formula=formula)  # fmt: skip
        return TimeVector(terms, cfg, copy_from=self.copy_from)

    def add(self, other: TimeVector, *, force: bool = False) -> TimeVector:
        """τ + τ_other (what ``+`` does, with `force` available).

        Args:
            other (`TimeVector`):
                The vector to add; it must have the same base.
            force (`bool`, *optional*, defaults to `False`):
                Add it even when the base fingerprints differ.
        """
        self._check_same_base(other, force)
        return self._derived(self.terms + other.terms, f"{_label(self)} + {_label(other)}")

    def scale(self, factor: float) -> TimeVector:
        """factor · τ (what scalar ``*`` does).

        Args:
            factor (`float`):
                The scalar multiplying τ.
        """
        return self._derived([(factor * c, s) for c, s in self.terms], f"{factor:g}·({_label(self)})", self.config.relation, self.config.period)

    def __add__(self, other: TimeVector) -> TimeVector:
        if not isinstance(other, TimeVector):
            return NotImplemented
        return self.add(other)

    def __sub__(self, other: TimeVector) -> TimeVector:
        if not isinstance(other, TimeVector):
            return NotImplemented
        self._check_same_base(other)
        return self._derived(self.terms + [(-c, s) for c, s in other.terms], f"{_label(self)} − {_label(other)}")

    def __neg__(self) -> TimeVector:
        return self.scale(-1.0)

    def __mul__(self, factor: float) -> TimeVector:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            return NotImplemented
        return self.scale(float(factor))

    __rmul__ = __mul__

    # ---- using it --------------------------------------------------------------------------------

    def check_base(self, base: WeightSource, force: bool = False) -> None:
        """Raise unless `base` has the fingerprint of the model this vector was taken against
        (:func:`hf_ext.fingerprint.fingerprint_tensors`; a null or older-scheme fingerprint is refused too).

        Args:
            base (`WeightSource`):
                The model τ is about to be applied to.
            force (`bool`, *optional*, defaults to `False`):
                Skip the check.
        """
        if force:
            return
        saved = self.config.base_fingerprint
        if not saved:
            raise InputError(
                "This time vector has no base fingerprint (base_fingerprint is null in its time_vector_config.json), so "
                f"nothing shows that {base.name!r} is its base. Re-create it with TimeVector.from_models, or pass "
                "force=True if you are sure."
            )
        if not saved.startswith(FINGERPRINT_VERSION + "-"):
            raise InputError(
                f"This time vector's base fingerprint {saved[:12]!r} was made by an older hf_ext that sampled only the "
                "first values of each tensor; it cannot vouch for the base. Re-create the vector with "
                "TimeVector.from_models, or pass force=True if you are sure."
            )
        found = fingerprint(base)
        if found != saved:
            raise InputError(
                f"This time vector was taken against {self.config.base_model!r} (fingerprint {self.config.base_fingerprint[:12]}), "
                f"but {base.name!r} has fingerprint {found[:12]}: it is a different model, and θ + τ would be meaningless. "
                "Apply it to its own base, or pass force=True if you really mean to."
            )

    def apply_to(self, model: Source, scale: float = 1.0, *, force: bool = False, output_dir: str | os.PathLike | None = None,
                 max_shard_size: int | str = "5GB", hub_id: str | None = None) -> Any:
        """θ = θ_base + scale · τ.

        With an ``nn.Module``, its weights are updated in place and it is returned. With a folder or
        Hub id and ``output_dir``, the result is streamed tensor by tensor into ``output_dir`` (config
        and tokenizer copied, a card written) and the folder is returned.

        Args:
            model (`Source`):
                θ_base: an ``nn.Module`` (changed in place), or a folder / Hub id / state dict streamed into `output_dir`.
            scale (`float`, *optional*, defaults to `1.0`):
                The factor of τ.
            force (`bool`, *optional*, defaults to `False`):
                Apply τ even when `model` does not have the base fingerprint.
            output_dir (`str` or `os.PathLike` or `None`, *optional*, defaults to `None`):
                Where the result of a model that is not an ``nn.Module`` is written (required then).
            max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`):
                Largest safetensors shard in `output_dir`, like ``save_pretrained``'s.
            hub_id (`str` or `None`, *optional*, defaults to `None`):
                The Hub id of a local `model` (its name in messages).

        Raises:
            InputError: the model is not this vector's base (fingerprint; ``force=True`` skips the
                check) or its tensors do not match τ's names and shapes.
        """
        if isinstance(model, torch.nn.Module):
            base = WeightSource(model)
            self.check_base(base, force)
            params = dict(model.state_dict(keep_vars=True))
            self._check_shapes({k: tuple(v.shape) for k, v in params.items()}, base.name)
            with torch.no_grad():
                for key in self._keys:
                    target = params[key]
                    value = self.get(key)
                    if not value.is_floating_point():
                        target.copy_(value)
                    else:
                        target.copy_((target.double() + scale * value).to(target.dtype))
            return model
        if output_dir is None:
            raise InputError("apply_to(folder or Hub id) streams into a new folder: pass output_dir=... (or pass a loaded model).")
        base = _source(model, hub_id)
        self.check_base(base, force)
        self._check_shapes({k: base.shape(k) for k in base.keys()}, base.name)
        return self._stream(base, scale, Path(output_dir), max_shard_size)

    def _check_shapes(self, shapes: dict[str, tuple[int, ...]], name: str) -> None:
        for key in self._keys:
            if key not in shapes:
                raise InputError(f"Tensor {key!r} of the time vector is missing from {name!r}: another architecture.")
            if tuple(self._first_with(key).shape(key)) != tuple(shapes[key]):
                raise InputError(f"Tensor {key!r} has shape {list(self._first_with(key).shape(key))} in the time vector but "
                                 f"{list(shapes[key])} in {name!r}: another architecture or size.")  # fmt: skip

    def _stream(self, base: WeightSource, scale: float, output_dir: Path, max_shard_size: int | str) -> Path:
        from ...outputs import output_folder

        layout = [(k, base.shape(k), base.dtype(k)) for k in base.keys()]
        inputs = {"model": base.folder} if base.folder is not None else {}
        with output_folder(output_dir, inputs=inputs, writer="TimeVector.apply_to", overwrite_field="overwrite") as tmp:
            with SafetensorsWriter(tmp, layout, max_shard_bytes=parse_size(max_shard_size)) as writer:
                for key in base.keys():
                    value = base.get(key)
                    if key in self._keys:
                        tau = self.get(key)
                        value = tau.to(value.dtype) if not value.is_floating_point() else (value.double() + scale * tau).to(value.dtype)
                    check_finite(value, key, "the result")
                    writer.write(key, value)
            if base.folder is not None:
                import shutil

                for name in CONFIG_FILES:
                    if (base.folder / name).is_file():
                        shutil.copyfile(base.folder / name, tmp / name)
            self._write_model_card(tmp, scale)
        return output_dir

    def _write_model_card(self, output_dir: Path, scale: float) -> None:
        from ...hub.cards import render_model_card

        base = self.config.base_model if self.config.base_model and not Path(self.config.base_model).exists() else None
        card = render_model_card(
            "time_vector_model.md.j2",
            {"base_model": [base] if base else None, "base_model_relation": "finetune" if base else None,
             "tags": ["hf-ext", "time-vector"] + ([f"period-{self.config.period}"] if self.config.period else [])},
            title=f"{self.config.base_model or 'base'} + {scale:g}·{_label(self)}", config=self.config, scale=scale,
            base_model=base,
        )  # fmt: skip
        card.save(str(output_dir / "README.md"))

    def merged_model(self, base: Source | None = None, scale: float = 1.0, *, force: bool = False):
        """Load the base model (default: ``config.base_model``) and return θ_base + scale · τ.

        Args:
            base (`Source` or `None`, *optional*, defaults to `None`):
                The base model (a model, folder or Hub id; a model is changed in place); default ``config.base_model``.
            scale (`float`, *optional*, defaults to `1.0`):
                The factor of τ.
            force (`bool`, *optional*, defaults to `False`):
                Apply τ even when the base does not have the recorded fingerprint.
        """
        from ...models import load_causal_lm

        if base is None:
            if not self.config.base_model:
                raise InputError("This time vector does not name its base model; pass base=... (a model, folder or Hub id).")
            base = self.config.base_model
        return self.apply_to(load_causal_lm(base, role="base model"), scale, force=force)

    # ---- saving --------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        max_shard_size: int | str = "5GB") -> Path:
        """Write ``time_vector_config.json``, ``time_vector.safetensors`` (or shards + index) and a card.

        Args:
            save_directory (`str` or `os.PathLike`):
                The folder to write (replaced only once complete).
            dtype (`torch.dtype` or `None`, *optional*, defaults to `None`):
                Storage dtype of floating-point tensors (default: the sources' dtype, e.g. float32;
                ``torch.float64`` keeps θ_base + τ bit-exact after a round trip).
            max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`):
                Largest safetensors shard, like ``save_pretrained``'s.
        """
        folder = Path(save_directory)
        layout = []
        for key in self._keys:
            src_dtype = self._first_with(key).dtype(key)
            layout.append((key, self._first_with(key).shape(key), (dtype or src_dtype) if src_dtype.is_floating_point else src_dtype))
        from ...outputs import output_folder

        # A temporary sibling replaces `folder` when complete: a kill leaves the previous vector whole,
        # and no shard or index of an earlier (sharded) save survives.
        with output_folder(folder, writer="TimeVector", field="save_directory", overwrite_field="overwrite") as tmp:
            with SafetensorsWriter(tmp, layout, max_shard_bytes=parse_size(max_shard_size), prefix=WEIGHTS_PREFIX) as writer:
                for key, _, out_dtype in layout:
                    writer.write(key, self.get(key).to(out_dtype))
            self.config.save(tmp)
            self.model_card().save(str(tmp / "README.md"))
        return folder

    def model_card(self):
        """The Hub model card: base_model = the base model's Hub id (relation adapter), the formula and periods."""
        from ...hub.cards import render_model_card

        base = self.config.base_model if self.config.base_model and not Path(self.config.base_model).exists() else None
        return render_model_card(
            "time_vector.md.j2",
            {"base_model": [base] if base else None, "base_model_relation": "adapter" if base else None, "library_name": "hf-ext",
             "tags": ["hf-ext", "time-vector", f"relation-{self.config.relation}"] + ([f"period-{self.config.period}"] if self.config.period else [])},
            title=f"Time vector {_label(self)}", config=self.config, base_model=base,
        )  # fmt: skip

    def _hub_commit_message(self) -> str:
        return f"hf_ext: time vector {_label(self)}"

    def to_lora(self, output_dir: str | os.PathLike, rank: int, *, base_model: Any = None, target_modules: Sequence[str] | None = None) -> dict[str, Any]:
        """Export as a PEFT LoRA adapter by truncated SVD (plain ``PeftModel.from_pretrained`` loads it).

        Every ``nn.Linear`` weight delta Δ (or those named in `target_modules`) becomes B = U_r·S_r,
        A = V_rᵀ with ``lora_alpha = r`` (scale 1). Deltas LoRA cannot hold (embeddings, norms,
        biases) are left out and counted in the error. Returns (and writes to ``svd_report.json``)
        ``relative_error`` = ‖τ − τ_LoRA‖ / ‖τ‖ over all float tensors, ``relative_error_linear`` over
        the exported ones, per-tensor errors and the unrepresented tensors.

        Args:
            output_dir (`str` or `os.PathLike`):
                Folder for the adapter, its card and ``svd_report.json``.
            rank (`int`):
                LoRA rank r (>= 1).
            base_model (`Any`, *optional*, defaults to `None`):
                The base model whose ``nn.Linear`` layers are targeted (default ``config.base_model``).
            target_modules (`Sequence[str]` or `None`, *optional*, defaults to `None`):
                Export only these modules (full names or last name parts such as ``"q_proj"``); None: every
                ``nn.Linear`` weight in the vector.
        """
        from .lora import export_lora

        return export_lora(self, output_dir, rank, base_model=base_model, target_modules=target_modules)

    def __repr__(self) -> str:
        return f"TimeVector({_label(self)}, base={self.config.base_model!r}, {len(self._keys)} tensors, {len(self.terms)} terms)"


def interpolate(a: TimeVector, b: TimeVector, alpha: float, *, force: bool = False) -> TimeVector:
    """α·τ_a + (1 − α)·τ_b; applied to θ_pre it gives the paper's interpolation θ_pre + α·τ_t1 + (1 − α)·τ_t2
    (α = 1 recovers model a, α = 0 model b).

    Args:
        a (`TimeVector`):
            τ_a, weighted by `alpha`.
        b (`TimeVector`):
            τ_b, weighted by ``1 − alpha``; it must have the same base as `a`.
        alpha (`float`):
            The interpolation factor (values outside [0, 1] extrapolate).
        force (`bool`, *optional*, defaults to `False`):
            Combine the vectors even when their base fingerprints differ.
    """
    a._check_same_base(b, force)
    period = f"{alpha:g}·{a.config.period}+{1 - alpha:g}·{b.config.period}" if a.config.period and b.config.period else None
    return a._derived([(alpha * c, s) for c, s in a.terms] + [((1 - alpha) * c, s) for c, s in b.terms],
                      f"{alpha:g}·{_label(a)} + {1 - alpha:g}·{_label(b)}", "interpolation", period)  # fmt: skip


def analogy(task_t0: TimeVector, lm_t: TimeVector, lm_t0: TimeVector, *, lambda_c: float = 1.0, lambda_b: float = 1.0,
            lambda_a: float = 1.0, force: bool = False) -> TimeVector:
    """Task analogy: λ_C·τ_task(t0) + λ_B·τ_LM(t) − λ_A·τ_LM(t0), to update a task model to period t with
    unlabeled text of t only. With t = t0 and λ_A = λ_B it reduces to λ_C·τ_task(t0).

    Args:
        task_t0 (`TimeVector`):
            τ_task(t0): the task model finetuned on data of period t0.
        lm_t (`TimeVector`):
            τ_LM(t): the language model further trained on unlabeled text of period t (its period is the result's).
        lm_t0 (`TimeVector`):
            τ_LM(t0): the language model further trained on unlabeled text of period t0.
        lambda_c (`float`, *optional*, defaults to `1.0`):
            λ_C, the weight of `task_t0`.
        lambda_b (`float`, *optional*, defaults to `1.0`):
            λ_B, the weight of `lm_t`.
        lambda_a (`float`, *optional*, defaults to `1.0`):
            λ_A, the weight subtracted for `lm_t0`.
        force (`bool`, *optional*, defaults to `False`):
            Combine the vectors even when their base fingerprints differ.
    """
    task_t0._check_same_base(lm_t, force)
    task_t0._check_same_base(lm_t0, force)
    terms = [(lambda_c * c, s) for c, s in task_t0.terms] + [(lambda_b * c, s) for c, s in lm_t.terms] + [(-lambda_a * c, s) for c, s in lm_t0.terms]
    formula = f"{lambda_c:g}·{_label(task_t0)} + {lambda_b:g}·{_label(lm_t)} − {lambda_a:g}·{_label(lm_t0)}"
    return task_t0._derived(terms, formula, "analogy", lm_t.config.period)
