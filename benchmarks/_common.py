"""Shared plumbing for benchmarks: the common flags, timing, peak memory, JSON output.

Every benchmark compares against a baseline in the same run and reports ratios, because the
machine is noisy. Usage in a benchmark script::

    from _common import benchmark_args, write_results
    args = benchmark_args("What this measures.")   # --quick, --out, --data-dir, --seed
    ...
    write_results(args.out, results)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Benchmarks may read the workplace's larger datasets; a user's clone passes --data-dir.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def benchmark_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None, *,
                   device: bool = False, plan: Callable[[argparse.Namespace], list] | None = None) -> argparse.Namespace:
    """The common flags; ``device=True`` adds ``--device`` (default cpu); ``plan`` (a function of the
    parsed args returning `hf_ext.planning.Plan` objects) adds ``--plan``, which prints them and exits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, for a fast check.")
    parser.add_argument("--out", default=None, help="Write the results JSON here (also printed).")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="Folder with the staged real datasets.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for sampling and initialisation.")
    if device:
        parser.add_argument("--device", default="cpu", help="Where models run: cpu (default) or cuda.")
    if plan is not None:
        parser.add_argument("--plan", action="store_true",
                            help="Print the memory and time estimate of the paper-scale recipe (meta-device models, "
                                 "FLOP rate measured now on --device) and exit without running anything else.")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if plan is not None and args.plan:
        plans = plan(args)
        for p in plans:
            print(p.format())
        write_results(args.out, {"plan": [p.as_dict() for p in plans]})
        sys.exit(0)
    args.data_dir = Path(args.data_dir)
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} does not exist; point it at a copy of the staged datasets.")
    return args


@contextmanager
def timed(results: dict[str, Any], key: str):
    """Store the wall-clock seconds of the block in results[key]."""
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def best_of(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Fastest of `repeats` timed calls (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def plan_flop_rate(device: str) -> float:
    """The FLOP rate plans divide by: a float32 matmul on the CPU, a bfloat16 one on a GPU."""
    import torch

    from hf_ext.planning import measured_flop_rate

    return measured_flop_rate(device, torch.float32 if device == "cpu" else torch.bfloat16)


def write_results(out: str | os.PathLike | None, results: dict[str, Any]) -> None:
    text = json.dumps(results, indent=2, default=float)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    sys.stdout.flush()
