"""GLUE metrics, the bootstrap interval of the primary score, and the stacked resamples against the libraries."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from dynbench import metrics
from tests.conftest import make_config


def _logits(preds: np.ndarray) -> np.ndarray:
    return np.eye(2)[preds]


def test_bootstrap_interval_brackets_the_score_and_narrows_with_more_examples() -> None:
    task = make_config("task=mrpc").task
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1600):
        labels = rng.integers(0, 2, n)
        preds = np.where(rng.random(n) < 0.8, labels, 1 - labels)  # 80% right
        score = metrics.score(task, {"validation": metrics.split_metrics(task, _logits(preds), labels)})[0]
        low, high = metrics.bootstrap_ci(task, {"validation": _logits(preds)}, {"validation": labels}, 400, seed=0)
        assert low < score < high
        widths.append(high - low)
        again = metrics.bootstrap_ci(task, {"validation": _logits(preds)}, {"validation": labels}, 400, seed=0)
        assert again == (low, high)  # seeded: the same numbers every time
    assert widths[1] < widths[0] / 2  # about 1/sqrt(16) of the width


def test_bootstrap_of_a_perfect_classifier_is_a_point() -> None:
    task = make_config("task=rte").task
    labels = np.array([0, 1, 1, 0, 1])
    assert metrics.bootstrap_ci(task, {"validation": _logits(labels)}, {"validation": labels}, 50) == (1.0, 1.0)


def test_mnli_resamples_each_dev_split_and_averages() -> None:
    task = make_config("task=mnli").task
    labels = {"matched": np.zeros(50, int), "mismatched": np.zeros(50, int)}
    logits = {"matched": np.eye(3)[np.zeros(50, int)], "mismatched": np.eye(3)[np.ones(50, int)]}
    assert metrics.bootstrap_ci(task, logits, labels, 50) == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize("name", ["accuracy", "f1", "mcc", "pearson", "spearman"])
def test_each_rowwise_metric_is_the_librarys_on_every_row(name: str) -> None:
    """Rows of 6 draws from 3 classes (or tied reals): many rows hold one class, or no positive, or are
    constant, where the libraries answer 0 or NaN."""
    rng = np.random.default_rng(0)
    regression = name in ("pearson", "spearman")
    y, p = (rng.integers(0, 3, (400, 6)) for _ in range(2))
    if name == "f1":
        y, p = y % 2, p % 2
    if regression:  # float32, as the evaluation's labels and outputs are
        y, p = (y / 2.0).astype(np.float32), (p * 0.7).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.array([metrics._METRICS[name](a, b) for a, b in zip(y, p)], float)
    assert np.isnan(expected).any() if regression else (expected == 0).sum() > 10  # the edge rows occur
    np.testing.assert_allclose(metrics._ROWWISE[name](y, p), expected, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("task_name", ["mrpc", "cola", "stsb", "mnli"])
def test_bootstrap_draws_are_the_primary_score_of_each_resample(task_name: str) -> None:
    """The stacked resamples against scoring each resample with ``primary_score`` in turn, from the same
    draws: small splits, so that resamples with one class or a constant answer come up."""
    task = make_config(f"task={task_name}").task
    rng = np.random.default_rng(2)
    splits = ["matched", "mismatched"] if task_name == "mnli" else ["validation"]
    if task.kind == "regression":
        labels = {s: (rng.integers(0, 3, 5) * 2.5).astype(np.float32) for s in splits}  # float32, as evaluated
        logits = {s: rng.normal(size=(5, 1)).round(1).astype(np.float32) for s in splits}
    else:
        labels = {s: rng.integers(0, task.num_labels, 7) for s in splits}
        logits = {s: rng.normal(size=(7, task.num_labels)) for s in splits}
    draws = np.random.default_rng(5)
    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(200):
            picks = {s: draws.integers(0, len(y), len(y)) for s, y in labels.items()}
            expected.append(metrics.primary_score(task, {s: logits[s][i] for s, i in picks.items()},
                                                  {s: labels[s][i] for s, i in picks.items()}))
    np.testing.assert_allclose(metrics._bootstrap_draws(task, logits, labels, 200, seed=5), expected,
                               rtol=1e-12, atol=1e-12, equal_nan=True)
