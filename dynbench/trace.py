"""The per-example compute trace: what really ran, from which FLOPs are computed (flops.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Trace:
    """``embed_tokens [B]``: each example's length; ``layer_tokens [B, L]``: tokens that entered layer l
    (0 where it did not run); ``head_tokens``: for each head (by module path), tokens present when it ran."""

    embed_tokens: torch.Tensor
    layer_tokens: torch.Tensor
    head_tokens: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def empty(cls, lengths: torch.Tensor, num_layers: int) -> "Trace":
        lengths = lengths.detach().long().cpu()
        return cls(lengths, torch.zeros(len(lengths), num_layers, dtype=torch.long))

    def note_head(self, name: str, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        if name not in self.head_tokens:
            self.head_tokens[name] = torch.zeros_like(self.embed_tokens)
        self.head_tokens[name][rows.cpu()] = tokens.detach().long().cpu()

    @property
    def layers_run(self) -> torch.Tensor:
        """``[B]`` number of layers each example went through."""
        return (self.layer_tokens > 0).sum(1)

    @property
    def tokens_mean(self) -> torch.Tensor:
        """``[B]`` mean number of tokens per layer run (the length itself when no token is dropped)."""
        return self.layer_tokens.sum(1).double() / self.layers_run.clamp(min=1)

    @property
    def exit_layer(self) -> torch.Tensor:
        """``[B]`` 1-based index of the last layer that ran (0: none)."""
        ran = self.layer_tokens > 0
        idx = torch.arange(1, ran.shape[1] + 1).expand_as(ran)
        return (idx * ran).max(1).values

    def padded_slots(self) -> int:
        """Token slots that ran if this trace is one batch padded to its longest row, as the eval loader pads:
        per layer, the rows that ran it times the longest of them (rows and tokens that left are trimmed,
        padding up to the longest remaining row is not)."""
        ran = self.layer_tokens > 0
        return int((ran.sum(0) * self.layer_tokens.max(0).values).sum())

    def first(self, n: int) -> "Trace":
        """The trace of the first ``n`` examples."""
        return self.select(slice(None, n))

    def select(self, index: slice | torch.Tensor) -> "Trace":
        """The trace of the examples at ``index`` (a slice, or positions)."""
        return Trace(self.embed_tokens[index], self.layer_tokens[index],
                     {k: v[index] for k, v in self.head_tokens.items()})

    def repeat(self, copies: int) -> "Trace":
        """Every example's trace ``copies`` times in a row (the trace of the input repeated that way)."""
        return Trace(self.embed_tokens.repeat_interleave(copies), self.layer_tokens.repeat_interleave(copies, 0),
                     {k: v.repeat_interleave(copies) for k, v in self.head_tokens.items()})

    @staticmethod
    def cat(traces: list["Trace"]) -> "Trace":
        names = sorted({n for t in traces for n in t.head_tokens})
        return Trace(
            torch.cat([t.embed_tokens for t in traces]),
            torch.cat([t.layer_tokens for t in traces]),
            {n: torch.cat([t.heads(n) for t in traces]) for n in names},
        )

    def heads(self, name: str) -> torch.Tensor:
        """``[B]`` tokens present when head ``name`` ran (0 for examples it did not run on)."""
        return self.head_tokens.get(name, torch.zeros_like(self.embed_tokens))

    def equal(self, other: "Trace") -> bool:
        """Same compute for every example (a head absent from one trace counts as never run)."""
        return (
            torch.equal(self.embed_tokens, other.embed_tokens)
            and torch.equal(self.layer_tokens, other.layer_tokens)
            and all(torch.equal(self.heads(n), other.heads(n)) for n in {*self.head_tokens, *other.head_tokens})
        )
