"""Branch-Train-Stitch stitch layers (arXiv 2502.00075) as a PEFT-style adapter."""

from .config import CONFIG_NAME, WEIGHTS_NAME, StitchConfig
from .layer import StitchLayer
from .model import StitchCache, StitchedModel, count_stitch_parameters, expert_hash

__all__ = ["StitchConfig", "StitchLayer", "StitchedModel", "StitchCache", "count_stitch_parameters", "expert_hash",
           "CONFIG_NAME", "WEIGHTS_NAME"]
