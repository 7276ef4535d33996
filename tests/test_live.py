"""The running batch (dynbench/live.py): what a layer left behind follows the rows that leave or repeat."""
from __future__ import annotations

import torch

from dynbench.backbone import load_backbone
from dynbench.live import LiveBatch
from tests.conftest import make_config, random_batch


def test_the_last_attention_follows_rows_that_leave_or_repeat_and_is_dropped_when_tokens_leave() -> None:
    torch.manual_seed(0)
    backbone = load_backbone(make_config("model=tiny").model, 0)
    live = LiveBatch(backbone, random_batch([5, 8, 3], width=8))
    with torch.no_grad():
        live.run_layer(attention=True)
    seen = live.attention.clone()  # [3, heads, 8, 8]
    live.keep_rows(torch.tensor([True, False, True]))  # the longest row leaves: width 8 -> 5
    assert torch.equal(live.attention, seen[[0, 2], :, :5, :5])
    live.repeat_rows(2)
    assert torch.equal(live.attention, seen[[0, 0, 2, 2], :, :5, :5])
    live.keep_tokens(torch.ones_like(live.mask, dtype=torch.bool))
    assert live.attention is None
