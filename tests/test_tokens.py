"""Token significance (dynbench/tokens.py, METHODS.md §1a): the attention each token received, on
hand-made attention, and ranks that follow the scores, not the positions."""
from __future__ import annotations

import torch

from dynbench import tokens


def test_attention_received_sums_the_other_present_queries_averaged_over_heads() -> None:
    # one row, 4 positions, the last is padding; two heads whose mean is `mean`
    mean = torch.tensor([[0.1, 0.2, 0.3, 0.4],
                         [0.5, 0.1, 0.4, 0.0],
                         [0.2, 0.6, 0.2, 0.0],
                         [0.9, 0.0, 0.0, 0.1]])
    attention = torch.stack([mean + 0.05, mean - 0.05])[None]  # [1, heads, query, key]
    mask = torch.tensor([[1, 1, 1, 0]])
    received = tokens.attention_received(attention, mask)
    # token 1: from queries 0 and 2 (not itself, not the padding query 3): 0.2 + 0.6
    # token 2: from queries 0 and 1: 0.3 + 0.4
    torch.testing.assert_close(received[0, 1:3], torch.tensor([0.8, 0.7]))
    assert received[0, 0] == float("inf") and received[0, 3] == float("-inf")  # [CLS] first, padding last
    # a query gated out (weight 0) no longer votes: token 1 then gets query 0's 0.2 only
    weighted = tokens.attention_received(attention, mask, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(weighted[0, 1:3], torch.tensor([0.2, 0.7]))


def test_ranks_follow_descending_scores_with_ties_in_input_order() -> None:
    scores = torch.tensor([[float("inf"), 0.1, 0.9, 0.5, 0.9, float("-inf")]])
    assert tokens.ranks(scores).tolist() == [[0, 4, 1, 3, 2, 5]]
