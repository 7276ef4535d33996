"""One run: a method on a task, model and seed. Trains (or reuses) each model, evaluates every knob value
not yet recorded, and appends one record per knob value to the run's records file."""
from __future__ import annotations

import dataclasses
import logging
import random
import resource
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from dynbench.backbone import load_backbone, load_tokenizer
from dynbench.config import RootConfig
from dynbench.data import TaskData, load_task
from dynbench.device import describe, resolve
from dynbench.evaluate import evaluate
from dynbench.loggers import Logger, make_logger
from dynbench.method import Method, get_method
from dynbench.records import RecordFile, git_commit, git_dirty, stable_hash
from dynbench.train import StageResult, train_stages

log = logging.getLogger(__name__)

# printed at the end of a run, in this order (README: "What a run prints")
SUMMARY_COLUMNS = ["knob_value", "infer_knob_value", "score", "flops", "speedup_flops", "layers_mean", "tokens_mean",
                   "latency_ms_b1", "speedup_latency_b1", "throughput_eval", "speedup_throughput_eval"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# fields added after records and checkpoints existed, left out of keys at their default, so that existing run
# identities, budget hashes and cached stages stay valid: either the default behaves as before the field
# existed, or every method whose outputs it changes went up a version (followup_epochs: the methods with a
# follow-up stage, whose stage signatures and records carry the version)
_NEUTRAL_TRAIN = {"train_subset": None, "followup_epochs": 3.0}
_NEUTRAL_ROOT = {"device": "cpu"}


def _without_neutral(fields: dict[str, Any], neutral: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if not (k in neutral and v == neutral[k])}


def _budget(cfg: RootConfig) -> dict[str, Any]:
    """The training config as it enters keys: less ``threads`` (speed; the last bits of results too, see
    ``use_threads``, but a key per thread count would retrain everything per machine) and neutral late fields."""
    return _without_neutral({k: v for k, v in dataclasses.asdict(cfg.train).items() if k != "threads"}, _NEUTRAL_TRAIN)


def _task(cfg: RootConfig) -> dict[str, Any]:
    """The task as it enters keys: less its recipe, which enters as the training config it fills in (so a run
    that set the same budget by hand, before the recipe was frozen, keeps its identity and checkpoints)."""
    return {k: v for k, v in dataclasses.asdict(cfg.task).items() if k != "recipe"}


def _identity(cfg: RootConfig, data_source: str) -> dict[str, Any]:
    """What determines a run's results: the config less paths, cosmetics and knob grids (each record is one
    knob point, whatever else the grid holds), plus the data's digest."""
    ident = _without_neutral(dataclasses.asdict(cfg), _NEUTRAL_ROOT)
    for key in ("results_dir", "cache_dir", "progress", "logger", "data_dir"):
        ident.pop(key)
    for key in type(cfg.method).grids:
        ident["method"].pop(key)
    return ident | {"task": _task(cfg), "train": _budget(cfg), "data": data_source}


def stage_key_base(cfg: RootConfig, data_source: str) -> dict[str, Any]:
    """What every stage's checkpoint key starts from: model, task, the data itself, seed and training budget."""
    return {"model": dataclasses.asdict(cfg.model), "task": _task(cfg), "data": data_source,
            "seed": cfg.seed, "train": _budget(cfg)}


def load_data(cfg: RootConfig) -> TaskData:
    """The task's data as a run sees it: the model's tokenizer and length, the config's limits and subset
    (benchmark scripts load it here too, so that they cannot drift from the runner)."""
    return load_task(cfg.task, load_tokenizer(cfg.model), cfg.model.max_length, cfg.data_dir, cfg.cache_dir,
                     cfg.train.limit_train, cfg.train.limit_eval, cfg.train.train_subset)


def use_threads(cfg: RootConfig) -> None:
    """Torch's intra-op threads as ``train.threads`` sets them (None: torch's default). The count changes the
    order of float sums, and with it the last bits of what trains (a stage that amplifies them, as the token
    gates' does, can end elsewhere), so a script that trains stages runs them at a run's thread count too."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def trained_model(cfg: RootConfig, data: TaskData, knob_value: Any = None) -> tuple[Method, torch.nn.Module]:
    """The method's model for ``knob_value`` with every stage loaded from the cache, or trained where missing,
    under the keys a run uses (for benchmark scripts that time trained models outside a run); in eval mode."""
    use_threads(cfg)
    method = get_method(cfg.method.name)(cfg.method, cfg.task)
    model, _ = _build_and_train(cfg, method, data, knob_value, Logger())
    return method, model.eval()


def _build_and_train(cfg: RootConfig, method: Method, data: TaskData, knob_value: Any,
                     logger: Logger) -> tuple[torch.nn.Module, list[StageResult]]:
    """Build the method's model for ``knob_value`` and train (or load from the cache) each of its stages."""
    seed_everything(cfg.seed)
    model = method.build(load_backbone(cfg.model, cfg.seed), knob_value).to(resolve(cfg.device))
    started = time.perf_counter()
    stages = train_stages(model, method.stages(model, knob_value), data, cfg.train, stage_key_base(cfg, data.source),
                          cfg.cache_dir, cfg.seed, logger, cfg.progress, cfg.eval.batch_size)
    log.info("trained in %.1f s (%s)", time.perf_counter() - started,
             ", ".join(f"{s.name}: {'reused' if s.reused else 'trained'}" for s in stages))
    return model, stages


def _param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary_table(records: list[dict[str, Any]]) -> str:
    """The end-of-run table: knob value, primary score, each metric, FLOPs, speed-ups, layers, timings."""
    frame = pd.DataFrame(records)
    metrics = pd.DataFrame(list(frame["metrics"]), index=frame.index)
    columns = [c for c in SUMMARY_COLUMNS if c in frame]
    split = columns.index("score") + 1
    frame = pd.concat([frame[columns[:split]], metrics, frame[columns[split:]]], axis=1)
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def run(cfg: RootConfig, output_dir: Optional[Path] = None) -> list[dict[str, Any]]:
    """Run one configuration; returns all of its records (earlier ones included)."""
    use_threads(cfg)
    device = resolve(cfg.device)
    method = get_method(cfg.method.name)(cfg.method, cfg.task)
    seed_everything(cfg.seed)
    # the timing and FLOPs reference: the full model (its weights do not change its cost); loading it first
    # also checks max_length and the knob grid against the model before any data is read
    reference = get_method("full")(cfg.method, cfg.task).build(load_backbone(cfg.model, cfg.seed), None).to(device)
    grid = method.knob_values(reference.backbone.num_layers)
    data = load_data(cfg)
    ident = _identity(cfg, data.source)
    config_hash = stable_hash(ident)
    run_id = f"{cfg.method.name}-{cfg.task.name}-{cfg.model.name}-seed{cfg.seed}-{config_hash[:8]}"
    records = RecordFile(Path(cfg.results_dir) / f"{run_id}.jsonl")
    if stale := records.forget_other_versions(method.version):
        log.warning("%s: %d records of another version of %s are replaced as their points run again", run_id, stale,
                    cfg.method.name)
    groups = _pending(method, grid, records)
    if not groups:
        log.info("%s: every knob value is already recorded in %s", run_id, records.path)
    logger: Logger = make_logger(cfg.logger, output_dir or Path(cfg.results_dir) / run_id, ident, run_id)
    logger.log_config(ident)
    try:
        _train_and_evaluate(cfg, method, reference, data, groups, records, logger, run_id, config_hash, ident)
    finally:
        logger.finish()
    if records.records:
        log.info("%s %s on %s (%s), records in %s\n%s", cfg.method.name, cfg.task.name, cfg.model.name,
                 f"seed {cfg.seed}", records.path, summary_table(records.records))
    return records.records


def _pending(method: Method, grid: list[Any], records: RecordFile) -> list[tuple[Any, list[Any]]]:
    """What is left to do, as (training knob value, inference knob values to sweep on that model) pairs.

    A training knob gives one model per value, swept over the second knob's grid if the method has one (else
    evaluated once, with ``None``); an inference knob gives one model (value ``None``) swept over ``grid``."""
    if method.knob is not None and method.knob.at == "train":
        pairs = [(v, [e for e in method.infer_knob_values() if not records.has(v, e)]) for v in grid]
        return [(v, sweep) for v, sweep in pairs if sweep]
    sweep = [v for v in grid if not records.has(v)]
    return [(None, sweep)] if sweep else []


def _knob_fields(method: Method, train_value: Any, swept_value: Any) -> dict[str, Any]:
    """The record's knob fields: ``knob``/``knob_value`` name the main knob; a second knob adds ``infer_knob*``."""
    if method.knob is None:
        return {"knob": None, "knob_at": None, "knob_value": None}
    fields = {"knob": method.knob.name, "knob_at": method.knob.at,
              "knob_value": train_value if method.knob.at == "train" else swept_value}
    if method.infer_knob is not None:
        fields |= {"infer_knob": method.infer_knob.name, "infer_knob_value": swept_value}
    return fields


def _train_and_evaluate(cfg: RootConfig, method: Method, reference: torch.nn.Module, data: TaskData,
                        groups: list[tuple[Any, list[Any]]], records: RecordFile, logger: Logger, run_id: str,
                        config_hash: str, ident: dict[str, Any]) -> None:
    key_base = stage_key_base(cfg, data.source)
    progress = cfg.progress
    # the code that runs is the code imported at start: read the commit now, not when a record is written
    # (a long run outlives commits made beside it)
    provenance = {"git_commit": git_commit(), "git_dirty": git_dirty(), "machine": describe(resolve(cfg.device))}
    for train_value, sweep in groups:
        model, stages = _build_and_train(cfg, method, data, train_value, logger)
        for result in evaluate(method, model, reference, data, sweep, cfg.eval, progress, cfg.seed):
            record = {
                "run_id": run_id, "method": cfg.method.name, "method_version": method.version,
                "task": cfg.task.name, "model": cfg.model.name, "seed": cfg.seed,
                **result, **_knob_fields(method, train_value, result["knob_value"]),
                "train_seconds": sum(s.seconds for s in stages), "train_steps": sum(s.steps for s in stages),
                "train_examples": len(data.train),
                "train_reused": all(s.reused for s in stages),
                "train_peak_rss_mb": max((s.peak_rss_mb or 0.0 for s in stages), default=None) or None,
                "stages": [dataclasses.asdict(s) for s in stages],
                "params": _param_count(model), "params_full": _param_count(reference),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "limited": data.limited, **provenance,
                "config_hash": config_hash, "budget_hash": stable_hash(key_base), "config": ident,
            }
            records.add(record)
            logger.log_record(record)
