"""Scaling laws: over-training L(N, M) and downstream Err(L) (Gadre et al. 2024, arXiv 2403.08540),
Chinchilla's L(N, D) (Hoffmann et al. 2022); fitting, runs as data, planning, plots, cards."""

from .fitting import FitError, FitWarning
from .laws import LAWS, ChinchillaLaw, DownstreamErrorLaw, OvertrainingLaw, ScalingLaw
from .runs import FitRule, Runs, load_runs, runs_from_trainer_state, split_largest

__all__ = [
    "LAWS", "ChinchillaLaw", "DownstreamErrorLaw", "FitError", "FitRule", "FitWarning", "OvertrainingLaw", "Runs",
    "ScalingLaw", "load_runs", "runs_from_trainer_state", "split_largest",
]
