"""Model and dataset cards rendered from the Jinja templates in ``hub_cards/``.

Cards go through huggingface_hub's ``ModelCard`` / ``DatasetCard`` so their YAML front matter
is what the Hub expects (``base_model`` as Hub ids, ``base_model_relation``, ``datasets``,
``library_name``, ``tags``, ``license``, ``model-index`` eval results), and every card is
checked locally before it is written: the YAML parses, card data round-trips, and no local
path hides where a Hub id belongs.

>>> card = render_dataset_card("dataset_card.md.j2", {"license": "apache-2.0"}, title="My data")
>>> card.data.license
'apache-2.0'
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, redact_values

# `library_name` of a model card: the library that loads the artefact. hf_ext's own artefacts (SAEs, time
# vectors, stitch layers, quality scorers) say "hf-ext" (the distribution's name, one spelling); full models
# say "transformers", PEFT adapters "peft".
LIBRARY_NAME = "hf-ext"
LIBRARY_NAMES = (LIBRARY_NAME, "transformers", "peft")
# The Hub's values of `base_model_relation` (what the model tree shows); anything else is refused.
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")

_LIBRARIES = ("hf-ext", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "evaluate", "huggingface_hub")


def template_path(name: str) -> Path:
    """Path of a card template shipped with hf_ext (``hub_cards/`` in the repository).

    Args:
        name (`str`):
            File name of the template, e.g. ``"model_card.md.j2"``; an unknown name raises `InputError` listing
            the available templates.

    Returns:
        `Path`: the template file inside the installed ``hf_ext.hub`` package.
    """
    root = Path(str(resources.files("hf_ext.hub"))) / "templates"
    path = root / name
    if not path.is_file():
        available = sorted(p.name for p in root.glob("*.j2"))
        raise InputError(f"Card template {name!r} not found; available templates: {available}.")
    return path


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of the HF stack (and `extra` packages), for reproducibility sections.

    Args:
        extra (`Iterable[str]`, *optional*, defaults to `()`):
            Further distribution names to report; packages that are not installed are left out.

    Returns:
        `dict[str, str]`: ``{"python": ..., package: version}`` for every installed package.
    """
    versions = {"python": platform.python_version()}
    for name in (*_LIBRARIES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hub_ids(ids: str | Sequence[str] | None, *, field: str = "base_model") -> list[str]:
    """Validate that `ids` are Hub repo ids, mapping packaged local copies back to their ids.

    Cards must say which Hub models or datasets something came from; a local path there is
    useless to anyone else. Raises `InputError` naming the offending value.

    Args:
        ids (`str`, `Sequence[str]` or `None`):
            One id or several; a path that exists locally is mapped to the Hub id it was packaged from. `None`
            gives an empty list.
        field (`str`, *optional*, defaults to `"base_model"`):
            Card field the ids are for; named in the error messages.

    Returns:
        `list[str]`: the validated Hub ids, in order.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if ids is None:
        return []
    values = [ids] if isinstance(ids, str) else list(ids)
    out = []
    for value in values:
        candidate = value
        if Path(value).expanduser().exists():
            from ..models import hub_id_for

            candidate = hub_id_for(value)
            if candidate is None:
                raise InputError(
                    f"Card field {field!r} got the local path {value!r}; cards carry Hub ids. "
                    "Pass the Hub id the weights came from (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)."
                )
        try:
            validate_repo_id(candidate)
        except HFValidationError as exc:
            raise InputError(f"Card field {field!r}: {candidate!r} is not a valid Hub repo id ({exc}).") from None
        out.append(candidate)
    return out


def card_hub_id(value: str | None, field: str = "base_model") -> str | None:
    """`value` as a Hub id for a card's ``base_model`` / ``datasets`` (:func:`hub_ids`: a packaged
    local copy maps back to its id), or `None` when it is unset or a local path only this machine has.

    Args:
        value (`str` or `None`):
            A Hub id or a local path from a job's config.
        field (`str`, *optional*, defaults to `"base_model"`):
            The card field it is for.

    >>> card_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"), card_hub_id(None)
    ('HuggingFaceTB/SmolLM2-135M-Instruct', None)
    """
    if not value:
        return None
    try:
        return hub_ids(value, field=field)[0]
    except InputError:
        return None


def _check(card, kind: str) -> None:
    """Local metadata checks: the front matter parses and matches the card data."""
    text = str(card)
    if not text.startswith("---\n"):
        raise InputError(f"Rendered {kind} card has no YAML front matter; the template must start with '---'.")
    front = text.split("---\n", 2)[1]
    parsed = yaml.safe_load(front)
    if not isinstance(parsed, dict):
        raise InputError(f"Rendered {kind} card's front matter is not a YAML mapping.")
    if parsed != card.data.to_dict():
        raise InputError(f"Rendered {kind} card's front matter does not round-trip through huggingface_hub's card data.")


def check_card_fields(data: dict[str, Any]) -> None:
    """Refuse a `base_model_relation` the Hub does not know and a `library_name` spelled another way.

    Args:
        data (`dict[str, Any]`):
            Model card data (front-matter fields).

    Raises:
        InputError: naming the field, its value and the valid ones.
    """
    relation = data.get("base_model_relation")
    if relation is not None and relation not in BASE_MODEL_RELATIONS:
        raise InputError(f"Card field 'base_model_relation' is {relation!r}; the Hub knows {list(BASE_MODEL_RELATIONS)} "
                         "(a layer-stacking 'frankenmerge' is a 'merge').")
    library = data.get("library_name")
    if library not in LIBRARY_NAMES:
        raise InputError(f"Card field 'library_name' is {library!r}; use one of {list(LIBRARY_NAMES)} "
                         f"({LIBRARY_NAME!r} for artefacts only hf_ext loads).")


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value of a dataset card for `n` rows.

    Args:
        n (`int`):
            Number of rows of the dataset.

    >>> size_category(300), size_category(12_000), size_category(5_000_000)
    ('n<1K', '10K<n<100K', '1M<n<10M')
    """
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table for a card body: one header row, a separator, one line per row (floats
    with 4 decimals).

    Args:
        header (`Sequence[Any]`):
            The column names.
        rows (`Iterable[Sequence[Any]]`):
            The rows, each with one value per column.

    >>> print(markdown_table(["model", "loss"], [["base", 2.5], ["tuned", 1.23456]]))
    | model | loss |
    |---|---|
    | base | 2.5000 |
    | tuned | 1.2346 |
    """
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    line = lambda values: "| " + " | ".join(cell(v) for v in values) + " |"  # noqa: E731
    rows = [list(r) for r in rows]
    if any(len(r) != len(header) for r in rows):
        raise ValueError(f"every row needs {len(header)} cells (one per column of {list(header)})")
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def render_dataset_card(template: str, card_data: dict[str, Any], **context: Any):
    """Render a `huggingface_hub.DatasetCard` from a template in ``hub_cards/``.

    Args:
        template (`str`):
            Template file name, e.g. ``"dataset_selection.md.j2"``.
        card_data (`dict[str, Any]`):
            Front-matter fields (``license``, ``source_datasets``, ``tags``, ...); ``source_datasets`` must be Hub
            ids. Credentials in the values are redacted.
        **context:
            Variables for the template body.

    Returns:
        `huggingface_hub.DatasetCard`: the rendered card, checked to round-trip its front matter.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    data, context = redact_values(dict(card_data)), redact_values(context)  # cards are published: no credentials
    if "source_datasets" in data:
        data["source_datasets"] = hub_ids(data["source_datasets"], field="source_datasets")
    card = DatasetCard.from_template(
        DatasetCardData(**data), template_path=str(template_path(template)), versions=library_versions(), **context
    )
    _check(card, "dataset")
    return card


def render_model_card(
    template: str,
    card_data: dict[str, Any],
    *,
    eval_results: Sequence[dict[str, Any]] = (),
    model_name: str | None = None,
    **context: Any,
):
    """Render a `huggingface_hub.ModelCard`; `eval_results` become the card's model-index.

    Each eval result is a dict of `huggingface_hub.EvalResult` fields, e.g.
    ``{"task_type": "text-classification", "dataset_type": "Anthropic/hh-rlhf",
    "dataset_name": "hh-rlhf harmless test", "metric_type": "accuracy", "metric_value": 0.61}``.

    Args:
        template (`str`):
            Template file name, e.g. ``"model_card.md.j2"``.
        card_data (`dict[str, Any]`):
            Front-matter fields (``base_model``, ``base_model_relation``, ``datasets``, ``license``, ``tags``,
            ...). ``base_model`` and ``datasets`` must be Hub ids; ``library_name`` defaults to
            ``"transformers"``. Credentials in the values are redacted.
        eval_results (`Sequence[dict[str, Any]]`, *optional*, defaults to `()`):
            `huggingface_hub.EvalResult` fields of each result, written to the card's model-index.
        model_name (`str`, *optional*):
            Name of the model in the model-index; required when `eval_results` are given (huggingface_hub refuses them without it).
        **context:
            Variables for the template body.

    Returns:
        `huggingface_hub.ModelCard`: the rendered card, its metadata checked.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    data, context = redact_values(dict(card_data)), redact_values(context)  # cards are published: no credentials
    data["base_model"] = hub_ids(data.get("base_model"))
    if not data["base_model"]:
        data.pop("base_model")
        data.pop("base_model_relation", None)
    elif len(data["base_model"]) == 1 and data.get("base_model_relation") != "merge":
        data["base_model"] = data["base_model"][0]
    if "datasets" in data:
        data["datasets"] = hub_ids(data["datasets"], field="datasets")
    data.setdefault("library_name", "transformers")
    check_card_fields(data)
    results = [EvalResult(**r) for r in eval_results]
    try:
        card_data_obj = ModelCardData(eval_results=results or None, model_name=model_name, **data)
    except ValueError as exc:
        raise InputError(f"Invalid model card metadata: {exc}") from None
    card = ModelCard.from_template(card_data_obj, template_path=str(template_path(template)), versions=library_versions(), **context)
    _check(card, "model")
    return card
