"""Timing shared by the benchmark scripts (run them as ``python benchmarks/<name>.py``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def best_cpu_seconds(step: Callable[[], object], repeats: int) -> float:
    """Least CPU time of ``step()`` over ``repeats`` calls after one warm-up call.

    CPU time of this process, not wall time, and the minimum: on a shared machine other jobs only
    add wall time, and with one thread CPU time is the work done.
    """
    step()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return min(times)


def median_wall_seconds(step: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``step()`` over ``repeats`` calls after one warm-up call: for
    multi-threaded work, whose CPU time is the sum over its threads. Needs a quiet machine."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
