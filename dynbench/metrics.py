"""GLUE's metrics from scikit-learn and scipy; the primary score is the mean of a task's metrics (GLUE)."""
from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import pearsonr, spearmanr
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


def _bootstrap_draws(task: TaskConfig, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                     resamples: int, seed: int) -> np.ndarray:
    """Primary scores of ``resamples`` bootstrap resamples of the evaluation examples (each split resampled on
    its own, as the score averages the splits); NaN where a resample's score is undefined."""
    rng = np.random.default_rng(seed)
    draws = []
    with warnings.catch_warnings():  # a resample may hold one class only: its F1 or correlation is undefined
        warnings.simplefilter("ignore")
        for _ in range(resamples):
            picks = {s: rng.integers(0, len(y), len(y)) for s, y in labels.items()}
            draws.append(primary_score(task, {s: logits[s][i] for s, i in picks.items()},
                                       {s: labels[s][i] for s, i in picks.items()}))
    return np.asarray(draws, float)


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
