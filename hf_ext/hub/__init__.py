"""Hub integration: push folders and pull repos (sync), card rendering."""

from .sync import pull, push_folder

__all__ = ["pull", "push_folder"]
