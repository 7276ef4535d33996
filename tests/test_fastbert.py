"""FastBERT (METHODS.md §4h): normalised entropy, the distillation loss, the teacher is full's fine-tune, speed
0, the student's attention from ``[CLS]`` and its cost. That stage 2 leaves backbone and teacher frozen is tested with the exit family
(``test_exits.py``: the exit-heads stage)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from dynbench import exits
from dynbench.backbone import load_backbone
from dynbench.errors import DynbenchError
from dynbench.flops import CostModel
from dynbench.heads import FastBertStudent
from dynbench.method import get_method
from dynbench.runner import run
from methods.fastbert import distillation_loss
from methods.full import final_output
from tests.conftest import make_config, random_batch


def _model() -> exits.MultiExitModel:
    cfg = make_config("method=fastbert", "model=tiny")
    torch.manual_seed(0)
    return get_method("fastbert")(cfg.method, cfg.task).build(load_backbone(cfg.model, 0), None).eval()


def test_uncertainty_and_the_speed_boundary() -> None:
    z = torch.tensor([[math.log(0.95), math.log(0.05)]])
    assert exits.entropy(z).item() == pytest.approx(0.1985, abs=1e-4)
    assert exits.normalised_entropy(z).item() == pytest.approx(0.286, abs=1e-3)
    rule = get_method("fastbert").rule
    assert rule.step({}, z, 0, 0.3)[1].item() and not rule.step({}, z, 0, 0.25)[1].item()


def test_kl_is_zero_when_students_copy_the_teacher(monkeypatch) -> None:
    teacher = torch.tensor([[1.0, -0.5], [0.2, 0.3]])
    monkeypatch.setattr(exits, "all_logits", lambda m, b: ([teacher.clone(), teacher.clone(), teacher], None))
    assert distillation_loss(None, {}).item() == pytest.approx(0.0, abs=1e-7)
    off = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    monkeypatch.setattr(exits, "all_logits", lambda m, b: ([off, teacher], None))
    p = teacher.softmax(-1)
    expected = (p * (p.log() - off.log_softmax(-1))).sum(-1).mean()
    assert distillation_loss(None, {}).item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_speed_and_regression_are_refused() -> None:
    with pytest.raises(DynbenchError, match=r"speed values must lie in \[0, 1\]"):
        make_config("method=fastbert", "method.knobs=[1.5]")
    cfg = make_config("method=fastbert", "task=stsb")
    with pytest.raises(DynbenchError, match="does not apply to the regression task"):
        get_method("fastbert")(cfg.method, cfg.task)


def test_a_run_trains_both_stages_and_stage_two_saves_only_the_students(config) -> None:
    records = run(config("method=fastbert", "task=rte", "eval.timing=false", "method.knobs=[0.0,1.0]"))
    slow, fast = records
    assert [s["name"] for s in slow["stages"]] == ["plain_finetune", "self_distillation"]
    assert slow["layers_mean"] == 2 and fast["layers_mean"] == 1  # u < 1 always holds... unless p is uniform
    cache = Path(config().cache_dir) / "stages"
    s1 = load_file(str(cache / slow["stages"][0]["key"] / "model.safetensors"))
    s2 = load_file(str(cache / slow["stages"][1]["key"] / "model.safetensors"))
    assert s2 and all(k.startswith("exits.") for k in s2)
    assert s1 and all(k.startswith(("backbone.", "head.")) for k in s1)


def test_the_teacher_is_the_full_models_fine_tune_and_speed_zero_scores_what_full_scores(config) -> None:
    [full] = run(config("method=full", "task=rte", "eval.timing=false"))
    [slow] = run(config("method=fastbert", "task=rte", "eval.timing=false", "method.knobs=[0.0]"))
    teacher, students = slow["stages"]
    assert teacher["key"] == full["stages"][0]["key"] and teacher["reused"] and not students["reused"]
    assert slow["score"] == full["score"] and slow["flops"] > full["flops"]  # every student ran, none let go


def test_speed_zero_gives_the_teachers_answers_even_after_a_certain_student() -> None:
    """A student whose distribution is one-hot in float32 has u = 0 exactly: ``u < speed`` keeps every example
    to the teacher at speed 0 (``u <= speed`` would let it go at layer 1)."""
    model = _model()
    with torch.no_grad():
        model.exits[0].classifier.weight.zero_()
        model.exits[0].classifier.bias.copy_(torch.tensor([100.0, -100.0]))
    batch = random_batch([9, 5, 2])
    cfg = make_config("method=fastbert")
    method = get_method("fastbert")(cfg.method, cfg.task)
    with torch.no_grad():
        zero, half = method.infer(model, batch, 0.0), method.infer(model, batch, 0.5)
        teacher = final_output(model, batch)
    assert half.trace.layers_run.tolist() == [1, 1, 1]  # the student is as certain as can be
    assert zero.trace.layers_run.tolist() == [2, 2, 2]
    assert torch.equal(zero.logits, teacher.logits)


def _attention_from_every_position(student: FastBertStudent, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference's student: self-attention for every position (SDPA here), then the first position's."""
    x = torch.tanh(student.down(h))
    q, k, v = (f(x).unflatten(-1, (student.heads, -1)).transpose(1, 2) for f in (student.query, student.key, student.value))
    ctx = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool()[:, None, None, :])
    x = student.out(ctx.transpose(1, 2).flatten(2))
    return student.classifier(torch.tanh(student.dense(x[:, 0])))


def test_the_student_attending_from_cls_only_gives_what_full_attention_gives() -> None:
    student = _model().exits[0]
    with torch.no_grad():
        for p in student.parameters():
            p.normal_(0, 0.3)  # weights far from BERT's 0.02 init: outputs of order 1 and peaked attention
    h = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(0))
    mask = random_batch([10, 6, 1])["attention_mask"]
    with torch.no_grad():
        torch.testing.assert_close(student(h, mask), _attention_from_every_position(student, h, mask))


def test_the_students_cost_is_linear_in_the_tokens() -> None:
    """Down-projection, keys and values on every token and one attention row: ``2nd·w + 4n·w² + 4n·w`` (d = 32
    here, width w = 128), plus a constant; no n² term."""
    constant, linear, quadratic = CostModel(_model()).head("exits.0").tolist()
    assert quadratic == 0 and linear == 2 * 32 * 128 + 4 * 128 ** 2 + 4 * 128
    assert constant == 3 * 2 * 128 ** 2 + 2 * 128 * 2  # query, output projection, dense; classifier (C = 2)
