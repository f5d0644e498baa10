"""What every job shares: the output and Hub options, and :func:`job_output`.

A job is a config dataclass plus a run function. Its config inherits :class:`JobOptions` (or, when
it is a ``TrainingArguments``, already has transformers' fields and adds ``overwrite_output_dir``
and ``hub_endpoint``), and its run function writes through one context:

>>> from dataclasses import dataclass, field
>>> @dataclass
... class DemoConfig(JobOptions):
...     output_dir: str = field(default="outputs/demo", metadata={"help": "Where results go."})
>>> def run_demo(config):  # doctest: +SKIP
...     with job_output(config, repo_type="dataset", writer="demo") as out:
...         (out.dir / "data.txt").write_text("...")
...         out.metrics = {"rows": 3}
...         out.card = make_card(config)
...     return out.metrics

:func:`job_output` does, in this order: the safe output folder (a temporary sibling, see
:mod:`hf_ext.outputs`), ``metrics.json``, the card (``README.md``), the move into place, and last
the push of the finished folder (``push_to_hub: true`` + ``hub_model_id``), checked first by
:func:`hf_ext.hub.push_folder`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from .errors import InputError, RecipeError, redact_values
from .outputs import check_output_dir, local_inputs, output_folder

__all__ = ["HubOptions", "JobOptions", "JobOutput", "job_output", "check_job_output", "refuse_old_hub_keys", "HUB_FIELDS"]

# Names of the output/Hub settings: cards and settings tables leave them out.
HUB_FIELDS = frozenset({"output_dir", "overwrite_output_dir", "push_to_hub", "hub_model_id", "hub_endpoint", "hub_private_repo",
                        "hub_token", "hub_strategy", "hub_always_push", "hub_revision"})

# Keys of earlier hf_ext recipes -> what to write instead.
_OLD_KEYS = {
    "push_to": "push_to_hub: true and hub_model_id: <namespace/name>",
    "hub_private": "hub_private_repo",
}


def refuse_old_hub_keys(values: dict[str, Any], argv: list[str] | None = None) -> None:
    """Refuse the Hub keys hf_ext used before it followed transformers, naming the new ones.

    Args:
        values (`dict[str, Any]`):
            The recipe's values; ``push_to`` and ``hub_private`` are refused, and so is a repo id given as
            ``push_to_hub``.
        argv (`list[str]`, *optional*):
            Command-line flags, checked the same way (``--push_to ...``, ``--push_to_hub ns/name``).

    Raises:
        RecipeError: naming the transformers spelling to write instead.
    """
    from .config import given_keys

    for old in sorted(given_keys(values, argv)):
        new = _OLD_KEYS.get(old)
        if new:
            raise RecipeError(f"{old!r} was renamed: write {new} instead (the transformers spelling).")
    given = [values.get("push_to_hub")]
    argv = list(argv or [])
    for i, arg in enumerate(argv):
        if arg.startswith("--push_to_hub="):
            given.append(arg.split("=", 1)[1])
        elif arg == "--push_to_hub" and i + 1 < len(argv):
            given.append(argv[i + 1])
    for value in given:
        if isinstance(value, str) and "/" in value:
            raise RecipeError(f"push_to_hub is now true/false, as in transformers; put the repo id in hub_model_id: "
                              f"push_to_hub: true and hub_model_id: {value}.")


def check_job_output(config: Any, *, field: str = "output_dir") -> None:
    """The checks every job runs when its config is built, before any expensive work.

    The output folder is refused when it is the current directory, a file, holds one of the run's
    local inputs, or holds files hf_ext did not write (unless ``overwrite_output_dir``); a push needs
    ``hub_model_id``.

    Args:
        config (`Any`):
            The job config; ``overwrite_output_dir``, ``push_to_hub`` and ``hub_model_id`` count as unset when it
            has none.
        field (`str`, *optional*, defaults to `"output_dir"`):
            The config field holding the output folder.

    Raises:
        InputError: the folder is refused, or ``push_to_hub`` is set without ``hub_model_id`` (or is a string).
    """
    check_output_dir(getattr(config, field), overwrite=bool(getattr(config, "overwrite_output_dir", False)),
                     inputs=local_inputs(config), field=field)
    if isinstance(getattr(config, "push_to_hub", False), str):
        refuse_old_hub_keys({"push_to_hub": config.push_to_hub})
        raise InputError(f"push_to_hub must be true or false, got {config.push_to_hub!r}; the repo id goes in hub_model_id.")
    if getattr(config, "push_to_hub", False) and not getattr(config, "hub_model_id", None):
        raise InputError("push_to_hub is true but hub_model_id is not set: name the Hub repo, e.g. hub_model_id: your-name/my-run.")


@dataclass
class HubOptions:
    """Hub settings of a job, spelled as in ``transformers.TrainingArguments``.

    Args:
        push_to_hub (`bool`, *optional*, defaults to `False`):
            Upload the finished output folder to the Hub in one commit (needs hub_model_id).
        hub_model_id (`str` or `None`, *optional*, defaults to `None`):
            Hub repo id (namespace/name) to push to; a dataset repo for data jobs.
        hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub endpoint URL (default: HF_ENDPOINT or huggingface.co).
        hub_private_repo (`bool`, *optional*, defaults to `False`):
            Create the Hub repo as private.
    """

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the finished output folder to the Hub in one commit (needs hub_model_id)."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repo id (namespace/name) to push to; a dataset repo for data jobs."})
    hub_endpoint: Optional[str] = field(default=None, metadata={"help": "Hub endpoint URL (default: HF_ENDPOINT or huggingface.co)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    check_recipe: ClassVar = staticmethod(refuse_old_hub_keys)


@dataclass
class JobOptions(HubOptions):
    """Output and Hub settings of a job (the job declares its own ``output_dir``).

    Args:
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Replace an existing output folder that hf_ext did not write. Folders an earlier hf_ext run wrote (they
            hold .hf_ext_output.json) and empty ones are replaced without it; the current directory, a file or a
            folder holding an input are refused always.
    """

    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output folder that hf_ext did not write. "
                                                                         "Folders an earlier hf_ext run wrote (they hold .hf_ext_output.json) and empty ones "
                                                                         "are replaced without it; the current directory, a file or a folder holding an "
                                                                         "input are refused always."})

    def __post_init__(self) -> None:
        check_job_output(self)


@dataclass
class JobOutput:
    """What a job hands to :func:`job_output`: files go in ``dir``; set ``metrics`` and ``card``.

    Args:
        dir (`Path`):
            The folder the job writes into: a temporary sibling of ``output_dir`` inside the ``with`` block, the
            final ``output_dir`` after it.
        metrics (`dict[str, Any]`, *optional*):
            The run's metrics, written to ``metrics.json`` (with credentials redacted) when set.
        card (`Any`, *optional*):
            A huggingface_hub ``ModelCard`` / ``DatasetCard``, or a callable taking the metrics and returning
            one; saved as ``README.md`` when set.
        commit_message (`str`, *optional*):
            Hub commit summary; wins over the one given to :func:`job_output`.
        hub_commit (`Any`, *optional*):
            Set by :func:`job_output` after a push: the ``CommitInfo`` (a ``str`` equal to the commit URL).
        final_dir (`Path`, *optional*):
            Set by :func:`job_output` once the folder is in place: the output folder.
    """

    dir: Path
    metrics: Optional[dict[str, Any]] = None
    card: Any = None  # a huggingface_hub ModelCard / DatasetCard, or a callable(metrics) returning one
    commit_message: Optional[str] = None
    hub_commit: Any = None  # the CommitInfo of the push
    final_dir: Optional[Path] = None


@contextmanager
def job_output(config: Any, *, repo_type: str = "dataset", writer: Optional[str] = None,
               commit_message: Optional[str] = None, push_subdir: Optional[str] = None) -> Iterator[JobOutput]:
    """The output of one job run: safe folder, ``metrics.json``, card, then the push.

    Args:
        config (`Any`):
            The job config (``output_dir``, ``overwrite_output_dir``, ``push_to_hub``, ``hub_model_id``,
            ``hub_endpoint``, ``hub_private_repo``; missing ones count as unset).
        repo_type (`str`, *optional*, defaults to `"dataset"`):
            ``"dataset"`` or ``"model"``.
        writer (`str` or `None`, *optional*, defaults to `None`):
            Name of the job, for the marker file.
        commit_message (`str` or `None`, *optional*, defaults to `None`):
            Hub commit summary (``out.commit_message`` wins).
        push_subdir (`str` or `None`, *optional*, defaults to `None`):
            Push only this subfolder of the output (e.g. the stitch layers with their own card); default: the
            whole folder.

    The body writes files into ``out.dir`` (a temporary sibling of ``output_dir``) and sets
    ``out.metrics`` and ``out.card``. On success ``metrics.json`` and ``README.md`` are written, the
    folder moves into place, and then, with ``push_to_hub``, it is pushed; ``out.hub_commit`` (also put
    in the returned metrics dict as ``hub_commit``) is the commit URL. On an error nothing moves.
    """
    start = time.perf_counter()
    check_job_output(config)
    with output_folder(config.output_dir, overwrite=bool(getattr(config, "overwrite_output_dir", False)),
                       inputs=local_inputs(config), writer=writer or type(config).__name__) as tmp:
        out = JobOutput(dir=tmp, commit_message=commit_message)
        yield out
        if out.metrics is not None:
            from . import __version__

            out.metrics.setdefault("elapsed_seconds", round(time.perf_counter() - start, 2))
            out.metrics.setdefault("hf_ext_version", __version__)
            published = redact_values(json.loads(json.dumps(out.metrics, default=_json_default)))  # no credentials
            (tmp / "metrics.json").write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")
        card = out.card(out.metrics) if callable(out.card) else out.card
        if card is not None:
            card.save(str(tmp / "README.md"))
    out.final_dir = out.dir = Path(config.output_dir)
    if getattr(config, "push_to_hub", False):
        from .hub import push_folder

        out.hub_commit = push_folder(
            Path(config.output_dir, push_subdir or ""), config.hub_model_id, repo_type=repo_type, endpoint=getattr(config, "hub_endpoint", None),
            private=bool(getattr(config, "hub_private_repo", False)),
            commit_message=out.commit_message or f"hf_ext: {writer or type(config).__name__} results",
        )  # a CommitInfo: a str (the commit URL) with .oid
        if out.metrics is not None:
            out.metrics["hub_commit"] = out.hub_commit


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
