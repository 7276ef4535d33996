"""Classifier heads read from the hidden states of a layer. Shared here so methods do not copy them."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from dynbench.backbone import Backbone, additive_mask


def _linear(d_in: int, d_out: int, std: float) -> nn.Linear:
    """A Linear initialised as transformers initialises BERT heads (normal(0, std), zero bias)."""
    layer = nn.Linear(d_in, d_out)
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


class PoolerHead(nn.Module):
    """The backbone's pooling (``Backbone.pool``: the pretrained pooler on ``[CLS]``, or the mean over the tokens
    present), dropout, then Linear(d → C).

    The pooler is borrowed, not owned, so several heads can share it (METHODS.md §0.1
    ``linear_shared_pooler``) while the state dict holds it once, under ``backbone``; a mean-pooled backbone
    has no pooler to share, and the head starts at its dropout.
    """

    def __init__(self, backbone: Backbone, num_labels: int) -> None:
        super().__init__()
        self.pool = backbone.pool  # a bound method: not registered as a submodule
        cfg = backbone.config
        self.dropout = nn.Dropout(getattr(cfg, "classifier_dropout", None) or cfg.hidden_dropout_prob)
        self.classifier = _linear(backbone.hidden_size, num_labels, cfg.initializer_range)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(h, mask)))


class OwnPoolerHead(nn.Module):
    """Its own pooler (dense + tanh, initialised as a copy of the backbone's) on the backbone's summary of the
    sequence (``Backbone.summary``: ``[CLS]``, or the mean over the tokens present), then dropout and
    Linear(d → C) (METHODS.md §0.1 ``own_pooler``: DeeBERT's off-ramps)."""

    def __init__(self, backbone: Backbone, num_labels: int) -> None:
        super().__init__()
        cfg = backbone.config
        self.summary = backbone.summary  # a bound method: not registered as a submodule
        self.pooler = copy.deepcopy(backbone.pooler_dense())
        self.dropout = nn.Dropout(getattr(cfg, "classifier_dropout", None) or cfg.hidden_dropout_prob)
        self.classifier = _linear(backbone.hidden_size, num_labels, cfg.initializer_range)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.tanh(self.pooler(self.summary(h, mask)))))


class FastBertStudent(nn.Module):
    """FastBERT's classifier (METHODS.md §0.1 ``fastbert_student``, as in the authors' code): Linear(d → 128)
    + tanh on every token, 2-head self-attention in 128 dims, ``[CLS]``, Linear + tanh, Linear(128 → C).

    The authors' code attends from every position and then keeps the first; only ``[CLS]``'s row is ever
    read, so only its query, attention row and output projection run here (keys and values still cover every
    token present). The outputs are the same, and the cost, counted from what runs, is linear in n: without
    the ``512·n²`` of the other rows that METHODS.md §4 counts. The row is written out as matmuls so that
    FlopCounterMode counts it.
    """

    def __init__(self, backbone: Backbone, num_labels: int, width: int = 128, heads: int = 2) -> None:
        super().__init__()
        cfg = backbone.config
        std = cfg.initializer_range
        self.heads = heads
        self.down = _linear(backbone.hidden_size, width, std)
        self.query, self.key, self.value, self.out = (_linear(width, width, std) for _ in range(4))
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)
        self.dense = _linear(width, width, std)
        self.classifier = _linear(width, num_labels, std)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        return x.view(b, t, self.heads, w // self.heads).transpose(1, 2)  # [B, heads, T, w/heads]

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.down(h))
        q = self._split(self.query(x[:, :1]))  # [B, heads, 1, w/heads]: [CLS]'s query only
        k, v = self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + additive_mask(mask, x.dtype)
        ctx = self.dropout(scores.softmax(-1)) @ v  # [B, heads, 1, w/heads]
        cls = self.out(ctx.transpose(1, 2).reshape(len(x), -1))
        return self.classifier(torch.tanh(self.dense(cls)))


class DactHead(nn.Module):
    """DACT's step after one layer (METHODS.md §0.1 ``dact``): an ``OwnPoolerHead`` for the intermediate answer
    and a halting unit Linear(d → 1) on the backbone's summary of the sequence (``[CLS]``, or the mean over
    the tokens present). Returns ``[b, C + 1]``: the answer's logits, then the halting logit (the halting value
    is its sigmoid). The bias starts at 0, h ≈ 0.5, as in DACT-MAC."""

    def __init__(self, backbone: Backbone, num_labels: int) -> None:
        super().__init__()
        self.summary = backbone.summary  # a bound method: not registered as a submodule
        self.out = OwnPoolerHead(backbone, num_labels)
        self.halt = _linear(backbone.hidden_size, 1, backbone.config.initializer_range)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.out(h, mask), self.halt(self.summary(h, mask))], dim=-1)
