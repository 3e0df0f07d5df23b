"""Timing shared by the benchmark scripts (run them as ``python benchmarks/<name>.py``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def _timed(step: Callable[[], object], repeats: int, clock: Callable[[], float]) -> list[float]:
    """``clock`` time of each of ``repeats`` calls of ``step()``, after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = clock()
        step()
        times.append(clock() - start)
    return times


def best_cpu_seconds(step: Callable[[], object], repeats: int) -> float:
    """Least CPU time of ``step()`` over ``repeats`` calls after one warm-up call.

    CPU time of this process, not wall time, and the minimum: on a shared machine other jobs only
    add wall time, and with one thread CPU time is the work done.
    """
    return min(_timed(step, repeats, time.process_time))


def median_wall_seconds(step: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``step()`` over ``repeats`` calls after one warm-up call: for
    multi-threaded work, whose CPU time is the sum over its threads. Needs a quiet machine."""
    return statistics.median(_timed(step, repeats, time.perf_counter))
