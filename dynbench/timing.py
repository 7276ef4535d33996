"""Wall-clock measured side by side: candidates interleaved in one process, medians of repeats, so that
speed-ups are ratios taken under the same machine load (timings here swing ±20% between runs)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_times(candidates: dict[str, Callable[[], None]], repeats: int,
                      sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds of each callable in each of ``repeats`` rounds; every round runs each once, in turn, so the
    i-th times of two candidates were taken under the same load. ``sync`` runs before each clock reading (on
    a GPU: wait for the kernels, ``device.synchronizer``)."""
    for fn in candidates.values():  # warm-up: allocator, kernels, caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(candidates: dict[str, Callable[[], None]], repeats: int,
                        sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds of each callable over ``repeats`` interleaved rounds (``interleaved_times``)."""
    return {name: statistics.median(ts) for name, ts in interleaved_times(candidates, repeats, sync).items()}
