"""Time vectors to and from PEFT LoRA adapters.

Import is exact: PEFT's own ``get_delta_weight`` gives scale · B · A per wrapped module.
Export is a truncated SVD per ``nn.Linear`` delta, with the reconstruction error reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ...models import load_causal_lm

__all__ = ["lora_deltas", "export_lora"]


def _hub_id(name: str | None) -> str | None:
    if not name:
        return None
    if Path(name).exists():
        from ...models import hub_id_for

        return hub_id_for(name)
    return name


def lora_deltas(adapter: Any, base: Any = None, *, adapter_name: str = "default") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str | None]:
    """(τ per weight name, the base weights, the base's Hub id) of a LoRA adapter.

    τ of each LoRA-wrapped module is PEFT's ``get_delta_weight`` (scale · B · A); a module in ``modules_to_save``
    contributes its trained copy minus the base weight.

    Args:
        adapter (`Any`):
            A ``PeftModel`` or the folder / Hub id of a saved LoRA adapter.
        base (`Any`, *optional*, defaults to `None`):
            The base model a saved adapter is loaded onto (a model, folder or Hub id; copied, never changed);
            default its ``base_model_name_or_path``. Unused for a ``PeftModel``.
        adapter_name (`str`, *optional*, defaults to `"default"`):
            Which of the model's adapters to read.
    """
    from peft import PeftConfig, PeftModel
    from peft.tuners.lora import LoraLayer

    if isinstance(adapter, PeftModel):
        peft_model = adapter
        if adapter_name not in peft_model.peft_config:
            raise InputError(f"The PeftModel has no adapter {adapter_name!r}; it has {sorted(peft_model.peft_config)}.")
        base_id = peft_model.peft_config[adapter_name].base_model_name_or_path
    else:
        cfg = PeftConfig.from_pretrained(str(adapter))
        if getattr(cfg, "peft_type", None) is None or str(cfg.peft_type) not in ("LORA", "PeftType.LORA"):
            raise InputError(f"{str(adapter)!r} is a {cfg.peft_type} adapter; TimeVector.from_lora reads LoRA adapters only.")
        base_id = cfg.base_model_name_or_path
        if base is None and base_id is None:
            raise InputError(f"{str(adapter)!r} does not name its base model (base_model_name_or_path is null); pass base=....")
        model = load_causal_lm(base if base is not None else base_id, role="base model", copy=True)  # PEFT injects in place
        peft_model = PeftModel.from_pretrained(model, str(adapter), adapter_name=adapter_name)
    inner = peft_model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in inner.named_modules():
            if isinstance(module, LoraLayer) and (adapter_name in module.lora_A or adapter_name in getattr(module, "lora_embedding_A", {})):
                deltas[f"{name}.weight"] = module.get_delta_weight(adapter_name).detach().float().clone()
    if not deltas:
        raise InputError(f"Adapter {adapter_name!r} wraps no module: nothing to turn into a time vector.")
    base_state: dict[str, torch.Tensor] = {}
    saved: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in inner.state_dict().items():
        if "lora_" in key:
            continue
        if f".modules_to_save.{adapter_name}." in key:  # a fully trained copy of a module
            saved[key.replace(f".modules_to_save.{adapter_name}.", ".")] = value
            continue
        if ".modules_to_save." in key:
            continue
        ident = (value.untyped_storage().data_ptr(), value.storage_offset())
        if value.numel() and ident in seen:
            continue
        seen.add(ident)
        base_state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = value.detach()
    for key, value in saved.items():
        if value.is_floating_point():
            deltas[key] = (value.detach().double() - base_state[key].double()).float()
    return deltas, base_state, _hub_id(base_id)


def _card_base_model(readme: Path, base_id: str | None) -> None:
    """PEFT's card names ``config._name_or_path`` (a local folder here) as base_model: use the Hub id or nothing."""
    if not readme.is_file():
        return
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)
    if base_id:
        card.data.base_model = base_id
    else:
        card.data.base_model = None
        card.data.tags = [t for t in (card.data.tags or []) if not t.startswith("base_model:")] or None
    card.save(readme)


def export_lora(tv: Any, output_dir: str | os.PathLike, rank: int, *, base_model: Any = None,
                target_modules: Sequence[str] | None = None) -> dict[str, Any]:
    """Write `tv` as a PEFT LoRA adapter of rank `rank` (truncated SVD); see ``TimeVector.to_lora``.

    Args:
        tv (`TimeVector`):
            The time vector to export.
        output_dir (`str` or `os.PathLike`):
            Folder for the adapter, its card and ``svd_report.json`` (replaced only once complete).
        rank (`int`):
            LoRA rank r (>= 1), with ``lora_alpha = r``.
        base_model (`Any`, *optional*, defaults to `None`):
            The base model (model, folder or Hub id) whose ``nn.Linear`` layers are targeted; default the
            vector's ``config.base_model``. Copied, never changed.
        target_modules (`Sequence[str]` or `None`, *optional*, defaults to `None`):
            Export only these modules (full names or last name parts such as ``"q_proj"``); None: every
            ``nn.Linear`` whose weight is in the vector.

    Returns:
        `dict[str, Any]`: the SVD report (also written to ``svd_report.json``).
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise InputError(f"rank must be >= 1, got {rank}.")
    source = base_model if base_model is not None else tv.config.base_model
    if source is None:
        raise InputError("to_lora needs the base model to know which weights are Linear layers: pass base_model=....")
    model = load_causal_lm(source, copy=True)  # PEFT injects layers in place: never touch the caller's model
    keys = set(tv.keys())
    linear = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and f"{name}.weight" in keys
              and (target_modules is None or name in target_modules or name.split(".")[-1] in target_modules)]  # fmt: skip
    if not linear:
        raise InputError("No nn.Linear weight of the base model is in the time vector (or in target_modules): nothing to export.")
    total_sq = err_sq = lin_sq = lin_err_sq = 0.0
    per_tensor, unrepresented, factors = {}, [], {}
    linear_set = set(linear)
    for key in tv.keys():
        if not tv.is_float(key):
            continue
        delta = tv.get(key)
        n2 = float(delta.square().sum())
        total_sq += n2
        name = key[: -len(".weight")] if key.endswith(".weight") else None
        if name not in linear_set:
            err_sq += n2
            if n2 > 0:
                unrepresented.append(key)
            continue
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, len(s))
        b = torch.zeros(delta.shape[0], rank, dtype=torch.float64)
        a = torch.zeros(rank, delta.shape[1], dtype=torch.float64)
        b[:, :r], a[:r] = u[:, :r] * s[:r], vh[:r]
        e2 = float(s[r:].square().sum())
        err_sq += e2
        lin_sq += n2
        lin_err_sq += e2
        per_tensor[key] = (e2 / n2) ** 0.5 if n2 > 0 else 0.0
        factors[name] = (a, b)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=linear, bias="none", lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    inner = peft_model.get_base_model()
    with torch.no_grad():
        for name, (a, b) in factors.items():
            module = inner.get_submodule(name)
            module.lora_A["default"].weight.copy_(a.to(module.lora_A["default"].weight.dtype))
            module.lora_B["default"].weight.copy_(b.to(module.lora_B["default"].weight.dtype))
    base_id = tv.config.base_model if tv.config.base_model and not Path(tv.config.base_model).exists() else None
    peft_model.peft_config["default"].base_model_name_or_path = base_id
    # PEFT fills a null base_model_name_or_path (config and card) from the model's name_or_path, a
    # local folder here: published files hold Hub ids or nothing.
    inner.name_or_path = base_id
    from ...outputs import output_folder

    report = {
        "rank": rank,
        "relative_error": (err_sq / total_sq) ** 0.5 if total_sq > 0 else 0.0,
        "relative_error_linear": (lin_err_sq / lin_sq) ** 0.5 if lin_sq > 0 else 0.0,
        "exported_tensors": len(factors),
        "unrepresented": unrepresented,
        "unrepresented_norm_fraction": (sum(float(tv.get(k).square().sum()) for k in unrepresented) / total_sq) ** 0.5 if total_sq > 0 else 0.0,
        "per_tensor": per_tensor,
    }
    with output_folder(output_dir, writer="TimeVector.to_lora", overwrite_field="overwrite") as tmp:  # a kill leaves the previous adapter whole
        peft_model.save_pretrained(tmp, save_embedding_layers=False)  # lm_head is a Linear here, not an embedding
        _card_base_model(tmp / "README.md", base_id)
        (tmp / "svd_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
