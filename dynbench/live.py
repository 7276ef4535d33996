"""The running batch: the rows and tokens still in play. Every layer and head run through it is written
to the trace, so no method can forget to count compute, and leaving rows really shrinks the tensors."""
from __future__ import annotations

import torch
from torch import nn

from dynbench.backbone import Backbone
from dynbench.trace import Trace


class LiveBatch:
    """Drives a backbone one layer at a time over a padded batch; ``rows`` maps live rows to input rows."""

    def __init__(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> None:
        self.backbone = backbone
        self.mask = batch["attention_mask"]
        self.rows = torch.arange(len(self.mask), device=self.mask.device)
        self.trace = Trace.empty(self.mask.sum(1), backbone.num_layers)
        self.h = backbone.embed(batch["input_ids"], batch.get("token_type_ids"))
        self.next_layer = 0

    @property
    def done(self) -> bool:
        """True once every row has left or every layer has run."""
        return len(self.rows) == 0 or self.next_layer == self.backbone.num_layers

    def run_layer(self) -> torch.Tensor:
        """Run the next layer on the live rows; returns their hidden states ``[b, t, d]``."""
        i = self.next_layer
        self.trace.layer_tokens[self.rows.cpu(), i] = self.mask.sum(1).cpu()
        self.h = self.backbone.layer(i, self.h, self.mask)
        self.next_layer += 1
        return self.h

    def run_head(self, name: str, head: nn.Module) -> torch.Tensor:
        """Apply ``head`` (the model's submodule at path ``name``) to the live rows: ``[b, C]``."""
        self.trace.note_head(name, self.rows, self.mask.sum(1))
        return head(self.h, self.mask)

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Rows where ``keep`` is False leave the batch: later layers run on fewer rows, and padding beyond
        the longest remaining row is cut (sequences are right-padded)."""
        self.h, self.mask, self.rows = self.h[keep], self.mask[keep], self.rows[keep]
        width = int(self.mask.sum(1).max()) if len(self.rows) else 0
        self.h, self.mask = self.h[:, :width], self.mask[:, :width]
