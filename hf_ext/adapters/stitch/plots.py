"""A PNG of the stitch gates over training, from a Trainer's ``log_history`` (matplotlib's object
API: no global pyplot state, no display).

`StitchTrainer` logs, per stitch layer k, ``stitch/{k}/e2h_hub`` and ``stitch/{k}/e2h_{expert}``
(mean E2H softmax weights) or ``stitch/{k}/h2e_{expert}`` (mean H2E gates), and
``stitch/gate_offset`` (β). The plot has one panel for β and one per stitch layer, gates on a log
scale: at the identity start the experts' share is ~e^(−β), far below what a linear axis shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ...errors import InputError

GATES_PLOT = "gates.png"
OFFSET_KEY = "stitch/gate_offset"


def gate_series(log_history: Sequence[dict]) -> tuple[list[float], list[float], dict[int, dict[str, list[float]]]]:
    """(steps, β per step, {layer k: {"e2h_hub": [...], "h2e_math": [...], ...}}) from the logged rows.

    Args:
        log_history (`Sequence[dict]`):
            A Trainer's ``state.log_history``; only rows with ``stitch/gate_offset`` (StitchTrainer's training logs)
            count, and a gate missing from a row is NaN.
    """
    rows = [row for row in log_history if OFFSET_KEY in row]
    layers: dict[int, dict[str, list[float]]] = {}
    for row in rows:
        for key in row:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "stitch":
                layers.setdefault(int(parts[1]), {}).setdefault(parts[2], [])
    for row in rows:
        for k, series in layers.items():
            for name, values in series.items():
                values.append(row.get(f"stitch/{k}/{name}", float("nan")))
    return [row.get("step", i) for i, row in enumerate(rows)], [row[OFFSET_KEY] for row in rows], dict(sorted(layers.items()))


def plot_gate_history(log_history: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write the gate plot to `path` (PNG) and return it.

    Args:
        log_history (`Sequence[dict]`):
            A Trainer's ``state.log_history`` with StitchTrainer's gate logs (see :func:`gate_series`).
        path (`str` or `os.PathLike`):
            The PNG file to write; its folder is created.
    """
    from matplotlib.figure import Figure

    steps, offsets, layers = gate_series(log_history)
    if not steps:
        raise InputError(f"The log history has no {OFFSET_KEY!r} entries; train with StitchTrainer (logging_steps > 0) first.")
    fig = Figure(figsize=(5.5, 2.2 * (1 + len(layers))), dpi=110)
    axes = fig.subplots(1 + len(layers), 1, sharex=True, squeeze=False)[:, 0]
    axes[0].plot(steps, offsets, color="black")
    axes[0].set_ylabel("gate offset β")
    axes[0].set_title("Stitch gates during training")
    for ax, (k, series) in zip(axes[1:], layers.items()):
        for name, values in series.items():
            ax.plot(steps, values, label=name, linewidth=1.2)
        ax.set_yscale("log")
        ax.set_ylabel(f"stitch layer {k}\nmean gate")
        ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("step")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
