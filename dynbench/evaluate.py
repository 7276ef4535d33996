"""Evaluates a trained model at each knob value: metrics, FLOPs from traces, and wall-clock against the
full model. The only evaluation loop; methods only answer ``sweep``/``infer``."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dynbench import metrics
from dynbench.config import EvalConfig
from dynbench.data import TaskData
from dynbench.flops import CostModel
from dynbench.method import Method
from dynbench.timing import interleaved_medians
from dynbench.trace import Trace


def _full_trace(lengths: torch.Tensor, num_layers: int) -> Trace:
    """What the full model runs on examples of these lengths: every layer, then its head."""
    return Trace(lengths, lengths[:, None].repeat(1, num_layers), {"head": lengths.clone()})


def _timing(method: Method, model: nn.Module, reference: nn.Module, data: TaskData, value: Any,
            cfg: EvalConfig) -> dict[str, float]:
    """Latency at batch 1 and throughput at the eval batch size, each interleaved with the full model."""
    split = next(iter(data.dev.values()))
    collate = data.loader(split, 1).collate_fn
    singles = [collate([split[i]]) for i in range(min(cfg.latency_examples, len(split)))]
    n_batch = min(cfg.throughput_examples, len(split))
    batches = list(data.loader(split.select(range(n_batch)), cfg.batch_size))
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, inputs in (("b1", singles), ("eval", batches)):
            t = interleaved_medians(
                {"method": lambda: [method.infer(model, b, value) for b in inputs],
                 "full": lambda: [reference(b) for b in inputs]},
                cfg.repeats,
            )
            n = len(singles) if name == "b1" else n_batch
            if name == "b1":
                out |= {"latency_ms_b1": 1000 * t["method"] / n, "latency_ms_b1_full": 1000 * t["full"] / n,
                        "speedup_latency_b1": t["full"] / t["method"]}
            else:
                out |= {"throughput_eval": n / t["method"], "throughput_eval_full": n / t["full"],
                        "speedup_throughput_eval": t["full"] / t["method"]}
    return out


def evaluate(method: Method, model: nn.Module, reference: nn.Module, data: TaskData, values: Sequence[Any],
             cfg: EvalConfig, progress: bool = False) -> list[dict[str, Any]]:
    """One result dict per knob value: score, metrics, FLOPs, layers, tokens, exits and timings."""
    model.eval()
    reference.eval()
    logits: dict[str, list[list[np.ndarray]]] = {s: [[] for _ in values] for s in data.dev}
    traces: list[list[Trace]] = [[] for _ in values]
    labels: dict[str, list[np.ndarray]] = {s: [] for s in data.dev}
    with torch.no_grad():
        for split, ds in data.dev.items():
            for batch in tqdm(data.loader(ds, cfg.batch_size), desc=f"eval {split}", disable=not progress, leave=False):
                labels[split].append(batch["labels"].numpy())
                for j, out in enumerate(method.sweep(model, batch, values)):
                    logits[split][j].append(out.logits.float().numpy())
                    traces[j].append(out.trace)
    cost, ref_cost = CostModel(model), CostModel(reference)
    results = []
    for j, value in enumerate(values):
        by_split = {
            s: metrics.split_metrics(data.task, np.concatenate(logits[s][j]), np.concatenate(labels[s])) for s in data.dev
        }
        score, flat = metrics.score(data.task, by_split)
        trace = Trace.cat(traces[j])
        flops = cost.flops(trace).mean().item()
        flops_full = ref_cost.flops(_full_trace(trace.embed_tokens, reference.backbone.num_layers)).mean().item()
        exits = torch.bincount(trace.exit_layer, minlength=reference.backbone.num_layers + 1)[1:]
        result = {
            "knob_value": value, "score": score, "metrics": flat, "flops": flops, "flops_full": flops_full,
            "speedup_flops": flops_full / flops, "layers_mean": trace.layers_run.double().mean().item(),
            "tokens_mean": trace.tokens_mean.mean().item(), "exit_counts": exits.tolist(),
            "eval_examples": len(trace.embed_tokens),
        }
        if cfg.timing:
            result |= _timing(method, model, reference, data, value, cfg)
        results.append(result)
    return results
