"""Time vectors (Nylund et al. 2023, arXiv 2312.13401) as a PEFT-style adapter: τ = θ_t − θ_pre.

>>> from hf_ext.adapters.time_vector import TimeVector, interpolate, analogy
"""

from .config import CONFIG_NAME, TimeVectorConfig
from .model import TimeVector, analogy, interpolate

__all__ = ["TimeVector", "TimeVectorConfig", "interpolate", "analogy", "CONFIG_NAME"]
