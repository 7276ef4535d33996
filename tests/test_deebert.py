"""DeeBERT (METHODS.md §6h): the entropy rule, regression refusal, stage sharing and the frozen stage 2."""
from __future__ import annotations

import pytest
import torch

from dynbench import exits
from dynbench.errors import DynbenchError
from dynbench.method import get_method
from dynbench.runner import run
from tests.conftest import make_config


def test_entropy_in_nats_and_the_threshold() -> None:
    z = torch.tensor([[2.0, 0.0]])
    assert exits.entropy(z).item() == pytest.approx(0.3653, abs=1e-4)
    rule = get_method("deebert").rule
    assert rule.step({}, z, 0, 0.4)[1].item() and not rule.step({}, z, 0, 0.35)[1].item()
    both = torch.tensor([[2.0, 0.0], [0.1, 0.0]])  # a batch of two: different entropies, different decisions
    assert rule.step({}, both, 0, 0.4)[1].tolist() == [True, False]


def test_refuses_regression() -> None:
    cfg = make_config("method=deebert", "task=stsb")
    with pytest.raises(DynbenchError, match="does not apply to the regression task stsb"):
        get_method("deebert")(cfg.method, cfg.task)


def test_bad_threshold_fails_at_config_time() -> None:
    with pytest.raises(DynbenchError, match="entropy thresholds must be >= 0"):
        make_config("method=deebert", "method.knobs=[-0.1]")


def test_stage_one_is_full_and_stage_two_trains_only_the_offramps(config) -> None:
    [full] = run(config("method=full", "task=rte", "eval.timing=false"))
    records = run(config("method=deebert", "task=rte", "eval.timing=false", "method.knobs=[0.0,0.7]"))
    stage1, stage2 = records[0]["stages"]
    assert stage1["key"] == full["stages"][0]["key"] and stage1["reused"] and not stage2["reused"]
    assert records[0]["score"] == full["score"]  # threshold 0: nobody exits, the final classifier answers
    assert records[1]["layers_mean"] == 1  # threshold 0.7 > ln 2: everybody exits at layer 1


def test_head_scores_are_each_offramps_score_and_the_folds_split_dev(config) -> None:
    """``head_scores[l]`` is the dev score of the classifier after layer l + 1 on every example: threshold 0
    (nobody exits) scores what the last one does, a threshold above ln 2 (everybody leaves at layer 1) what
    the first does. The two dev halves partition dev: their accuracies average (by size) to the dev score,
    and the whole's FLOPs speed-up lies between the halves'."""
    records = run(config("method=deebert", "task=rte", "eval.timing=false", "method.knobs=[0.0,0.7]"))
    stay, leave = records
    assert stay["head_scores"] == leave["head_scores"] and len(stay["head_scores"]) == 2  # tiny: 2 layers
    assert stay["score"] == pytest.approx(stay["head_scores"][-1])
    assert leave["score"] == pytest.approx(leave["head_scores"][0])
    assert 0 < stay["majority_score"] < 1
    n = stay["eval_examples"]
    sizes = [(n + 1) // 2, n // 2]
    for record in records:
        folds = record["fold_scores"]
        assert sum(s * k for s, k in zip(folds, sizes)) / n == pytest.approx(record["score"])
        assert min(record["fold_speedup_flops"]) <= record["speedup_flops"] <= max(record["fold_speedup_flops"])
        assert all(se > 0 for se in record["fold_score_se"])
    assert leave["fold_speedup_flops"] != stay["fold_speedup_flops"]
