"""Hub integration: push folders and pull repos (sync), card rendering."""

from .sync import pull, push_folder

__all__ = ["pull", "push_folder", "load_merged_model", "load_time_vector", "load_interpolation"]

_MERGE_LOADERS = ("load_merged_model", "load_time_vector", "load_interpolation")


def __getattr__(name: str):
    # Loaders of merged models / time vectors live in hf_ext.merge.hub; imported lazily (torch, transformers).
    if name in _MERGE_LOADERS:
        from ..merge import hub as merge_hub

        return getattr(merge_hub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
