"""Trainer subclasses and their configs. Imports hf_ext; hf_ext never imports this package
(except `hf_ext.cli`, lazily, by name)."""
