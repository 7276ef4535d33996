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


def bootstrap_ci(task: TaskConfig, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the primary score over evaluation examples (each dev split resampled
    on its own, as the score averages the splits): how much the score of one run owes to the dev sample."""
    rng = np.random.default_rng(seed)
    draws = []
    with warnings.catch_warnings():  # a resample may hold one class only: its F1 or correlation is undefined
        warnings.simplefilter("ignore")
        for _ in range(resamples):
            picks = {s: rng.integers(0, len(y), len(y)) for s, y in labels.items()}
            draws.append(score(task, {s: split_metrics(task, logits[s][i], labels[s][i]) for s, i in picks.items()})[0])
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return float(low), float(high)
