"""A method's accuracy-compute trade-off as a Pareto front, and the numbers read off it for tables.

Speed-up is the full model's FLOPs over the method's (> 1 is faster); relative FLOPs is its inverse.
"""
from __future__ import annotations

import numpy as np


def front(speedup: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the points that no other point beats (as fast or faster and as good or better, one of the
    two strictly), sorted by speed-up; along the front the score falls as the speed-up grows."""
    speedup, score = np.asarray(speedup, float), np.asarray(score, float)
    order = np.lexsort((-score, -speedup))  # fastest first, the best score first among equals
    kept, best = [], -np.inf
    for i in order[np.isfinite(score[order]) & np.isfinite(speedup[order])]:  # an undefined score is no point
        if score[i] > best:
            kept.append(i)
            best = score[i]
    return np.array(kept[::-1], dtype=int)


def score_at(speedup: np.ndarray, score: np.ndarray, target: float) -> float:
    """The score at speed-up ``target``, interpolated linearly between neighbouring front points (as the
    efficient-NLP leaderboards read a curve); the slowest front point's score below its speed-up; NaN beyond
    the fastest point (a curve is never extrapolated)."""
    idx = front(speedup, score)
    xs, ys = np.asarray(speedup, float)[idx], np.asarray(score, float)[idx]
    if not len(idx) or target > xs[-1]:
        return float("nan")
    return float(np.interp(target, xs, ys))


def area(speedup: np.ndarray, score: np.ndarray, full_score: float) -> float:
    """Area under the best score reachable within a compute budget, over relative FLOPs in [0, 1], divided by
    the full model's score: ``∫ best(x) dx / full_score`` with ``best(x)`` the highest score among points with
    relative FLOPs ≤ x (0 where none is). The full model alone scores 0; 1 would be its score at no cost."""
    idx = front(speedup, score)[::-1]  # cheapest first
    x = np.minimum(1.0 / np.asarray(speedup, float)[idx], 1.0)
    ys = np.asarray(score, float)[idx]
    widths = np.diff(np.append(x, 1.0))
    return float((ys * widths).sum() / full_score)
