"""Classifier heads read from the hidden states of a layer. Shared here so methods do not copy them."""
from __future__ import annotations

from torch import nn
import torch

from dynbench.backbone import Backbone


def _linear(d_in: int, d_out: int, std: float) -> nn.Linear:
    """A Linear initialised as transformers initialises BERT heads (normal(0, std), zero bias)."""
    layer = nn.Linear(d_in, d_out)
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


class PoolerHead(nn.Module):
    """The backbone's pretrained pooler (``[CLS]`` → dense → tanh), dropout, then Linear(d → C).

    The pooler is borrowed, not owned, so several heads can share it (METHODS.md §0.1
    ``linear_shared_pooler``) while the state dict holds it once, under ``backbone``.
    """

    def __init__(self, backbone: Backbone, num_labels: int) -> None:
        super().__init__()
        self.pool = backbone.pool  # a bound method: not registered as a submodule
        cfg = backbone.config
        self.dropout = nn.Dropout(getattr(cfg, "classifier_dropout", None) or cfg.hidden_dropout_prob)
        self.classifier = _linear(backbone.hidden_size, num_labels, cfg.initializer_range)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(h)))
