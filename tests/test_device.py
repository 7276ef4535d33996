"""Placement (dynbench/device.py): the config's device is checked before anything loads, the CPU default
leaves every existing run identity as it was, clocks wait for the device, and (where a GPU exists) a run
on it gives the CPU run's predictions."""
from __future__ import annotations

import pytest
import torch

from dynbench.device import resolve
from dynbench.errors import DynbenchError
from dynbench.runner import _identity, run
from dynbench.timing import interleaved_medians
from tests.conftest import make_config


def test_a_malformed_device_fails_at_config_time() -> None:
    with pytest.raises(DynbenchError, match="device: 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        make_config("device=gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error_that_says_what_to_do() -> None:
    with pytest.raises(DynbenchError, match="torch sees no CUDA GPU here.*use device=cpu"):
        resolve("cuda")


def test_the_default_device_is_not_part_of_a_runs_identity_and_another_is() -> None:
    assert "device" not in _identity(make_config(), "data")  # records made before the field keep their ids
    assert _identity(make_config("device=cuda:1"), "data")["device"] == "cuda:1"


def test_the_clock_waits_for_the_device_around_each_timed_call() -> None:
    calls = []
    interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2,
                        sync=lambda: calls.append("sync"))
    assert calls == ["a", "b"] + ["sync", "a", "sync", "sync", "b", "sync"] * 2  # warm-up, then timed rounds


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["pabee", "trbert", "token_gates"])
def test_a_run_on_the_gpu_matches_the_cpu_run_and_trains_there(config, tmp_path, method) -> None:
    base = (f"method={method}", "task=rte", "train.max_steps=2", *([] if method == "pabee" else ["method.knobs=[0.1]"]))
    cpu = run(config(*base))
    moved = run(config(*base, "device=cuda"))  # its own records (device is in the identity), the CPU checkpoints
    assert all(r["train_reused"] for r in moved) and len(moved) == len(cpu)
    for c, g in zip(cpu, moved):
        assert g["score"] == pytest.approx(c["score"], abs=0.02)
        assert g["speedup_flops"] == pytest.approx(c["speedup_flops"], rel=0.02) and g["latency_ms_b1"] > 0
    trained = run(config(*base, "device=cuda", f"cache_dir={tmp_path / 'gpu-cache'}"))
    assert not any(r["train_reused"] for r in trained)
