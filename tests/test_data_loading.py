"""Local pools are read from their own files: datasets' cache must not hand one folder's rows to another,
and a folder read twice is converted once."""

from pathlib import Path

import datasets

from hf_ext.data import load_pool

README = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n# pool\n"


def _selection_folder(root: Path, rows: int) -> Path:
    """A folder shaped like a selection hf_ext writes (README configs + data/train-*.parquet)."""
    folder = root / "random"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"instruction": [root.name] * rows, "output": ["y"] * rows}).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet"))
    (folder / "README.md").write_text(README)
    return folder


def test_two_selection_folders_with_the_same_name_load_their_own_rows(tmp_path):
    # Seen in a compare run: the SFT of `selections/random` (300 rows) trained on 4 rows another
    # folder named `random` had left in datasets' cache.
    first = _selection_folder(tmp_path / "first", rows=4)
    second = _selection_folder(tmp_path / "second", rows=7)
    ds1, _ = load_pool(str(first))
    ds2, _ = load_pool(str(second))
    assert (len(ds1), len(ds2)) == (4, 7)
    assert set(ds1["instruction"]) == {"first"} and set(ds2["instruction"]) == {"second"}


def test_a_rewritten_folder_is_read_again(tmp_path):
    folder = _selection_folder(tmp_path / "run", rows=3)
    assert len(load_pool(str(folder))[0]) == 3
    datasets.Dataset.from_dict({"instruction": ["new"] * 5, "output": ["z"] * 5}).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet"))
    ds, _ = load_pool(str(folder))
    assert len(ds) == 5 and set(ds["instruction"]) == {"new"}


def test_an_unchanged_folder_reuses_its_cache(tmp_path):
    folder = _selection_folder(tmp_path / "run", rows=3)
    first, _ = load_pool(str(folder))
    again, _ = load_pool(str(folder))
    assert again.cache_files[0]["filename"] == first.cache_files[0]["filename"]
