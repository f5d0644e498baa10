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


def benchmark_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, for a fast check.")
    parser.add_argument("--out", default=None, help="Write the results JSON here (also printed).")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="Folder with the staged real datasets.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for sampling and initialisation.")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
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


def write_results(out: str | os.PathLike | None, results: dict[str, Any]) -> None:
    text = json.dumps(results, indent=2, default=float)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    sys.stdout.flush()
