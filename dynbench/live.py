"""The running batch: the rows and tokens still in play. Every layer and head run through it is written
to the trace, so no method can forget to count compute, and leaving rows or tokens really shrinks the
tensors the next layer runs on."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from dynbench.backbone import Backbone
from dynbench.trace import Trace


class LiveBatch:
    """Drives a backbone one layer at a time over a right-padded batch. ``rows`` maps live rows to input rows,
    ``positions [b, t]`` live tokens to input positions; ``mask`` marks the tokens present (1/0) and
    ``key_weights`` (soft token gates while training, None otherwise) scales each token's attention as a key."""

    def __init__(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> None:
        self.backbone = backbone
        self.mask = batch["attention_mask"]
        self.rows = torch.arange(len(self.mask), device=self.mask.device)
        self.positions = torch.arange(self.mask.shape[1], device=self.mask.device).expand_as(self.mask)
        self.key_weights: Optional[torch.Tensor] = None
        # the last layer's attention probabilities [b, heads, t, t], when asked for: they follow the rows that
        # leave or repeat, and are dropped when tokens leave (they were a distribution over tokens now gone)
        self.attention: Optional[torch.Tensor] = None
        self.trace = Trace.empty(self.mask.sum(1), backbone.num_layers)
        self.h = backbone.embed(batch["input_ids"], batch.get("token_type_ids"))
        self.next_layer = 0

    @property
    def done(self) -> bool:
        """True once every row has left or every layer has run."""
        return len(self.rows) == 0 or self.next_layer == self.backbone.num_layers

    def run_layer(self, attention: bool = False) -> torch.Tensor:
        """Run the next layer on the live rows and tokens; returns their hidden states ``[b, t, d]``. With
        ``attention``, the layer runs with eager attention and keeps its probabilities in ``self.attention``."""
        i = self.next_layer
        self.trace.layer_tokens[self.rows.cpu(), i] = self.mask.sum(1).cpu()
        mask = self.mask if self.key_weights is None else self.mask * self.key_weights
        if attention:
            self.h, self.attention = self.backbone.layer_with_attention(i, self.h, mask)
        else:
            self.h, self.attention = self.backbone.layer(i, self.h, mask), None
        self.next_layer += 1
        return self.h

    def run_head(self, name: str, head: nn.Module) -> torch.Tensor:
        """Apply ``head`` (the model's submodule at path ``name``) to the live rows: ``[b, C]``. It sees the tokens
        present as the next layer would, key weights included, so a pooling head weighs a gated token as the
        layers do."""
        self.trace.note_head(name, self.rows, self.mask.sum(1))
        return head(self.h, self.mask if self.key_weights is None else self.mask * self.key_weights)

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Rows where ``keep`` is False leave the batch: later layers run on fewer rows, and padding beyond
        the longest remaining row is cut."""
        self.h, self.mask, self.rows, self.positions = self.h[keep], self.mask[keep], self.rows[keep], self.positions[keep]
        width = int(self.mask.sum(1).max()) if len(self.rows) else 0  # sequences are right-padded: a slice, no copy
        self.h, self.mask, self.positions = self.h[:, :width], self.mask[:, :width], self.positions[:, :width]
        if self.key_weights is not None:
            self.key_weights = self.key_weights[keep, :width]
        if self.attention is not None:
            self.attention = self.attention[keep][..., :width, :width]

    def repeat_rows(self, copies: int) -> None:
        """Every live row becomes ``copies`` consecutive rows, as if the input had been repeated that way: the
        layers run so far are computed once and shared (TR-BERT's sampled copies of one example), and the
        trace counts them for every copy, since each copy's own forward would have run them."""
        self.h, self.mask, self.positions = (t.repeat_interleave(copies, 0)
                                             for t in (self.h, self.mask, self.positions))
        if self.key_weights is not None:
            self.key_weights = self.key_weights.repeat_interleave(copies, 0)
        if self.attention is not None:
            self.attention = self.attention.repeat_interleave(copies, 0)
        self.rows = (self.rows[:, None] * copies + torch.arange(copies, device=self.rows.device)).flatten()
        self.trace = self.trace.repeat(copies)

    def keep_tokens(self, keep: torch.Tensor) -> None:
        """Tokens where ``keep [b, t]`` is False leave their row's sequence for every later layer. The kept ones
        (always ``[CLS]``, never padding) are gathered in order into a sequence as long as the longest row's
        kept count; shorter rows are right-padded. Attention then costs the square of the kept length."""
        keep = keep.bool() & self.mask.bool()
        keep[:, 0] = True
        width = int(keep.sum(1).max())
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]  # kept first, in order
        self.mask = self.mask.new_zeros(self.mask.shape).masked_fill(keep, 1)
        self._take(order)
        self.attention = None

    def _take(self, index: torch.Tensor) -> None:
        """Keep the tokens at ``index [b, t']`` of every per-token tensor."""
        self.h = self.h.gather(1, index[..., None].expand(-1, -1, self.h.shape[-1]))
        self.mask, self.positions = self.mask.gather(1, index), self.positions.gather(1, index)
        if self.key_weights is not None:
            self.key_weights = self.key_weights.gather(1, index)
