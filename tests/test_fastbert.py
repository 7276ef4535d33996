"""FastBERT (METHODS.md §4h): normalised entropy, the distillation loss, the frozen teacher, speed 0."""
from __future__ import annotations

import math

import pytest
import torch

from dynbench import exits
from dynbench.errors import DynbenchError
from dynbench.method import get_method
from dynbench.runner import run
from methods.fastbert import distillation_loss
from tests.conftest import make_config


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


def test_distillation_freezes_backbone_and_teacher_and_speed_zero_is_the_teacher(config) -> None:
    records = run(config("method=fastbert", "task=rte", "eval.timing=false", "method.knobs=[0.0,1.0]"))
    slow, fast = records
    assert [s["name"] for s in slow["stages"]] == ["plain_finetune", "self_distillation"]
    assert slow["layers_mean"] == 2 and fast["layers_mean"] == 1  # u < 1 always holds... unless p is uniform
    from safetensors.torch import load_file
    from pathlib import Path

    cache = Path(config().cache_dir) / "stages"
    s1 = load_file(str(cache / slow["stages"][0]["key"] / "model.safetensors"))
    s2 = load_file(str(cache / slow["stages"][1]["key"] / "model.safetensors"))
    assert set(s2) == {k for k in s2 if k.startswith("exits.")}  # stage 2 saved (changed) only the students
    assert all(k.startswith(("backbone.", "head.")) for k in s1)
