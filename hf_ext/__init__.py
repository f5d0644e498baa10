"""hf_ext: recent papers on data selection, curation, reward modelling and model
composition, as parts that drop into transformers / trl / peft / datasets workflows."""

__version__ = "0.1.0.dev0"

from .errors import HfExtError, InputError, RecipeError, install_log_redaction

install_log_redaction()  # credentials never reach a log line of hf_ext or trainers

__all__ = ["__version__", "HfExtError", "InputError", "RecipeError"]
