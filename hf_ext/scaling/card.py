"""A scaling fit as a Hub artefact: a folder with the fitted laws (``scaling_fit.json``), the
runs (``runs.jsonl``), PNG plots and a dataset card, which `push_fit` uploads in one commit
and `load_fit` reads back (from a folder or a Hub dataset repo).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .laws import ChinchillaLaw, DownstreamErrorLaw, ScalingLaw
from .runs import Runs

FIT_FILE = "scaling_fit.json"
RUNS_FILE = "runs.jsonl"


def _example(name: str, law: ScalingLaw) -> str:
    if isinstance(law, DownstreamErrorLaw):
        return f'laws["{name}"].predict(loss=[2.5])'
    if isinstance(law, ChinchillaLaw):
        return f'laws["{name}"].predict(N=[1e9], D=[2e10])'
    return f'laws["{name}"].predict(N=[1e9], M=[20])'


def write_fit_folder(
    folder: str | os.PathLike,
    laws: Mapping[str, ScalingLaw],
    runs: Runs,
    *,
    title: str = "Scaling-law fit",
    summary: str = "",
    predictions: Sequence[Mapping[str, Any]] = (),
    plots: Sequence[tuple[str | os.PathLike, str]] = (),
    fit_points: Mapping[str, Sequence[str]] | None = None,
    data_description: str = "",
    source_datasets: Sequence[str] = (),
    license: str = "apache-2.0",
    repo_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write laws, runs and card into `folder` (plots must already be files inside it).

    Args:
        folder (`str` or `os.PathLike`):
            Folder to write `scaling_fit.json`, `runs.jsonl` and `README.md` into; created if missing.
        laws (`Mapping[str, ScalingLaw]`):
            Name -> fitted law (e.g. {"loss": OvertrainingLaw, "err17": DownstreamErrorLaw}).
        runs (`Runs`):
            Every run, fit points and held-out ones.
        title (`str`, *optional*, defaults to `"Scaling-law fit"`):
            Card heading and `pretty_name` metadata.
        summary (`str`, *optional*, defaults to `""`):
            Markdown paragraph shown under the card's heading.
        predictions (`Sequence[Mapping[str, Any]]`, *optional*, defaults to `()`):
            Rows {run, N, M, quantity, predicted, actual, rel_err} for held-out runs.
        plots (`Sequence[tuple[str | os.PathLike, str]]`, *optional*, defaults to `()`):
            (png path inside `folder`, caption) pairs.
        fit_points (`Mapping[str, Sequence[str]]` or `None`, *optional*, defaults to `None`):
            Name -> the fit-point specs used (e.g. ["11M@20", ...]), shown in the card.
        data_description (`str`, *optional*, defaults to `""`):
            Text of the card's "Data" section; empty means "{number of runs} runs.".
        source_datasets (`Sequence[str]`, *optional*, defaults to `()`):
            Hub ids of the datasets the runs were trained on (card metadata).
        license (`str`, *optional*, defaults to `"apache-2.0"`):
            License identifier for the card metadata.
        repo_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id the folder will be pushed to, used in the card's loading example (a placeholder when `None`).
        extra (`Mapping[str, Any]` or `None`, *optional*, defaults to `None`):
            More top-level keys merged into `scaling_fit.json` (after `laws` and `predictions`, which they can
            override).
    """
    from ..hub.cards import render_dataset_card

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not laws:
        raise InputError("write_fit_folder needs at least one fitted law.")
    for name, law in laws.items():
        if law.params is None:
            raise InputError(f"Law {name!r} is not fitted.")
        if fit_points and name in fit_points:
            law.fit_info["fit_points"] = list(fit_points[name])
    payload = {"laws": {name: law.to_dict() for name, law in laws.items()}, "predictions": list(predictions), **(extra or {})}
    (folder / FIT_FILE).write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    runs.to_jsonl(folder / RUNS_FILE)
    plot_rows = []
    for path, caption in plots:
        path = Path(path)
        if path.parent.resolve() != folder.resolve():
            raise InputError(f"Plot {str(path)!r} must be inside {str(folder)!r} so the card can link it.")
        plot_rows.append({"file": path.name, "title": caption})
    card_data = {
        "license": license,
        "tags": ["hf-ext", "scaling-laws", *sorted({law.name for law in laws.values()})],
        "pretty_name": title,
        "configs": [{"config_name": "runs", "data_files": RUNS_FILE}],
    }
    if source_datasets:
        card_data["source_datasets"] = list(source_datasets)
    first = next(iter(laws))
    card = render_dataset_card(
        "scaling_fit.md.j2", card_data, title=title, summary=summary, laws={k: v.to_dict() for k, v in laws.items()},
        predictions=list(predictions), plots=plot_rows, data_description=data_description or f"{len(runs)} runs.",
        repo_id=repo_id, example=_example(first, laws[first]),
    )
    card.save(str(folder / "README.md"))
    return folder


def push_fit(folder: str | os.PathLike, repo_id: str, *, endpoint: str | None = None, private: bool = False):
    """Upload a fit folder as a Hub dataset repo (one commit).

    Args:
        folder (`str` or `os.PathLike`):
            Folder written by `write_fit_folder`; refused if it has no `scaling_fit.json`.
        repo_id (`str`):
            Hub dataset repo (`namespace/name`), created if it does not exist.
        endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL; `None` means `HF_ENDPOINT` or https://huggingface.co.
        private (`bool`, *optional*, defaults to `False`):
            Create the repo as private (only applies when it is created).
    """
    from ..hub import push_folder

    if not (Path(folder) / FIT_FILE).is_file():
        raise InputError(f"{str(folder)!r} has no {FIT_FILE}; write it with write_fit_folder first.")
    return push_folder(folder, repo_id, repo_type="dataset", endpoint=endpoint, private=private, commit_message="hf_ext: scaling-law fit")


def load_fit(folder_or_repo: str | os.PathLike, *, endpoint: str | None = None, revision: str | None = None) -> dict[str, ScalingLaw]:
    """name -> law, from a fit folder, a ``scaling_fit.json`` / law JSON file, or a Hub dataset repo id.

    Args:
        folder_or_repo (`str` or `os.PathLike`):
            A local fit folder, a `scaling_fit.json` or saved law JSON file, or (when no such local path exists) a
            Hub dataset repo id to download.
        endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub URL for the download; `None` means `HF_ENDPOINT` or https://huggingface.co.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Branch, tag or commit of the Hub repo to download; `None` means the default branch.
    """
    path = Path(folder_or_repo)
    if not path.exists():
        from ..hub import pull

        path = Path(pull(str(folder_or_repo), repo_type="dataset", revision=revision, endpoint=endpoint))
    file = path / FIT_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"No {FIT_FILE} in {str(folder_or_repo)!r}.")
    data = json.loads(file.read_text(encoding="utf-8"))
    if "laws" in data:
        return {name: ScalingLaw.from_dict(d) for name, d in data["laws"].items()}
    if "law" in data:
        return {data["law"]: ScalingLaw.from_dict(data)}
    raise InputError(f"{file} is neither a fit folder's {FIT_FILE} nor a saved law.")
