"""DACT (METHODS.md §2h): the recurrences and the halting bound on hand-made tensors, the guarantee that halting
never changes the full-depth answer, gradients to the halting units, bad knobs, and runs with two knobs."""
from __future__ import annotations

import math

import pytest
import torch

from dynbench import exits
from dynbench.backbone import load_backbone, load_tokenizer
from dynbench.data import load_task
from dynbench.errors import DynbenchError
from dynbench.method import get_method
from dynbench.runner import run
from methods.dact import HaltingRule, dact_loss, full_depth
from tests.conftest import GLUE, make_config


def _rule(task: str = "mrpc", layers: int = 6) -> HaltingRule:
    return HaltingRule(make_config("method=dact", f"task={task}").task, layers)


def _steps(answers: list[list[float]], halting: list[float]) -> list[torch.Tensor]:
    """Step outputs ``z`` for one example: log-probabilities (softmax gives them back) and the halting logit;
    the last layer has no halting unit."""
    zs = [torch.tensor([[*map(math.log, y), math.log(h / (1 - h))]]) for y, h in zip(answers, halting)]
    return zs + [torch.tensor([list(map(math.log, answers[-1]))])] if len(answers) > len(halting) else zs


def test_recurrences_match_values_worked_out_by_hand() -> None:
    # p1 = .5, a1 = y1; p2 = .4 * .5 = .2, a2 = y2 * .5 + a1 * .5 = [.55, .45]; a3 = y3 * .2 + a2 * .8 = [.56, .44]
    zs = _steps([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0.5, 0.4])
    rule, state, seen = _rule(layers=3), {}, []
    for z in zs:
        state = rule.accumulate(state, z)
        seen.append((state["a"][0].tolist(), state["p"].item()))
    expected = [([0.9, 0.1], 0.5), ([0.55, 0.45], 0.2), ([0.56, 0.44], 0.0)]
    for (a, p), (a_hand, p_hand) in zip(seen, expected):
        assert a == pytest.approx(a_hand, abs=1e-6) and p == pytest.approx(p_hand, abs=1e-6)
    assert state["ponder"].item() == pytest.approx(0.5 + 0.2, abs=1e-6)
    assert rule.answer(state, None).exp()[0].tolist() == pytest.approx([0.56, 0.44], abs=1e-6)


@pytest.mark.parametrize("y1, h1, slack, halts", [
    ([0.9, 0.1], 0.01, 0.0, True),    # METHODS.md: 0.9 * 0.99^5 = 0.856 >= 0.1 + 0.05
    ([0.55, 0.45], 0.9, 0.0, False),  # METHODS.md: must not halt
    ([0.5, 0.5], 0.01, 0.0, False),   # 0.5 * 0.99^5 = 0.4755 < 0.55
    ([0.5, 0.5], 0.01, 0.1, True),    # the slack (ours) lets it go: 0.5755 >= 0.55
])
def test_the_halting_bound_after_layer_one(y1, h1, slack, halts) -> None:
    state, leave = _rule().step({}, _steps([y1], [h1])[0], 0, slack)
    assert leave.item() is halts


def test_a_constructed_sequence_halts_exactly_where_the_bound_first_holds() -> None:
    # L = 4. After layer 1 (p1 = .2, a1 = [.6, .4]): 0.6 * 0.8^3 = 0.307 < 0.4 + 3 * 0.2, go on.
    # After layer 2 (p2 = .02, a2 = .2 * [.68, .32] + .8 * a1 = [.616, .384]): 0.616 * 0.98^2 = 0.592 >= 0.384 + 0.04
    zs = _steps([[0.6, 0.4], [0.68, 0.32], [0.7, 0.3]], [0.2, 0.1, 0.1])
    rule, state, leaves, kept = _rule(layers=4), {}, [], []
    for layer, z in enumerate(zs):
        state, leave = rule.step(state, z, layer, 0.0)
        leaves.append(leave.item())
        kept.append(state["a"][0].tolist())
    assert kept[1] == pytest.approx([0.616, 0.384], abs=1e-6)
    assert leaves == [False, True, True]


def _random_run(rule: HaltingRule, rows: int, generator: torch.Generator, classes: int) -> list[torch.Tensor]:
    halting = [torch.randn(rows, 1, generator=generator) * 2 - 3 for _ in range(rule.depth - 1)]
    answers = [torch.randn(rows, classes, generator=generator) * 3 for _ in range(rule.depth)]
    return [torch.cat([z, h], -1) for z, h in zip(answers, halting)] + [answers[-1]]


def test_halting_never_changes_the_full_depth_prediction_on_random_sequences() -> None:
    rule, gen = _rule("mnli"), torch.Generator().manual_seed(0)
    zs = _random_run(rule, 4000, gen, 3)
    states, state = [], {}
    for z in zs:
        state = rule.accumulate(state, z)
        states.append(state)
    final = states[-1]["a"].argmax(-1)
    halted_any = 0
    for n, st in enumerate(states[:-1]):
        halted = rule.halts(st, rule.depth - 1 - n, 0.0)
        assert torch.equal(st["a"][halted].argmax(-1), final[halted])
        halted_any += int(halted.sum())
    assert halted_any > 1000  # the property was exercised


def test_regression_halts_only_within_the_slack_of_the_full_depth_answer() -> None:
    rule, gen = _rule("stsb"), torch.Generator().manual_seed(0)
    assert rule.range == (0.0, 5.0)
    zs = _random_run(rule, 4000, gen, 1)
    states, state = [], {}
    for z in zs:
        state = rule.accumulate(state, z)
        states.append(state)
    for slack in (0.05, 0.5):
        halted_any = 0
        for n, st in enumerate(states[:-1]):
            halted = rule.halts(st, rule.depth - 1 - n, slack)
            gap = (st["a"][halted] - states[-1]["a"][halted]).abs()
            assert (gap <= slack + 1e-6).all()
            halted_any += int(halted.sum())
        assert halted_any > 100


def _tiny(task: str = "mrpc"):
    cfg = make_config("method=dact", f"task={task}", "model=tiny")
    method = get_method("dact")(cfg.method, cfg.task)
    torch.manual_seed(0)
    return method, method.build(load_backbone(cfg.model, 0), 0.1)


def test_the_ponder_cost_sends_gradient_to_every_halting_unit_towards_halting() -> None:
    method, model = _tiny()
    model.eval()  # no dropout: the two losses differ by the ponder term only
    batch = {"input_ids": torch.randint(5, 100, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1, 0])}
    rule = method.exit_rule(model)
    grads = []
    for tau in (0.0, 1.0):
        model.zero_grad()
        dact_loss(rule, tau, model, batch).backward()
        grads.append(torch.stack([step.halt.bias.grad[0] for step in model.exits]))
    ponder_grad = grads[1] - grads[0]
    assert (grads[1] != 0).all()
    assert (ponder_grad > 0).all()  # a larger halting logit raises p, hence the ponder cost: descent lowers it


def test_bad_knobs_fail_at_config_time() -> None:
    with pytest.raises(DynbenchError, match="tau must be finite and >= 0"):
        make_config("method=dact", "method.knobs=[-0.1]")
    with pytest.raises(DynbenchError, match="halting slacks must be finite and >= 0"):
        make_config("method=dact", "method.slack=[-1]")


def test_halted_examples_keep_their_full_depth_prediction_on_real_dev_data(tmp_path) -> None:
    """The guarantee the rule is built on, with the embedded MiniLM on real MRPC dev examples: confident answer
    modules and low halting values make many examples halt early, and each keeps the full-depth answer."""
    cfg = make_config("method=dact", "task=mrpc", "model=minilm")
    method = get_method("dact")(cfg.method, cfg.task)
    torch.manual_seed(0)
    model = method.build(load_backbone(cfg.model, 0), 0.1).eval()
    with torch.no_grad():
        for i, step in enumerate(model.exits):
            step.out.classifier.weight.mul_(200)
            step.halt.bias.fill_(-2.0 - i)
        model.head.classifier.weight.mul_(200)
    data = load_task(cfg.task, load_tokenizer(cfg.model), 128, str(GLUE), str(tmp_path / "cache"), limit_eval=48)
    rule = method.exit_rule(model)
    early = 0
    with torch.no_grad():
        for batch in data.loader(data.dev["validation"], 16):
            out = method.infer(model, batch, 0.0)
            full = rule.answer(full_depth(rule, model, batch), None)
            assert torch.equal(out.logits.argmax(-1), full.argmax(-1))
            early += int((out.trace.exit_layer < 6).sum())
    assert early >= 10


def test_a_run_records_every_pair_of_tau_and_slack_and_regression_works(config) -> None:
    records = run(config("method=dact", "task=rte", "eval.timing=false", "method.knobs=[0.0,0.5]",
                         "method.slack=[0.0,0.3]"))
    assert [(r["knob_value"], r["infer_knob_value"]) for r in records] == [(0.0, 0.0), (0.0, 0.3), (0.5, 0.0),
                                                                           (0.5, 0.3)]
    assert {r["knob"] for r in records} == {"tau"} and {r["infer_knob"] for r in records} == {"slack"}
    assert records[2]["stages"][0]["reused"]  # the plain fine-tune is trained once, for tau = 0
    again = run(config("method=dact", "task=rte", "eval.timing=false", "method.knobs=[0.0,0.5]",
                       "method.slack=[0.0,0.3]"))
    assert again == records  # nothing re-evaluated
    stsb = run(config("method=dact", "task=stsb", "eval.timing=false", "method.knobs=[0.1]", "method.slack=[0.25]"))
    assert set(stsb[0]["metrics"]) >= {"pearson", "spearman"}
