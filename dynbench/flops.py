"""FLOPs from a trace, through a cost model calibrated by PyTorch's ``FlopCounterMode`` on the real modules.

Each component (embeddings, every layer, every head) costs a polynomial of degree ≤ 2 in the tokens it
sees: linear layers give the n term, attention's scores and weighted values the n² term. The polynomial
is fitted exactly from counts at 1, 2 and 3 tokens, with eager attention (CPU SDPA counts as zero in
``FlopCounterMode``; METHODS.md §0.3). A FLOP is a multiply or an add (one multiply-add = 2 FLOPs).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dynbench.backbone import Backbone
from dynbench.device import device_of
from dynbench.trace import Trace

CALIBRATION_LENGTHS = (1, 2, 3)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that ``FlopCounterMode`` counts while ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _quadratic(costs: list[int]) -> torch.Tensor:
    """Coefficients ``[c0, c1, c2]`` of the quadratic through (1, f1), (2, f2), (3, f3)."""
    f1, f2, f3 = costs
    c2 = (f3 - 2 * f2 + f1) / 2
    c1 = f2 - f1 - 3 * c2
    return torch.tensor([f1 - c1 - c2, c1, c2], dtype=torch.float64)


def _evaluate(coef: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Cost at ``n`` tokens, 0 where the component did not run (n = 0)."""
    n = n.double()
    return torch.where(n > 0, coef[0] + coef[1] * n + coef[2] * n * n, torch.zeros_like(n))


class CostModel:
    """Per-component FLOPs of one model, calibrated once; ``flops(trace)`` gives FLOPs per example."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.backbone: Backbone = model.backbone
        self._heads: dict[str, torch.Tensor] = {}
        self._at = {"device": device_of(model)}  # calibration inputs go where the model is
        d, at = self.backbone.hidden_size, self._at
        self.embed = self._fit(lambda n: self.backbone.embed(torch.zeros(1, n, dtype=torch.long, **at)))
        self.layers = [
            self._fit(lambda n, i=i: self.backbone.layer(i, torch.randn(1, n, d, **at), torch.ones(1, n, **at)))
            for i in range(self.backbone.num_layers)
        ]

    def _fit(self, run: Callable[[int], object]) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.backbone.eager_attention():
                return _quadratic([count_flops(lambda: run(n)) for n in CALIBRATION_LENGTHS])
        finally:
            self.model.train(was_training)

    def head(self, name: str) -> torch.Tensor:
        """Cost coefficients of the head at module path ``name`` (calibrated on first use)."""
        if name not in self._heads:
            module, d, at = self.model.get_submodule(name), self.backbone.hidden_size, self._at
            self._heads[name] = self._fit(lambda n: module(torch.randn(1, n, d, **at), torch.ones(1, n, **at)))
        return self._heads[name]

    def layer_flops(self, i: int, n: int) -> float:
        return float(_evaluate(self.layers[i], torch.tensor([n]))[0])

    def flops(self, trace: Trace) -> torch.Tensor:
        """``[B]`` FLOPs per example: embeddings, every layer it entered, every head that ran on it."""
        total = _evaluate(self.embed, trace.embed_tokens)
        for i, coef in enumerate(self.layers):
            total = total + _evaluate(coef, trace.layer_tokens[:, i])
        for name, tokens in trace.head_tokens.items():
            total = total + _evaluate(self.head(name), tokens)
        return total
