"""Where a token-reduction method's batch-1 time goes. Interleaved at batch 1 in one process (median of
``--repeats``) over the first dev examples: the method's adaptive forward; the same token counts without
selecting (each example's kept count per layer, its first tokens kept, SDPA everywhere: no ranking, no policy);
and the full model. method/same-counts is what selecting costs; same-counts/full beside the FLOPs speed-up is
what the layers' costs that do not shrink with the tokens take (at batch 1 a layer reads all of its weights,
however few tokens it runs on).

Loads the trained models from the stage cache (``python -m dynbench experiment=glue`` trains them; what is
missing is trained here first, with the same stage keys).

    python benchmarks/token_overhead.py --method token_gates --knobs 0.01 0.02 --task mrpc
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from dynbench.cli import load_config
from dynbench.evaluate import _full_trace
from dynbench.flops import CostModel
from dynbench.live import LiveBatch
from dynbench.method import Batch, get_method
from dynbench.records import atomic_write_text, git_commit
from dynbench.runner import load_data, trained_model
from dynbench.timing import interleaved_medians


def same_counts(model: nn.Module, batch: Batch, counts: list[int]) -> torch.Tensor:
    """The model's backbone and head on ``counts[l]`` tokens entering layer l (the first ones), no selection."""
    live = LiveBatch(model.backbone, batch)
    while not live.done:
        n = counts[live.next_layer]
        if n < live.mask.shape[1]:
            keep = torch.zeros_like(live.mask, dtype=torch.bool)
            keep[:, :n] = True
            live.keep_tokens(keep)
        live.run_layer()
    return live.run_head("head", model.head)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="token_gates")
    ap.add_argument("--knobs", nargs="+", type=float, required=True)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None, help="default: results/glue/token_overhead_<method>_<task>.json")
    args = ap.parse_args()
    cfg = load_config(f"method={args.method}", f"task={args.task}", "model=minilm")
    data = load_data(cfg)
    split = next(iter(data.dev.values()))
    collate = data.loader(split, 1).collate_fn
    singles = [collate([split[i]]) for i in range(min(args.examples, len(split)))]
    full_cfg = load_config("method=full", f"task={args.task}", "model=minilm")
    _, full = trained_model(full_cfg, data)
    result = {"method": args.method, "task": args.task, "examples": len(singles), "repeats": args.repeats,
              "threads": torch.get_num_threads(), "git_commit": git_commit(), "knobs": {}}
    for knob in args.knobs:
        method, model = trained_model(cfg, data, knob)
        with torch.no_grad():
            traces = [method.infer(model, b, knob).trace for b in singles]
            counts = [t.layer_tokens[0].tolist() for t in traces]
            seconds = interleaved_medians({
                "method": lambda: [method.infer(model, b, knob) for b in singles],
                "same_counts": lambda: [same_counts(model, b, c) for b, c in zip(singles, counts)],
                "full": lambda: [full(b) for b in singles]}, args.repeats)
        depth = model.backbone.num_layers
        flops = sum(CostModel(model).flops(t).item() for t in traces)
        flops_full = sum(CostModel(full).flops(_full_trace(t.embed_tokens, depth)).item() for t in traces)
        row = {"ms_per_example": {k: 1000 * v / len(singles) for k, v in seconds.items()},
               "speedup_flops": flops_full / flops, "speedup_b1": seconds["full"] / seconds["method"],
               "speedup_b1_same_counts": seconds["full"] / seconds["same_counts"],
               "tokens_per_layer": torch.tensor(counts, dtype=torch.float64).mean(0).tolist()}
        result["knobs"][str(knob)] = row
        print(f"{args.method} {knob:g}: FLOPs {row['speedup_flops']:.2f}x, batch 1 {row['speedup_b1']:.2f}x "
              f"(ratio {row['speedup_b1'] / row['speedup_flops']:.2f}); same counts without selecting "
              f"{row['speedup_b1_same_counts']:.2f}x (ratio {row['speedup_b1_same_counts'] / row['speedup_flops']:.2f}); "
              f"ms per example {', '.join(f'{k} {v:.2f}' for k, v in row['ms_per_example'].items())}", flush=True)
    out = Path(args.out or f"results/glue/token_overhead_{args.method}_{args.task}.json")
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
