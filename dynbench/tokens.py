"""Ranking tokens by the attention they received (PoWER-BERT's significance, METHODS.md §1a), so that token
gates can decide per example which tokens go on. TR-BERT's policies read the hidden states instead. Removal
itself, for both, is ``LiveBatch.keep_tokens``.
"""
from __future__ import annotations

import torch


def attention_received(attention: torch.Tensor, mask: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """``[b, t]`` significance of each token: the attention it received from the other present tokens,
    averaged over heads (PoWER-BERT's score), each query counted with its soft weight if ``weights`` are
    given (so a token gated out while training does not vote, as it would not exist at inference);
    ``[CLS]`` scores +inf and padding -inf, so ``[CLS]`` ranks first and padding last."""
    present = mask.bool()
    votes = present.to(attention.dtype) if weights is None else present * weights.detach()
    probs = attention.mean(1) * votes[:, :, None]  # [b, query, key]
    received = probs.sum(1) - probs.diagonal(dim1=1, dim2=2)  # Σ_{j≠i} A[j, i]
    received = received.masked_fill(~present, float("-inf"))
    received[:, 0] = float("inf")
    return received


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """``[b, t]`` rank of each token by descending score (0 = most significant; ties keep input order)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return torch.argsort(order, dim=1)
