"""Where the token gates lose a task's score: the gate stage's drift of the weights, or the tokens the gates drop.

On the calibration split (held-out train: a diagnosis that looks at dev would be one more choice made on it), for
each lambda, the primary score of
- ``gated``: the gates model as the benchmark runs it (closed tokens leave the sequence);
- ``ungated``: the same weights without gates: how far the gate stage moved the backbone and head;
- ``plain_with_gates``: the plain fine-tune running the learned gates: what their choice of tokens costs a model
  that never trained with them;
- ``plain_random_same_counts``: the plain fine-tune keeping, in every example and layer, as many tokens as the
  gates kept, drawn at random (``[CLS]`` always kept): whether the learned choice beats chance;
- ``plain``: the plain fine-tune;
and the closed ranks per gated layer, the tokens entering each layer, and for sentence-pair tasks the share of
each sentence's tokens that reaches the last layer (the lesser of the two, averaged over examples): a choice
that keeps one sentence and drops the other leaves a pair task nothing to compare.

Loads the models from the stage cache (``python -m dynbench experiment=glue`` trains them; what is missing is
trained here first, under the benchmark's stage keys). ``--lambdas 0`` trains a gate stage with no cost term at
all: gates that still close there close from the task loss and the bi-modal term alone.

    python benchmarks/gates_diagnosis.py --task stsb --lambdas 0.0025 0
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from torch import nn

import methods.token_gates as token_gates
from dynbench import tokens
from dynbench.cli import load_config
from dynbench.config import TaskConfig
from dynbench.data import TaskData
from dynbench.live import LiveBatch
from dynbench.method import Batch
from dynbench.metrics import primary_score
from dynbench.records import atomic_write_text, git_commit
from dynbench.runner import load_data, trained_model


class _LastLive(LiveBatch):
    """A LiveBatch that leaves itself behind, so that the tokens still present after a forward can be read."""

    last: "_LastLive | None" = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _LastLive.last = self


def random_same_counts(model: nn.Module, batch: Batch, counts: torch.Tensor,
                       generator: torch.Generator) -> tuple[torch.Tensor, LiveBatch]:
    """``model`` on ``counts [b, L]`` tokens entering each layer of each example, chosen at random among those
    present (``[CLS]`` first, as every gate keeps it); the logits and the batch as it ended."""
    live = LiveBatch(model.backbone, batch)
    while not live.done:
        n = counts[live.rows, live.next_layer]
        if (n < live.mask.sum(1)).any():
            draw = torch.rand(live.mask.shape, generator=generator).masked_fill(~live.mask.bool(), -1.0)
            draw[:, 0] = 2.0
            live.keep_tokens(tokens.ranks(draw) < n[:, None])
        live.run_layer()
    return live.run_head("head", model.head), live


def sentence_shares(batch: Batch, live: LiveBatch) -> np.ndarray:
    """``[b]`` the lesser, over the pair's two sentences, of the share of its tokens present in ``live``."""
    types = batch["token_type_ids"] * batch["attention_mask"]
    present = torch.zeros_like(types).scatter_(1, live.positions, live.mask)[live.rows.argsort()]
    second = types.sum(1).clamp(min=1)
    first = (batch["attention_mask"].sum(1) - types.sum(1)).clamp(min=1)
    kept_first = (present * (1 - types)).sum(1) / first  # present tokens are never padding
    kept_second = (present * types).sum(1) / second
    return torch.minimum(kept_first, kept_second).numpy()


def scores(data: TaskData, task: TaskConfig, forwards: dict[str, Callable[[Batch], torch.Tensor]], batch_size: int) -> dict[str, float]:
    """The calibration score of each forward (a batch to its logits)."""
    logits: dict[str, list[np.ndarray]] = {k: [] for k in forwards}
    labels = []
    with torch.no_grad():
        for batch in data.loader(data.calib, batch_size):
            labels.append(batch["labels"].numpy())
            for name, forward in forwards.items():
                logits[name].append(forward(batch).float().numpy())
    y = np.concatenate(labels)
    return {k: primary_score(task, {"calibration": np.concatenate(v)}, {"calibration": y}) for k, v in logits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="stsb")
    ap.add_argument("--lambdas", nargs="+", type=float, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=None, help="default: results/gates_diagnosis/<task>_seed<seed>.json")
    ap.add_argument("--overrides", nargs="*", default=[],
                    help="more config overrides, e.g. model=tiny train=smoke for a dry run")
    args = ap.parse_args()
    common = ("experiment=glue", f"seed={args.seed}", f"task={args.task}", *args.overrides)
    cfg = load_config(*common, "method=token_gates")
    data = load_data(cfg)
    _, plain = trained_model(load_config(*common, "method=full"), data)
    pair = max(max(t) for t in data.calib["token_type_ids"]) == 1
    result = {"task": args.task, "seed": args.seed, "overrides": args.overrides, "split": "calibration",
              "examples": len(data.calib),
              "git_commit": git_commit(), "lambdas": {}}
    token_gates.LiveBatch = _LastLive  # the gated forward's batch, left behind for the sentence shares
    for lam in args.lambdas:
        _, model = trained_model(cfg, data, lam)
        plain_gated = SimpleNamespace(backbone=plain.backbone, head=plain.head, gates=model.gates)
        generator = torch.Generator().manual_seed(args.seed)
        tokens_in: list[torch.Tensor] = []
        shares: dict[str, list[np.ndarray]] = {"gated": [], "plain_with_gates": [], "plain_random_same_counts": []}

        def note(key: str, batch: Batch, live: LiveBatch) -> None:
            if pair:
                shares[key].append(sentence_shares(batch, live))

        def gated(batch: Batch) -> torch.Tensor:
            out = token_gates.gated_forward(model, batch, hard=True)
            tokens_in.append(out.trace.layer_tokens.double())
            note("gated", batch, _LastLive.last)
            return out.logits

        def plain_with_gates(batch: Batch) -> torch.Tensor:
            logits = token_gates.gated_forward(plain_gated, batch, hard=True).logits
            note("plain_with_gates", batch, _LastLive.last)
            return logits

        def plain_random(batch: Batch) -> torch.Tensor:
            counts = token_gates.gated_forward(model, batch, hard=True).trace.layer_tokens
            logits, live = random_same_counts(plain, batch, counts, generator)
            note("plain_random_same_counts", batch, live)
            return logits

        row: dict[str, object] = scores(data, cfg.task, {
            "gated": gated,
            "ungated": lambda b: model(b).logits,
            "plain_with_gates": plain_with_gates,
            "plain_random_same_counts": plain_random,
            "plain": lambda b: plain(b).logits,
        }, args.batch_size)
        row["closed_ranks_of_first_63"] = (model.gates.detach()[:, 1:64] < 0.5).sum(1).tolist()
        row["tokens_per_layer"] = [round(x, 2) for x in torch.cat(tokens_in).mean(0).tolist()]
        if pair:
            row |= {f"min_sentence_share_{k}": float(np.concatenate(v).mean()) for k, v in shares.items()}
        result["lambdas"][str(lam)] = row
        print(f"lambda {lam:g}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in row.items()), flush=True)
    out = Path(args.out or f"results/gates_diagnosis/{args.task}_seed{args.seed}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
