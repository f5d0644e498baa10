"""Dataset resolver: bundled pools, local files, or Hub ids, with the metadata cards need.

Recipes name a dataset by a bundled name (``dolly_alpagasus_3k``), a local path (JSON
Lines, JSON, CSV, Parquet, or a ``save_to_disk`` folder), or a Hub id that ``datasets``
fetches. Whatever the source, :func:`load_pool` returns a ``datasets.Dataset`` and a
:class:`DatasetSource` saying where it came from and under which licence, so cards never
carry a local path as a source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import InputError


@dataclass(frozen=True)
class DatasetSource:
    """Provenance of a pool, for cards: Hub ids of the sources, licence, credit.

    Args:
        name (`str`):
            The pool's name on the card: a bundled name, a local file's or folder's name, or the Hub id.
        source_datasets (`tuple[str, ...]`, *optional*, defaults to `()`):
            Hub ids of the datasets the pool came from (the card's ``source_datasets``); empty for a local file.
        license (`str`, *optional*):
            Licence id for the card (e.g. ``"cc-by-sa-3.0"``); `None` when unknown.
        description (`str`, *optional*, defaults to `""`):
            What the pool is, for the card's body.
        citation (`str`, *optional*, defaults to `""`):
            BibTeX of the sources, for the card's citation section.
        homepage (`str`, *optional*):
            URL of the pool's origin, shown on the card.
        columns (`dict[str, str]`, *optional*, defaults to `{}`):
            The pool's column for each role (``instruction``, ``input``, ``output``, ``category``).
    """

    name: str
    source_datasets: tuple[str, ...] = ()
    license: str | None = None
    description: str = ""
    citation: str = ""
    homepage: str | None = None
    columns: dict[str, str] = field(default_factory=dict)


BUNDLED: dict[str, tuple[str, DatasetSource]] = {
    "dolly_alpagasus_3k": (
        "dolly_alpagasus_3k.jsonl.gz",
        DatasetSource(
            name="dolly_alpagasus_3k",
            source_datasets=("databricks/databricks-dolly-15k",),
            license="cc-by-sa-3.0",
            description=(
                "2,996 instruction/response pairs of databricks-dolly-15k kept by the AlpaGasus judge filter "
                "(Chen et al. 2023), from gpt4life/alpagasus data/filtered/dolly_3k.json; Dolly's `context` "
                "field is named `input`. Text unchanged."
            ),
            citation=(
                "@online{DatabricksBlog2023DollyV2, author={Mike Conover and Matt Hayes and Ankit Mathur and others}, "
                "title={Free Dolly: Introducing the World's First Truly Open Instruction-Tuned LLM}, year={2023}, "
                "url={https://www.databricks.com/blog/2023/04/12/dolly-first-open-commercially-viable-instruction-tuned-llm}}\n"
                "@inproceedings{chen2024alpagasus, title={AlpaGasus: Training a Better Alpaca with Fewer Data}, "
                "author={Lichang Chen and Shiyang Li and Jun Yan and others}, booktitle={ICLR}, year={2024}}"
            ),
            homepage="https://github.com/gpt4life/alpagasus",
            columns={"instruction": "instruction", "input": "input", "output": "output", "category": "category"},
        ),
    ),
}


def bundled_path(name: str) -> Path:
    """Path of a bundled data file inside the installed package.

    Args:
        name (`str`):
            A key of `BUNDLED`, e.g. ``"dolly_alpagasus_3k"``.

    Returns:
        `Path`: the file under ``hf_ext/data/``.
    """
    filename, _ = BUNDLED[name]
    return Path(str(resources.files("hf_ext") / "data" / filename))


_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".gz": "json", ".csv": "csv", ".parquet": "parquet"}


def load_pool(name_or_path: str, *, split: str = "train", revision: str | None = None, license: str | None = None):
    """Load a pool by bundled name, local path or Hub id.

    Args:
        name_or_path (`str`):
            A bundled pool's name (``dolly_alpagasus_3k``), a local file or folder, or a Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            Split to load.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Branch, tag or commit of a Hub dataset.
        license (`str` or `None`, *optional*, defaults to `None`):
            Licence for the card when the pool is not bundled.

    Returns:
        ``(dataset, source)``: a `datasets.Dataset` and its :class:`DatasetSource`.
    """
    import datasets

    if name_or_path in BUNDLED:
        _, source = BUNDLED[name_or_path]
        ds = datasets.load_dataset("json", data_files=str(bundled_path(name_or_path)), split="train")
        return ds, source
    path = Path(os.path.expanduser(name_or_path))
    if path.exists():
        return _load_local(path, split), DatasetSource(name=path.name, license=license)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise InputError(f"Dataset {name_or_path!r} is not a bundled name, an existing path, or a Hub id. Bundled: {sorted(BUNDLED)}.")
    try:
        ds = datasets.load_dataset(name_or_path, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types; one clear message is what users need
        raise InputError(
            f"Could not load dataset {name_or_path!r} (split {split!r}) from the Hub: {type(exc).__name__}: {exc}. "
            f"Check the id and split, your network or HF_HUB_OFFLINE, or use a bundled pool ({sorted(BUNDLED)}) or a local file."
        ) from None
    return ds, DatasetSource(name=name_or_path, source_datasets=(name_or_path,), license=license)


def check_utf8(path: str | os.PathLike, what: str = "The pool") -> None:
    """Raise an :class:`InputError` naming the file, line and byte when a text file is not UTF-8
    (``.gz`` files are read through gzip); reads the file once, in chunks.

    Args:
        path (`str` or `os.PathLike`):
            The text file (JSON Lines, JSON, CSV, ...), optionally gzip-compressed.
        what (`str`, *optional*, defaults to `"The pool"`):
            What the file is, at the start of the error message.
    """
    import codecs
    import gzip

    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    opener = gzip.open if path.suffix == ".gz" else open
    offset, line = 0, 1
    with opener(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad, at_line = offset + exc.start, line + chunk[:exc.start].count(b"\n")
                raise InputError(f"{what} {str(path)!r} is not UTF-8 text (line {at_line}, "
                                 f"byte {bad}: {chunk[exc.start:exc.start + 1]!r}). Re-save it as UTF-8 "
                                 "(e.g. iconv -f latin1 -t utf-8).") from None
            offset += len(chunk)
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{what} {str(path)!r} is not UTF-8 text: it ends inside a multi-byte character. "
                             "Re-save it as UTF-8.") from None


def _load_local(path: Path, split: str):
    import datasets

    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{str(path)!r} is an empty file: the pool has no examples. Point `dataset` at a file with rows.")
    if path.is_file():
        suffix = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
        fmt = _LOCAL_FORMATS.get(suffix)
        if fmt is None:
            raise InputError(
                f"Cannot read {str(path)!r}: unknown file type {suffix!r}. Use JSON Lines, JSON, CSV or Parquet, "
                "or a folder written by Dataset.save_to_disk."
            )
        if fmt in ("json", "csv"):
            check_utf8(path)
    try:
        if path.is_file():
            return datasets.load_dataset(fmt, data_files=str(path), split="train")
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        # A folder of data files (e.g. a selection hf_ext wrote: README configs + data/*.parquet) is
        # loaded from its resolved files: datasets keys a folder's cache by its name and README
        # configs only, so two folders named alike (every compare run's `selections/random`) would
        # share one stale cache; resolved files key it by path and modification time.
        files = datasets.load_dataset_builder(str(path)).config.data_files
        return datasets.load_dataset(str(path), split=split, data_files={s: list(f) for s, f in (files or {}).items()} or None)
    except Exception as exc:  # parsers raise many types; the user needs the file name and the cause
        raise InputError(f"Could not read the pool {str(path)!r}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
