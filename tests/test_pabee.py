"""PABEE (METHODS.md §3h): the patience counter on hand-made answers, the layer-weighted loss, bad knobs."""
from __future__ import annotations

import pytest
import torch

from dynbench import exits
from dynbench.errors import DynbenchError
from methods.pabee import PatienceRule
from tests.conftest import make_config


def exit_at(rule, answers: list[list[float]], knob) -> tuple[list[int], list[float]]:
    """Step ``rule`` over per-layer logits ``answers[layer][example]`` as ``exits.run`` does; returns the
    1-based exit layer and the answer of each example (the last layer answers for those who never leave)."""
    zs = [torch.tensor(a, dtype=torch.float32) for a in answers]
    n, depth = len(zs[0]), len(zs)
    layer_of, state = [depth] * n, rule.start(n)
    for layer in range(depth - 1):
        state, leave = rule.step(state, zs[layer], layer, knob)
        for i in range(n):
            if leave[i] and layer_of[i] == depth:
                layer_of[i] = layer + 1
    pick = [zs[layer_of[i] - 1][i] for i in range(n)]
    return layer_of, [p.argmax().item() if p.numel() > 1 else p.item() for p in pick]


A, B = [5.0, 0.0], [0.0, 5.0]
SEQUENCE = [[A], [B], [B], [B], [A], [A]]  # argmax per layer: A B B B A A


@pytest.mark.parametrize("patience, layer, answer", [(1, 3, 1), (2, 4, 1), (3, 6, 0)])
def test_patience_counts_consecutive_agreements_and_resets(patience: int, layer: int, answer: int) -> None:
    assert exit_at(PatienceRule(0.1), SEQUENCE, patience) == ([layer], [answer])


def test_regression_agreement_is_a_change_below_the_tolerance() -> None:
    values = [[[2.0]], [[2.5]], [[2.55]], [[2.58]], [[3.0]], [[3.02]]]
    layers, answers = exit_at(PatienceRule(0.1), values, 2)
    assert layers == [4] and answers == pytest.approx([2.58])


def test_a_mixed_batch_exits_at_different_layers() -> None:
    layers, _ = exit_at(PatienceRule(0.1), [[A, A], [A, B], [A, B], [A, A], [A, A], [A, A]], 2)
    assert layers == [3, 6]


def test_layer_weighted_loss(monkeypatch) -> None:
    zs = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, -1.0]])]
    monkeypatch.setattr(exits, "all_logits", lambda model, batch: (zs, None))
    ce = [torch.nn.functional.cross_entropy(z, torch.tensor([0])).item() for z in zs]
    loss = exits.layer_weighted_loss(None, {"labels": torch.tensor([0])})
    assert loss.item() == pytest.approx((1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6)


@pytest.mark.parametrize("override", ["method.knobs=[0,2]", "method.knobs=[1.5]", "method.regression_tol=0"])
def test_bad_knobs_fail_at_config_time(override: str) -> None:
    with pytest.raises(DynbenchError, match="bad config: method"):
        make_config("method=pabee", override)
