"""Where a run computes: the config's ``device`` resolved once, batches moved next to the model, and the
wait that makes wall-clock honest on an accelerator (kernels run asynchronously there).

Data loaders and traces stay on the CPU; models and the batches they read go to the device.
"""
from __future__ import annotations

import os
import platform
from typing import Any, Callable

import torch
from torch import nn

from dynbench.errors import DynbenchError


def resolve(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` (already checked in form by the config), checked against this machine."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DynbenchError(f"device={name}: torch sees no CUDA GPU here (torch {torch.__version__}); use "
                                "device=cpu, or install a CUDA build of torch (make install TORCH_SPEC=torch)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DynbenchError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                f"numbered from 0")
    return device


def describe(device: torch.device) -> dict[str, Any]:
    """The machine a record's seconds were measured on: the benchmark runs in pieces on whatever machine each
    sitting gets, and an epoch or a timing ratio means little without it (seen here: the same MRPC epoch at one
    thread took 149 s on one 2-core machine and 508 s on another, AVX2 only)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    machine = {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
               "torch": torch.__version__}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    return machine


def device_of(model: nn.Module) -> torch.device:
    """The device a model's weights are on (every model here has weights)."""
    return next(model.parameters()).device


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on ``device`` (a no-op for tensors already there)."""
    return {k: v.to(device) for k, v in batch.items()}


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What to call before reading the clock: waits for queued kernels on CUDA, nothing on the CPU."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
