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


def mix_at(speedup: np.ndarray, score: np.ndarray, target: float) -> list[tuple[int, float]]:
    """The front points that ``score_at`` reads at speed-up ``target``, as (position in the inputs, weight):
    the slowest front point alone at or below its speed-up, the two neighbours around ``target`` between, none
    beyond the fastest. Applied to another set of scores of the same points (one seed's), the weights read
    that set at the same place."""
    idx = front(speedup, score)
    xs = np.asarray(speedup, float)[idx]
    if not len(idx) or target > xs[-1]:
        return []
    j = int(np.searchsorted(xs, target))  # the first front point at least as fast (the front is strictly ordered)
    if j == 0 or xs[j] == target:
        return [(int(idx[j]), 1.0)]
    w = (target - xs[j - 1]) / (xs[j] - xs[j - 1])
    return [(int(idx[j - 1]), 1.0 - w), (int(idx[j]), w)]


def score_at(speedup: np.ndarray, score: np.ndarray, target: float) -> float:
    """The score at speed-up ``target``, interpolated linearly between neighbouring front points (as the
    efficient-NLP leaderboards read a curve); the slowest front point's score below its speed-up; NaN beyond
    the fastest point (a curve is never extrapolated)."""
    mix = mix_at(speedup, score, target)
    score = np.asarray(score, float)
    return float(sum(w * score[i] for i, w in mix)) if mix else float("nan")


def area(speedup: np.ndarray, score: np.ndarray, full_score: float) -> float:
    """Area under the best score reachable within a compute budget, over relative FLOPs in [0, 1], divided by
    the full model's score: ``∫ best(x) dx / full_score`` with ``best(x)`` the highest score among points with
    relative FLOPs ≤ x (0 where none is). The full model alone scores 0; 1 would be its score at no cost."""
    idx = front(speedup, score)[::-1]  # cheapest first
    x = np.minimum(1.0 / np.asarray(speedup, float)[idx], 1.0)
    ys = np.asarray(score, float)[idx]
    widths = np.diff(np.append(x, 1.0))
    return float((ys * widths).sum() / full_score)


def elue_score(speedup: np.ndarray, score: np.ndarray, ref_speedup: np.ndarray,
               ref_score: np.ndarray) -> tuple[float, int]:
    """The ELUE-style score of a curve against a reference curve (static truncation): the mean, over the
    curve's points, of its score minus the reference's score at the same FLOPs, the reference read by linear
    interpolation in relative FLOPs between its points. Points cheaper or dearer than every reference point
    are left out (a curve is never extrapolated); returns (score, points used), NaN with 0 points if none is
    in range. Positive: better than just running fewer layers."""
    x, y = 1.0 / np.asarray(speedup, float), np.asarray(score, float)
    rx, ry = 1.0 / np.asarray(ref_speedup, float), np.asarray(ref_score, float)
    ok = np.isfinite(rx) & np.isfinite(ry)
    rx, ry = rx[ok], ry[ok]
    order = np.argsort(rx, kind="stable")
    rx, ry = rx[order], ry[order]
    inside = np.isfinite(x) & np.isfinite(y) & (x >= rx[0]) & (x <= rx[-1]) if len(rx) else np.zeros(len(x), bool)
    if not inside.any():
        return float("nan"), 0
    return float(np.mean(y[inside] - np.interp(x[inside], rx, ry))), int(inside.sum())
