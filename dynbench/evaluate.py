"""Evaluates a trained model at each knob value: metrics, FLOPs from traces, and wall-clock against the
full model. The only evaluation loop; methods only answer ``sweep``/``infer``."""
from __future__ import annotations

import statistics
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dynbench import metrics
from dynbench.config import EvalConfig
from dynbench.data import TaskData
from dynbench.device import device_of, synchronizer, to_device
from dynbench.flops import CostModel
from dynbench.method import Method
from dynbench.timing import interleaved_times
from dynbench.trace import Trace


def _full_trace(lengths: torch.Tensor, num_layers: int) -> Trace:
    """What the full model runs on examples of these lengths: every layer, then its head."""
    return Trace(lengths, lengths[:, None].repeat(1, num_layers), {"head": lengths.clone()})


def _side_by_side(method: Method, model: nn.Module, reference: nn.Module, value: Any, inputs: list,
                  repeats: int) -> tuple[float, float, list[float]]:
    """Median seconds of (method, full model) over ``inputs``, interleaved, and the lowest and highest of the
    rounds' speed-ups (full's time over the method's in the same round: the spread of the measurement)."""
    with torch.no_grad():
        t = interleaved_times({"method": lambda: [method.infer(model, b, value) for b in inputs],
                               "full": lambda: [reference(b) for b in inputs]}, repeats,
                              synchronizer(device_of(model)))
    ratios = [f / m for f, m in zip(t["full"], t["method"])]
    return statistics.median(t["method"]), statistics.median(t["full"]), [min(ratios), max(ratios)]


def _timing(method: Method, model: nn.Module, reference: nn.Module, data: TaskData, value: Any,
            cfg: EvalConfig) -> dict[str, float]:
    """Latency at batch 1 and throughput at the eval batch size, each against the full model."""
    split = next(iter(data.dev.values()))
    collate = data.loader(split, 1).collate_fn
    device = device_of(model)  # inputs wait there already: the clock times the model, not the copy
    singles = [to_device(collate([split[i]]), device) for i in range(min(cfg.latency_examples, len(split)))]
    n = min(cfg.throughput_examples, len(split))
    batches = [to_device(b, device) for b in data.loader(split.select(range(n)), cfg.batch_size)]
    one, one_full, one_range = _side_by_side(method, model, reference, value, singles, cfg.repeats)
    many, many_full, many_range = _side_by_side(method, model, reference, value, batches, cfg.repeats)
    return {
        "latency_ms_b1": 1000 * one / len(singles), "latency_ms_b1_full": 1000 * one_full / len(singles),
        "speedup_latency_b1": one_full / one, "speedup_latency_b1_range": one_range,
        "throughput_eval": n / many, "throughput_eval_full": n / many_full, "speedup_throughput_eval": many_full / many,
        "speedup_throughput_eval_range": many_range, "timing_repeats": cfg.repeats,
    }


def _predict(method: Method, model: nn.Module, data: TaskData, splits: dict[str, Any], values: Sequence[Any],
             batch_size: int, progress: bool) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray], list[Trace],
                                                       list[float]]:
    """For each knob value: the logits per split, the concatenated trace and the padding overhead at this
    batch size (token slots run over real tokens, − 1), from one ``sweep`` per batch; and the labels."""
    logits: dict[str, list[list[np.ndarray]]] = {s: [[] for _ in values] for s in splits}
    labels: dict[str, list[np.ndarray]] = {s: [] for s in splits}
    traces: list[list[Trace]] = [[] for _ in values]
    slots = [0] * len(values)
    device = device_of(model)
    with torch.no_grad():
        for split, ds in splits.items():
            for batch in tqdm(data.loader(ds, batch_size), desc=f"eval {split}", disable=not progress, leave=False):
                labels[split].append(batch["labels"].numpy())
                for j, out in enumerate(method.sweep(model, to_device(batch, device), values)):
                    logits[split][j].append(out.logits.float().cpu().numpy())
                    traces[j].append(out.trace)
                    slots[j] += out.trace.padded_slots()
    by_value = [{s: np.concatenate(logits[s][j]) for s in splits} for j in range(len(values))]
    merged = [Trace.cat(t) for t in traces]
    overhead = [n / max(1, int(t.layer_tokens.sum())) - 1 for n, t in zip(slots, merged)]
    return by_value, {s: np.concatenate(v) for s, v in labels.items()}, merged, overhead


def _metrics(data: TaskData, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {s: metrics.split_metrics(data.task, logits[s], labels[s]) for s in logits}


def head_scores(method: Method, model: nn.Module, data: TaskData, batch_size: int) -> Optional[list[float]]:
    """The dev score of every internal classifier (one per layer, the last included), each on every example;
    None for methods without per-layer heads."""
    device = device_of(model)
    logits: dict[str, list[list[np.ndarray]]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for split, ds in data.dev.items():
            for batch in data.loader(ds, batch_size):
                zs = method.head_logits(model, to_device(batch, device))
                if zs is None:
                    return None
                labels.setdefault(split, []).append(batch["labels"].numpy())
                for layer, z in enumerate(zs):
                    logits.setdefault(split, [[] for _ in zs])[layer].append(z.float().cpu().numpy())
    gold = {s: np.concatenate(v) for s, v in labels.items()}
    depth = len(next(iter(logits.values())))
    return [metrics.primary_score(data.task, {s: np.concatenate(v[layer]) for s, v in logits.items()}, gold)
            for layer in range(depth)]


def majority_score(data: TaskData) -> Optional[float]:
    """The dev score of always answering training's most frequent class (the floor an exit must clear to
    have learnt anything); None for regression, where a constant has no correlation."""
    if data.task.kind == "regression":
        return None
    train = np.asarray(data.train["label"])
    answer = np.bincount(train, minlength=data.task.num_labels).argmax()
    logits, labels = {}, {}
    for split, ds in data.dev.items():
        labels[split] = np.asarray(ds["label"])
        logits[split] = np.eye(data.task.num_labels)[np.full(len(ds), answer)]
    return metrics.primary_score(data.task, logits, labels)


def _fold_positions(data: TaskData, labels: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """Each dev fold's positions in the concatenated dev trace (splits follow each other in ``data.dev`` order)."""
    offsets = dict(zip(labels, np.cumsum([0] + [len(y) for y in labels.values()])))
    return [torch.as_tensor(np.concatenate([offsets[s] + idx for s, idx in fold.items()]))
            for fold in metrics.dev_folds(labels, data.task.split_seed)]


def evaluate(method: Method, model: nn.Module, reference: nn.Module, data: TaskData, values: Sequence[Any],
             cfg: EvalConfig, progress: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    """One result dict per knob value: dev score, its bootstrap interval (seeded by ``seed``) and metrics,
    FLOPs, layers, tokens, exits and timings; the score, its standard error and the FLOPs speed-up on each of
    two fixed halves of dev (choosing an operating point on one half, reporting it on the other); the score and
    FLOPs on the calibration split (held out from train); and each internal classifier's dev score."""
    started = time.perf_counter()
    model.eval()
    reference.eval()
    dev, dev_labels, dev_traces, padding = _predict(method, model, data, data.dev, values, cfg.batch_size, progress)
    calib, calib_labels, calib_traces, _ = _predict(method, model, data, {"calib": data.calib}, values, cfg.batch_size,
                                                    progress)
    cost, ref_cost = CostModel(model), CostModel(reference)
    depth = reference.backbone.num_layers
    per_layer = head_scores(method, model, data, cfg.batch_size)
    majority = majority_score(data) if per_layer is not None else None
    folds = _fold_positions(data, dev_labels)

    def flops(trace: Trace) -> tuple[float, float]:
        return cost.flops(trace).mean().item(), ref_cost.flops(_full_trace(trace.embed_tokens, depth)).mean().item()

    def speedup(trace: Trace) -> float:
        method_flops, full_flops = flops(trace)
        return full_flops / method_flops

    # wall time by what it is spent on (the benchmark's compute account): the passes above serve every value,
    # so each point carries an equal share of them
    shared = (time.perf_counter() - started) / max(len(values), 1)
    results = []
    for j, value in enumerate(values):
        point_started = time.perf_counter()
        score, flat = metrics.score(data.task, _metrics(data, dev[j], dev_labels))
        trace = dev_traces[j]
        method_flops, full_flops = flops(trace)
        calib_flops, calib_full = flops(calib_traces[j])
        result = {
            "knob_value": value, "score": score, "metrics": flat, "flops": method_flops, "flops_full": full_flops,
            "speedup_flops": full_flops / method_flops, "layers_mean": trace.layers_run.double().mean().item(),
            "tokens_mean": trace.tokens_mean.mean().item(), "padding_overhead_eval": padding[j],
            "tokens_per_layer": trace.layer_tokens.double().mean(0).tolist(),
            "exit_counts": torch.bincount(trace.exit_layer, minlength=depth + 1)[1:].tolist(),
            "eval_examples": len(trace.embed_tokens),
            "score_ci95": list(metrics.bootstrap_ci(data.task, dev[j], dev_labels, seed=seed)),
            "calib_score": metrics.primary_score(data.task, calib[j], calib_labels),
            "calib_speedup_flops": calib_full / calib_flops,
        }
        result["fold_scores"], result["fold_score_se"] = metrics.fold_scores(data.task, dev[j], dev_labels,
                                                                             data.task.split_seed)
        result["fold_speedup_flops"] = [speedup(trace.select(f)) for f in folds]
        if per_layer is not None:
            result["head_scores"], result["majority_score"] = per_layer, majority
        result["eval_seconds"] = shared + time.perf_counter() - point_started
        if cfg.timing:
            # wall-clock runs on the first examples of the first dev set: their FLOPs speed-ups, for ratios
            timing_started = time.perf_counter()
            result |= _timing(method, model, reference, data, value, cfg) | {
                "speedup_flops_b1_examples": speedup(trace.first(cfg.latency_examples)),
                "speedup_flops_eval_examples": speedup(trace.first(cfg.throughput_examples)),
            }
            result["timing_seconds"] = time.perf_counter() - timing_started
        results.append(result)
    return results
