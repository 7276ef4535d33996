"""GLUE's metrics from scikit-learn and scipy; the primary score is the mean of a task's metrics (GLUE).

A score is computed by scikit-learn and scipy. Its bootstrap resamples are scored by the same formulas
written once more for a whole stack of resamples at a time (``_ROWWISE``): scikit-learn's input checks cost
about 3 ms a call, and an evaluated point draws 3,000 resamples (its interval and both folds' errors), which
was most of a small run's time. ``tests/test_metrics.py`` holds the two to each other.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from dynbench.config import TaskConfig

_METRICS = {
    "accuracy": accuracy_score,
    "f1": f1_score,
    "mcc": matthews_corrcoef,
    "pearson": lambda y, p: pearsonr(y, p).statistic,
    "spearman": lambda y, p: spearmanr(y, p).statistic,
}


def predictions(task: TaskConfig, logits: np.ndarray) -> np.ndarray:
    """``[N, C]`` logits → class ids, or the scalar output for a regression task."""
    return logits[:, 0] if task.kind == "regression" else logits.argmax(-1)


def split_metrics(task: TaskConfig, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    preds = predictions(task, logits)
    return {name: float(_METRICS[name](labels, preds)) for name in task.metrics}


def score(task: TaskConfig, by_split: dict[str, dict[str, float]]) -> tuple[float, dict[str, float]]:
    """The primary score and the flat metric dict (``accuracy_matched`` etc. when a task has several dev sets)."""
    flat = {}
    for split, values in by_split.items():
        flat |= {(k if len(by_split) == 1 else f"{k}_{split}"): v for k, v in values.items()}
    primary = float(np.mean([np.mean(list(v.values())) for v in by_split.values()]))
    return primary, flat


def primary_score(task: TaskConfig, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> float:
    """The primary score of per-split logits against per-split labels."""
    return score(task, {s: split_metrics(task, logits[s], labels[s]) for s in labels})[0]


def _f1(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary F1 of the positive class 1, per row; 0 where a row has no positive label or answer (as sklearn)."""
    tp, fp, fn = ((p == 1) & (y == 1)).sum(1), ((p == 1) & (y != 1)).sum(1), ((p != 1) & (y == 1)).sum(1)
    return np.divide(2.0 * tp, 2 * tp + fp + fn, out=np.zeros(len(y)), where=2 * tp + fp + fn > 0)


def _mcc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Matthews correlation per row, from the confusion counts as sklearn writes it (K classes); 0 where a
    row's labels or answers are one class."""
    classes = np.union1d(np.unique(y), np.unique(p))
    true = np.stack([(y == c).sum(1) for c in classes], 1).astype(float)
    pred = np.stack([(p == c).sum(1) for c in classes], 1).astype(float)
    n, correct = float(y.shape[1]), (y == p).sum(1).astype(float)
    cov_tp = correct * n - (true * pred).sum(1)
    cov_pp, cov_tt = n * n - (pred * pred).sum(1), n * n - (true * true).sum(1)
    denom = cov_tt * cov_pp
    return np.divide(cov_tp, np.sqrt(denom), out=np.zeros(len(y)), where=denom != 0)


def _pearson(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pearson's r per row; NaN where a row's labels or answers are all equal (as scipy, which tests equality:
    the centred values of a constant row need not be exactly 0)."""
    constant = (y == y[:, :1]).all(1) | (p == p[:, :1]).all(1)
    y, p = y - y.mean(1, keepdims=True), p - p.mean(1, keepdims=True)
    denom = np.sqrt((y * y).sum(1) * (p * p).sum(1))
    return np.divide((y * p).sum(1), denom, out=np.full(len(y), np.nan), where=~constant & (denom > 0))


_ROWWISE = {
    "accuracy": lambda y, p: (y == p).mean(1),
    "f1": _f1,
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": lambda y, p: _pearson(rankdata(y, axis=1), rankdata(p, axis=1)),  # ties get their mean rank
}


def _bootstrap_draws(task: TaskConfig, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                     resamples: int, seed: int) -> np.ndarray:
    """Primary scores of ``resamples`` bootstrap resamples of the evaluation examples (each split resampled on
    its own, as the score averages the splits); NaN where a resample's score is undefined."""
    rng = np.random.default_rng(seed)
    picks = [{s: rng.integers(0, len(y), len(y)) for s, y in labels.items()} for _ in range(resamples)]
    by_split = []
    for s, y in labels.items():
        rows = np.stack([pick[s] for pick in picks])  # [resamples, N]
        preds = predictions(task, logits[s])
        by_split.append(np.mean([_ROWWISE[name](y[rows], preds[rows]) for name in task.metrics], axis=0))
    return np.mean(by_split, axis=0)


def bootstrap_ci(task: TaskConfig, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the primary score over evaluation examples: how much the score of one
    run owes to the dev sample."""
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(_bootstrap_draws(task, logits, labels, resamples, seed), [tail, 100 - tail])
    return float(low), float(high)


FOLDS = 2


def dev_folds(labels: dict[str, np.ndarray], seed: int) -> list[dict[str, np.ndarray]]:
    """Two disjoint halves of every dev split, drawn with ``seed`` (the task's ``split_seed``: the same halves
    for every method and run), for choosing an operating point on one half and reporting it on the other."""
    orders = {s: np.random.default_rng(seed).permutation(len(y)) for s, y in labels.items()}
    return [{s: np.sort(order[f::FOLDS]) for s, order in orders.items()} for f in range(FOLDS)]


def fold_scores(task: TaskConfig, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], seed: int,
                resamples: int = 1000) -> tuple[list[float], list[float]]:
    """The primary score on each dev fold and its bootstrap standard error (the folds are disjoint, so the
    errors of scores read on different folds add in quadrature)."""
    scores, errors = [], []
    for fold in dev_folds(labels, seed):
        part_logits = {s: logits[s][i] for s, i in fold.items()}
        part_labels = {s: labels[s][i] for s, i in fold.items()}
        scores.append(primary_score(task, part_logits, part_labels))
        errors.append(float(np.nanstd(_bootstrap_draws(task, part_logits, part_labels, resamples, seed), ddof=1)))
    return scores, errors
