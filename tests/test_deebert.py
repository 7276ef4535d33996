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
