"""Shared fixtures: the real config composed through Hydra, pointed at a temporary folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch

from dynbench import exits
from dynbench.cli import load_config
from dynbench.config import RootConfig

ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("GLUE_DIR") or ROOT.parent / "shared" / "glue")


make_config = load_config


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., RootConfig]:
    """``config("task=rte")``: a tiny, smoke-sized config whose outputs land in ``tmp_path``."""

    def make(*overrides: str) -> RootConfig:
        return make_config("model=tiny", "train=smoke", f"data_dir={GLUE}", f"results_dir={tmp_path / 'results'}",
                           f"cache_dir={tmp_path / 'cache'}", "progress=false", "eval.repeats=1",
                           "eval.latency_examples=2", "eval.throughput_examples=8", *overrides)

    return make


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def random_batch(lengths: list[int], width: int | None = None) -> dict[str, torch.Tensor]:
    """Random token ids for rows of the given lengths, right-padded to ``width`` (default: the longest)."""
    width = width or max(lengths)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    ids = torch.randint(5, 100, mask.shape, generator=torch.Generator().manual_seed(1)) * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(len(lengths), dtype=torch.long)}


@torch.no_grad()
def spread_exit_heads(model: exits.MultiExitModel, batch: dict[str, torch.Tensor], num_labels: int) -> None:
    """Centre and scale every classifier of ``model`` on ``batch`` (std 1.5), so that confidences and answers
    vary across examples and layers (a random BERT's [CLS] barely depends on its input); DACT's halting units
    start low, so that its bound lets examples go at different layers."""
    zs, _ = exits.all_logits(model, batch)
    for i, z in enumerate(zs):
        step = model.head_at(i)[1]
        head = (step.out if hasattr(step, "halt") else step).classifier  # DACT: answer module and halting unit
        z = z[:, :num_labels]
        scale = 1.5 / (z - head.bias).std(0).mean()
        head.weight.mul_(scale)
        head.bias.copy_(-((z - head.bias) * scale).mean(0))
        if hasattr(step, "halt"):
            step.halt.bias.fill_(-2.5)
