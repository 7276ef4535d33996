"""GLUE's metrics from scikit-learn and scipy; the primary score is the mean of a task's metrics (GLUE).

A score is computed by scikit-learn and scipy. Its bootstrap resamples are scored a whole stack at a time
(``_ROWWISE``): Pearson and Spearman by scipy along an axis, accuracy, F1 and MCC by sklearn's formulas written
for a stack. sklearn's input checks cost about 3 ms a call, and an evaluated point draws 3,000 resamples (its
interval and both folds' errors), which was most of a small run's time. ``tests/test_metrics.py`` holds the
two ways to each other.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import ConstantInputWarning, pearsonr, rankdata, spearmanr
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
    """Binary F1 of the positive class 1, per row; 0 where a row has no positive label or answer (as sklearn).
    Labels are 0 and 1 (the F1 tasks are binary; ``split_metrics``, which scores every point first, refuses others)."""
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
    """Pearson's r per row, by scipy (NaN where a row's labels or answers are all equal)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # a resample of one label value: NaN, as it should
        return pearsonr(y, p, axis=1).statistic


_ROWWISE = {
    "accuracy": lambda y, p: (y == p).mean(1),
    "f1": _f1,
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": lambda y, p: _pearson(rankdata(y, axis=1), rankdata(p, axis=1)),  # ties get their mean rank
}


def _bootstrap_draws(task: TaskConfig, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                     resamples: int, seed: int, chunk: int = 100) -> np.ndarray:
    """Primary scores of ``resamples`` bootstrap resamples of the evaluation examples (each split resampled on
    its own, as the score averages the splits); NaN where a resample's score is undefined. Scored ``chunk``
    resamples at a time, so that memory stays at ``chunk`` x the split's size (QQP's dev set: 40,430)."""
    rng = np.random.default_rng(seed)
    preds = {s: predictions(task, logits[s]) for s in labels}
    draws = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        rows = {s: np.empty((size, len(y)), np.intp) for s, y in labels.items()}
        for r in range(size):
            for s, y in labels.items():  # one resample's splits in turn: the order the draws have always had
                rows[s][r] = rng.integers(0, len(y), len(y))
        by_split = [np.mean([_ROWWISE[name](labels[s][i], preds[s][i]) for name in task.metrics], axis=0)
                    for s, i in rows.items()]
        draws.append(np.mean(by_split, axis=0))
    return np.concatenate(draws)


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
