"""Hub integration: push folders and pull repos (sync), card rendering, and :class:`PushToHubMixin`."""

from .mixin import PushToHubMixin
from .sync import pull, push_folder

__all__ = ["pull", "push_folder", "PushToHubMixin"]

# Loaders that lived here once; they belong to the domain that makes those repos (hf_ext.hub sits below it).
_MOVED = {"load_merged_model": "hf_ext.merge.hub", "load_time_vector": "hf_ext.merge.hub", "load_interpolation": "hf_ext.merge.hub"}


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(f"{name} moved: use `from {_MOVED[name]} import {name}` (hf_ext.hub no longer imports the domains).")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
