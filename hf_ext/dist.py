"""The process group a job runs in under ``accelerate launch`` / ``torchrun``."""

from __future__ import annotations

import os
from typing import Any


def partial_state() -> Any | None:
    """accelerate's `PartialState` when ``WORLD_SIZE`` > 1, else None (a single process).

    On a machine without CUDA, ``cpu=True`` is passed: accelerate only forms a CPU (gloo) group
    when told so (``ACCELERATE_USE_CPU``, which `TrainingArguments(use_cpu=True)` happens to set),
    and without it every torchrun worker would believe it is rank 0 of 1 and do all the work.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
