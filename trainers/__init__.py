"""Trainer subclasses and their configs. Imports hf_ext; hf_ext never imports this package
(except `hf_ext.cli`, lazily, by name). The jobs that train with them are in `trainers.jobs`."""

from .critic_rm import CriticRewardModel, CriticRMConfig, CriticRMTrainer, load_critic_lm
from .ranking_rm import RankingRewardConfig, RankingRewardTrainer
from .stitch import StitchTrainer, StitchTrainingConfig

__all__ = ["CriticRMConfig", "CriticRMTrainer", "CriticRewardModel", "load_critic_lm",
           "RankingRewardConfig", "RankingRewardTrainer", "StitchTrainer", "StitchTrainingConfig"]
