"""LESS (Xia et al. 2024, arXiv 2402.04333): targeted instruction-data selection by gradient similarity.

1. :mod:`.warmup` — LoRA warmup on a random 5% of the pool (PEFT + ``transformers.Trainer``,
   loss on response tokens only, a checkpoint per epoch with the Adam state saved by name).
2. :class:`GradientFeaturizer` — per-example LoRA gradients (``torch.func``), Adam feature,
   Rademacher projection, L2-normalised; :func:`build_datastore` runs it resumably and
   sharded across processes.
3. :func:`less_scores` / :func:`select_top` — weighted cosine matching (mean within subtask,
   max over subtasks) and top-k selection; the ``less`` selector reads the ``less_score`` column.
"""

from .datastore import Datastore, build_datastore
from .formatting import TULU_TEMPLATE, ExampleFormat, tokenize_example
from .gradients import FEATURE_COLUMN, TOKENS_COLUMN, GradientFeaturizer, adam_feature, response_token_loss
from .matching import SCORE_COLUMN, checkpoint_weights, epoch_learning_rates, less_scores, normalize_weights, select_top
from .optimizer_state import AdamState, load_adam_state, save_adam_state_by_name
from .projection import RademacherProjector

__all__ = [
    "AdamState",
    "Datastore",
    "ExampleFormat",
    "FEATURE_COLUMN",
    "GradientFeaturizer",
    "RademacherProjector",
    "SCORE_COLUMN",
    "TOKENS_COLUMN",
    "TULU_TEMPLATE",
    "adam_feature",
    "build_datastore",
    "checkpoint_weights",
    "epoch_learning_rates",
    "less_scores",
    "load_adam_state",
    "normalize_weights",
    "response_token_loss",
    "save_adam_state_by_name",
    "select_top",
    "tokenize_example",
]
