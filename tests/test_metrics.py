"""GLUE metrics and the bootstrap interval of the primary score."""
from __future__ import annotations

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
