"""Load merged models, time vectors and interpolation points straight from Hub ids (or folders).

(They lived in ``hf_ext.hub`` before; that package sits below the domains and no longer imports them.)
Downloads go through :func:`hf_ext.hub.pull` (HF_ENDPOINT, tokens, cache and offline mode as usual).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["load_merged_model", "load_time_vector", "load_interpolation"]


def _folder(repo_or_path: str | os.PathLike, revision: str | None, endpoint: str | None) -> Path:
    path = Path(repo_or_path)
    if path.is_dir():
        return path
    from ..hub import pull

    return pull(str(repo_or_path), repo_type="model", revision=revision, endpoint=endpoint)


def load_merged_model(repo_id: str | os.PathLike, *, revision: str | None = None, endpoint: str | None = None, **kwargs: Any):
    """A merged model (any causal LM repo) as ``AutoModelForCausalLM``; its card's merge metadata is
    checked so a plain model is not mistaken for a merge. Extra kwargs go to ``from_pretrained``.

    Args:
        repo_id (`str` or `os.PathLike`):
            Hub id or local folder of the merged model; a README.md whose ``base_model_relation`` is not
            ``merge`` is refused.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Hub revision (branch, tag or commit) to download.
        endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
        **kwargs:
            Passed to ``from_pretrained`` (``dtype``, ``attn_implementation``, ...).
    """
    from huggingface_hub import ModelCard

    from ..models import load_causal_lm

    folder = _folder(repo_id, revision, endpoint)
    readme = folder / "README.md"
    if readme.is_file():
        data = ModelCard.load(readme).data
        if data.get("base_model_relation") != "merge":
            raise InputError(f"{str(repo_id)!r} is not a merged model (its card's base_model_relation is "
                             f"{data.get('base_model_relation')!r}); load it with AutoModelForCausalLM.from_pretrained.")  # fmt: skip
    return load_causal_lm(folder, **kwargs)


def load_time_vector(repo_id: str | os.PathLike, *, revision: str | None = None, endpoint: str | None = None):
    """A :class:`~hf_ext.adapters.time_vector.TimeVector` from a Hub id or folder.

    Args:
        repo_id (`str` or `os.PathLike`):
            Hub id or local folder of a saved time vector.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Hub revision (branch, tag or commit) to download.
        endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
    """
    from ..adapters.time_vector import TimeVector

    return TimeVector.from_pretrained(_folder(repo_id, revision, endpoint))


def load_interpolation(a: str | os.PathLike, b: str | os.PathLike, alpha: float, *, base: Any = None,
                       revision: str | None = None, endpoint: str | None = None, output_dir: str | os.PathLike | None = None,
                       hub_ids: tuple[str, str] | None = None):
    """The interpolation point α·a + (1 − α)·b of two Hub repos, as a model.

    `a` and `b` are either two time vectors (result: θ_base + α·τ_a + (1 − α)·τ_b, the base taken from
    `base` or the vectors' config) or two models (result: α·θ_a + (1 − α)·θ_b, which is the same point).
    With ``output_dir`` the result is streamed into that folder (returned) instead of loaded; its card
    names `a` and `b` (or ``hub_ids`` when they are local folders).

    Args:
        a (`str` or `os.PathLike`):
            Hub id or folder of the first time vector or model (weight `alpha`).
        b (`str` or `os.PathLike`):
            Hub id or folder of the second, of the same kind as `a` (weight ``1 − alpha``).
        alpha (`float`):
            Interpolation factor in [0, 1]: 1 gives `a`, 0 gives `b`.
        base (`Any`, *optional*, defaults to `None`):
            Base model the time vectors are added to (default: the ``base_model`` of their config); unused for
            two models.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Hub revision of both repos.
        endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
        output_dir (`str` or `os.PathLike` or `None`, *optional*, defaults to `None`):
            Write the result to this folder and return its path instead of a loaded model.
        hub_ids (`tuple[str, str]` or `None`, *optional*, defaults to `None`):
            Hub ids the card names for two local model folders (with `output_dir`).
    """
    from ..adapters.time_vector import CONFIG_NAME, TimeVector, interpolate

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1] for an interpolation (got {alpha}); use TimeVector arithmetic to extrapolate.")
    fa, fb = _folder(a, revision, endpoint), _folder(b, revision, endpoint)
    is_tv = [(f / CONFIG_NAME).is_file() for f in (fa, fb)]
    if all(is_tv):
        point = interpolate(TimeVector.from_pretrained(fa), TimeVector.from_pretrained(fb), alpha)
        if output_dir is not None:
            base = base or point.config.base_model
            if base is None:
                raise InputError("The time vectors do not name their base; pass base=....")
            return point.apply_to(base, output_dir=output_dir)
        return point.merged_model(base)
    if any(is_tv):
        raise InputError(f"Interpolate two time vectors or two models, not one of each ({str(a)!r}, {str(b)!r}).")
    from .merge import average_models, merge_models

    if output_dir is not None:
        ids = list(hub_ids) if hub_ids is not None else [None if Path(x).is_dir() else str(x) for x in (a, b)]
        return merge_models([fa, fb], "linear", output_dir=output_dir, weights=[alpha, 1 - alpha], hub_ids=ids)
    return average_models([fa, fb], weights=[alpha, 1 - alpha])
