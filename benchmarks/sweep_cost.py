"""What a one-pass knob sweep costs, as a ratio to one full-model evaluation of the same dev set.

Loads the benchmark's trained models (``experiment=glue``, ``--seed``) from the stage cache (``python -m
dynbench experiment=glue`` trains them; what is missing is trained here first, with the same stage keys), then
times, interleaved in one process (median of ``--repeats``): the full model over dev, and each exit method's
``sweep`` over dev with K = 10 and K = 20 knob values spread over its default grid.

    python benchmarks/sweep_cost.py --task mrpc
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dynbench.cli import load_config
from dynbench.runner import load_data, trained_model
from dynbench.timing import interleaved_medians


def trained(name: str, task: str, seed: int):
    cfg = load_config("experiment=glue", f"method={name}", f"task={task}", f"seed={seed}")
    data = load_data(cfg)
    return (*trained_model(cfg, data), data, cfg)


def spread(grid: list, k: int) -> list:
    """``k`` values over the range of ``grid`` (integers stay integers, repeating where the grid is short)."""
    if all(isinstance(v, int) for v in grid):
        return [grid[i] for i in np.linspace(0, len(grid) - 1, k).round().astype(int)]
    return [float(v) for v in np.linspace(min(grid), max(grid), k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--methods", nargs="+", default=["pabee", "deebert", "fastbert"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="default: results/glue/sweep_cost_<task>.json")
    args = ap.parse_args()
    full, full_model, data, cfg = trained("full", args.task, args.seed)
    batches = list(data.loader(data.dev["validation"], cfg.eval.batch_size))
    result = {"task": args.task, "seed": args.seed, "eval_batch_size": cfg.eval.batch_size,
              "dev_examples": len(data.dev["validation"]), "threads": torch.get_num_threads(), "methods": {}}
    # training needs gradients: train (or load) every model before timing under no_grad
    models = {name: trained(name, args.task, args.seed)[:2] for name in args.methods}
    with torch.no_grad():
        for name, (method, model) in models.items():
            grid = method.knob_values(model.backbone.num_layers)
            candidates = {"full": lambda: [full_model(b) for b in batches]}
            for k in (10, 20):
                knobs = spread(grid, k)
                candidates[f"sweep_k{k}"] = lambda knobs=knobs: [method.sweep(model, b, knobs) for b in batches]
            t = interleaved_medians(candidates, args.repeats)
            result["methods"][name] = {"seconds": t, **{f"ratio_k{k}": t[f"sweep_k{k}"] / t["full"] for k in (10, 20)}}
            print(name, json.dumps(result["methods"][name]), flush=True)
    out = Path(args.out or f"results/glue/sweep_cost_{args.task}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
