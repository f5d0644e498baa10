"""Read a warmup checkpoint's Adam state (m, v, betas, eps) keyed by parameter NAME.

The LESS reference loads ``optimizer.bin`` by a fixed name and by position, and breaks when
the Trainer writes ``optimizer.pt`` or groups parameters differently. Here the file is found
by its content, whatever it is called:

1. a safetensors file written by :class:`SaveAdamStateByNameCallback` (the LESS warmup adds
   it): keys ``"<param name>::exp_avg"`` / ``"::exp_avg_sq"``, betas and eps in its metadata;
2. otherwise a torch optimizer state dict (``optimizer.pt``, ``optimizer.bin``, ...), loaded
   with ``weights_only=True`` (no arbitrary unpickling). Its state is keyed by position, so
   positions are mapped back to names the way ``transformers.Trainer.create_optimizer``
   ordered them (decayed parameters, then the others, each in ``named_parameters()`` order);
   every shape is checked against the named parameter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import InputError

BY_NAME_FORMAT = "hf_ext.less.adam_by_name/v1"
BY_NAME_FILE = "adam_state_by_name.safetensors"
_SKIP_SUFFIXES = (".json", ".md", ".txt", ".model", ".jinja")


@dataclass
class AdamState:
    """Adam moments per parameter name, and the optimizer's hyper-parameters.

    Args:
        exp_avg (`dict[str, torch.Tensor]`):
            First moment m of each parameter, keyed by parameter name.
        exp_avg_sq (`dict[str, torch.Tensor]`):
            Second moment v of each parameter, keyed by parameter name.
        betas (`tuple[float, float]`, *optional*, defaults to `(0.9, 0.999)`):
            The optimizer's β1 and β2.
        eps (`float`, *optional*, defaults to `1e-8`):
            The optimizer's ε.
        source (`str`, *optional*, defaults to `""`):
            The file the state was read from, for error messages.
    """

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    source: str = ""

    def flat(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """m and v flattened in the order of `names` (the featurizer's gradient order)."""
        missing = [n for n in names if n not in self.exp_avg]
        if missing:
            raise InputError(
                f"The optimizer state in {self.source} has no moments for {len(missing)} LoRA parameter(s), "
                f"e.g. {missing[0]!r}. The checkpoint was trained with different LoRA modules than the model "
                "the featurizer built; use the base model and adapter of that warmup run."
            )
        m = torch.cat([self.exp_avg[n].reshape(-1).float() for n in names])
        v = torch.cat([self.exp_avg_sq[n].reshape(-1).float() for n in names])
        return m, v


def save_adam_state_by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: str | os.PathLike) -> Path:
    """Write ``adam_state_by_name.safetensors`` into `folder` (m, v of every trainable parameter, by name).

    Args:
        model (`torch.nn.Module`):
            The model being trained; its trainable parameters with Adam moments are saved under their names.
        optimizer (`torch.optim.Optimizer`):
            The Adam(W) optimizer (an accelerate `AcceleratedOptimizer` is unwrapped); its betas and eps go into
            the file's metadata.
        folder (`str` or `os.PathLike`):
            Existing folder to write into (a checkpoint folder).
    """
    from safetensors.torch import save_file

    optimizer = getattr(optimizer, "optimizer", optimizer)  # unwrap accelerate's AcceleratedOptimizer
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    tensors, betas, eps = {}, (0.9, 0.999), 1e-8
    for name, p in model.named_parameters():
        state = optimizer.state.get(p)
        if not p.requires_grad or not state or "exp_avg" not in state:
            continue
        tensors[f"{name}::exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
        tensors[f"{name}::exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
        group = group_of[id(p)]
        betas, eps = tuple(group.get("betas", betas)), group.get("eps", eps)
    path = Path(folder) / BY_NAME_FILE
    metadata = {"format": BY_NAME_FORMAT, "betas": json.dumps(list(betas)), "eps": repr(float(eps))}
    save_file(tensors, str(path), metadata=metadata)
    return path


def _read_by_name(path: Path) -> AdamState | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != BY_NAME_FORMAT:
            return None
        m, v = {}, {}
        for key in f.keys():
            name, _, kind = key.rpartition("::")
            (m if kind == "exp_avg" else v)[name] = f.get_tensor(key)
    betas = tuple(json.loads(meta.get("betas", "[0.9, 0.999]")))
    return AdamState(m, v, betas=betas, eps=float(meta.get("eps", 1e-8)), source=str(path))


def _trainer_order(model: torch.nn.Module) -> list[list[str]]:
    """Parameter names per optimizer group, in the order ``Trainer.create_optimizer`` builds them."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))  # does not use `self`
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [[n for n, _ in named if n in decay], [n for n, _ in named if n not in decay]]


def _read_torch_state(path: Path, model: torch.nn.Module) -> AdamState | None:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a tensor-only pickle (training_args.bin, ...) or not a torch file
        return None
    if not isinstance(sd, dict) or "state" not in sd or "param_groups" not in sd:
        return None
    groups = sd["param_groups"]
    if all("param_names" in g for g in groups):  # torch >= 2.5 optimizers built from named_parameters
        names_per_group = [list(g["param_names"]) for g in groups]
    else:
        names_per_group = [g for g in _trainer_order(model) if g] if len(groups) != 2 else _trainer_order(model)
    sizes = [len(g["params"]) for g in groups]
    if [len(g) for g in names_per_group] != sizes:
        raise InputError(
            f"The optimizer state {path} has param groups of sizes {sizes}, but the model's trainable "
            f"parameters group as {[len(g) for g in names_per_group]} the way transformers.Trainer builds them. "
            "It was written for another model or LoRA configuration; featurize with the warmup's base model and adapter."
        )
    params = dict(model.named_parameters())
    m, v = {}, {}
    for group, names in zip(groups, names_per_group):
        for idx, name in zip(group["params"], names):
            state = sd["state"].get(idx, {})
            if "exp_avg" not in state:
                continue
            if state["exp_avg"].shape != params[name].shape:
                raise InputError(
                    f"The optimizer state {path} holds a moment of shape {tuple(state['exp_avg'].shape)} at position "
                    f"{idx}, where the model's parameter {name!r} has shape {tuple(params[name].shape)}."
                )
            m[name], v[name] = state["exp_avg"], state["exp_avg_sq"]
    group = groups[0]
    return AdamState(m, v, betas=tuple(group.get("betas", (0.9, 0.999))), eps=float(group.get("eps", 1e-8)), source=str(path))


def load_adam_state(checkpoint: str | os.PathLike, model: torch.nn.Module) -> AdamState:
    """The Adam state of `checkpoint`, by parameter name of `model` (the PEFT model being featurized).

    Args:
        checkpoint (`str` or `os.PathLike`):
            Warmup checkpoint folder; the optimizer state is found among its files by content.
        model (`torch.nn.Module`):
            The model the state belongs to, used to map a positional torch state dict to parameter names and
            check shapes.

    Raises:
        InputError: the folder holds no optimizer state with Adam moments, naming the
            checkpoint and what is missing.
    """
    folder = Path(checkpoint)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    for path in files:
        if path.suffix == ".safetensors":
            state = _read_by_name(path)
            if state is not None:
                return state
    # Files that mention the optimizer first, then any other torch file.
    candidates = sorted(
        (p for p in files if p.suffix not in _SKIP_SUFFIXES + (".safetensors",)),
        key=lambda p: ("optim" not in p.name.lower(), p.name),
    )
    for path in candidates:
        state = _read_torch_state(path, model)
        if state is not None and state.exp_avg:
            return state
    raise InputError(
        f"Checkpoint {str(folder)!r} has no optimizer state with Adam moments (exp_avg / exp_avg_sq for the LoRA "
        f"parameters); it holds {[p.name for p in files]}. LESS's train-side features need the warmup's Adam state: "
        "save checkpoints with the optimizer (the LESS warmup does; with a plain Trainer keep `save_only_model=False`), "
        "or featurize with kind='sgd' (plain gradients, as for target examples)."
    )
