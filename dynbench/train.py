"""Runs a method's training stages with one shared loop, and caches each trained stage on disk.

A stage's checkpoint key is made of what determines it (model, task, seed, training config, and the
signatures of the stages up to it), never the method's name, so methods sharing a stage share its
checkpoint. One process at a time trains a stage (a lock per checkpoint), so processes sharing a cache train
it once. A killed stage resumes from its last finished epoch; a corrupt checkpoint is retrained.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from dynbench import metrics
from dynbench.config import TrainConfig
from dynbench.data import TaskData
from dynbench.device import device_of, to_device
from dynbench.errors import DynbenchError
from dynbench.locks import exclusive
from dynbench.loggers import Logger
from dynbench.method import Stage
from dynbench.records import atomic_write_text, stable_hash

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 2  # bump when a change to the shared training code would change what a stage learns
# 2: fused AdamW (the HF Trainer's default; on CPU its step is several times faster than the per-tensor loop)


@dataclass
class StageResult:
    name: str
    key: str
    seconds: float  # time the training took when it ran (also when reused from the cache now)
    steps: int
    reused: bool
    calib_score: Optional[float]
    peak_rss_mb: Optional[float]  # the training process's peak resident memory when the stage ended
    epoch_scores: Optional[list[float]] = None  # calibration score after each epoch (the best one is kept)


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _saved_state(model: nn.Module, stage: Stage) -> dict[str, torch.Tensor]:
    prefixes = tuple(stage.saves)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def _load_state(model: nn.Module, path: Path) -> None:
    state = load_file(str(path))
    unexpected = set(state) - set(model.state_dict())
    if unexpected:
        raise DynbenchError(f"{path} holds weights this model does not have: {sorted(unexpected)[:3]}")
    model.load_state_dict(state, strict=False)


def _load_checkpoint(model: nn.Module, folder: Path) -> Optional[dict[str, Any]]:
    """Load a finished stage; None if absent. A corrupt one is removed (and so retrained), never loaded."""
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if _file_sha(folder / "model.safetensors") != meta["sha256"]:
            raise ValueError("checksum mismatch")
        _load_state(model, folder / "model.safetensors")
        return meta
    except Exception as err:  # unreadable in any way: never load it
        log.warning("cached checkpoint %s is corrupt (%s); retraining it", folder, err)
        shutil.rmtree(folder)
        return None


def _param_groups(model: nn.Module, params: list[nn.Parameter], weight_decay: float, lr: float,
                  lr_scales: dict[str, float], no_decay: Sequence[str], head_lr_scale: float) -> list[dict]:
    """Weight decay on weights only, not on biases and LayerNorms (the BERT convention) nor on names starting
    with a prefix in ``no_decay``. Parameters outside ``backbone.`` (what a method adds: heads, exits, halting
    units) train at ``head_lr_scale`` × ``lr``, the one rule for parameters the checkpoint did not train;
    names starting with a prefix in ``lr_scales`` train at that multiple instead (token gates, TR-BERT's
    policies, whose lr sets how far they can travel)."""
    wanted = {id(p) for p in params}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if id(p) in wanted:
            plain = "bias" in name or "LayerNorm" in name or "layer_norm" in name or name.startswith(tuple(no_decay))
            default = 1.0 if name.startswith("backbone.") else head_lr_scale
            scale = next((v for k, v in lr_scales.items() if name.startswith(k)), default)
            groups.setdefault((plain, scale), []).append(p)
    order = sorted(groups, key=lambda key: (key[1] != 1.0, key[0], key[1]))  # decay, plain, then scaled groups
    return [{"params": groups[key], "weight_decay": 0.0 if key[0] else weight_decay, "lr": lr * key[1]}
            for key in order]


def optimizer_and_schedule(model: nn.Module, params: list[nn.Parameter], stage: Stage, cfg: TrainConfig,
                           total: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """Every stage's optimiser (AdamW over ``_param_groups``) and schedule (warm-up, then linear decay to 0
    over ``total`` steps): one place, so that tests of how far a parameter can move see what training does."""
    groups = _param_groups(model, params, cfg.weight_decay, cfg.lr, stage.lr_scales, stage.no_decay,
                           cfg.head_lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    return optimizer, get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_fraction * total), total)


@torch.no_grad()
def calib_score(model: nn.Module, stage: Stage, data: TaskData, batch_size: int) -> float:
    """The task's primary score of ``stage.predict`` on the calibration split (held out from train)."""
    was_training = model.training
    model.eval()
    logits, labels, device = [], [], device_of(model)
    for batch in data.loader(data.calib, batch_size):
        logits.append(stage.predict(model, to_device(batch, device)).float().cpu().numpy())
        labels.append(batch["labels"].numpy())
    model.train(was_training)
    return metrics.primary_score(data.task, {"calib": np.concatenate(logits)}, {"calib": np.concatenate(labels)})


def epoch_loader(data: TaskData, cfg: TrainConfig, seed: int, epoch: int) -> DataLoader:
    """The training batches of one epoch: a shuffle seeded by the run's seed and the epoch, so a resumed run
    (and anyone recounting what a run trained on) sees the same batches; grouped by length if asked."""
    return data.loader(data.train, cfg.batch_size, shuffle=True, seed=seed * 1000 + epoch,
                       group_by_length=cfg.group_by_length)


class _Restart(Exception):
    """The resume point was unreadable and is gone: train the stage from its start."""


def _rank(score: float) -> float:
    """Scores compared for the best epoch; NaN (e.g. Pearson of constant outputs) ranks below everything."""
    return -math.inf if math.isnan(score) else score


def stage_epochs(stages: Sequence[Stage], i: int, cfg: TrainConfig) -> float:
    """The epochs stage ``i`` trains: ``train.epochs``, except a follow-up stage (one after the first that
    keeps its last epoch, having no ``predict`` to stop early on): ``train.followup_epochs``, at most
    ``train.epochs``."""
    if i > 0 and stages[i].predict is None and cfg.followup_epochs is not None:
        return min(cfg.followup_epochs, cfg.epochs)
    return cfg.epochs


class _Run:
    """One stage's training loop: optimiser, schedule, epochs, best-epoch selection, resume points."""

    def __init__(self, model: nn.Module, stage: Stage, data: TaskData, cfg: TrainConfig, epochs: float,
                 folder: Path, seed: int, logger: Logger, progress: bool, eval_batch_size: int) -> None:
        self.model, self.stage, self.data, self.cfg, self.folder = model, stage, data, cfg, folder
        self.seed, self.logger, self.progress, self.eval_batch_size = seed, logger, progress, eval_batch_size
        self.params = stage.trainable(model)
        self.device = device_of(model)
        self.steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
        self.total = math.ceil(self.steps_per_epoch * epochs)
        if cfg.max_steps:
            self.total = min(self.total, cfg.max_steps)
        self.optimizer, self.scheduler = optimizer_and_schedule(model, self.params, stage, cfg, self.total)
        self.epochs = math.ceil(self.total / self.steps_per_epoch)

    def _save_resume_point(self, epoch: int, step: int, best: Optional[float], stale: int, seconds: float,
                           improved: bool, scores: list[float]) -> None:
        """Everything needed to resume after ``epoch``, written to a fresh folder (``state.json`` last, so a
        folder that has it is whole) that then replaces ``partial/``: a kill at any point leaves a whole resume
        point, the new or the old one, never a mix (``_promote`` finishes a replacement a kill interrupted)."""
        new, part = self.folder / "partial.new", self.folder / "partial"
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        state = _saved_state(self.model, self.stage)
        save_file(state, str(new / "model.safetensors"))
        if improved:
            save_file(state, str(new / "best.safetensors"))
        elif (part / "best.safetensors").exists():
            shutil.copyfile(part / "best.safetensors", new / "best.safetensors")
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, new / "optim.pt")
        atomic_write_text(new / "state.json", json.dumps(
            {"epoch": epoch, "step": step, "best": best, "stale": stale, "seconds": seconds, "scores": scores}))
        self._promote()

    def _promote(self) -> None:
        """Make a whole ``partial.new/`` the resume point ``partial/``. A kill can stop this anywhere (seen
        here: a job stopped during the last ``rmtree`` left a half-deleted ``partial.old/``, onto which the next
        epoch's rename failed), so every step tolerates what an earlier, interrupted call left behind."""
        new, part, old = self.folder / "partial.new", self.folder / "partial", self.folder / "partial.old"
        if not (new / "state.json").exists():
            return
        shutil.rmtree(old, ignore_errors=True)
        if part.exists():
            part.rename(old)
        new.rename(part)
        shutil.rmtree(old, ignore_errors=True)

    def _resume(self) -> tuple[int, int, Optional[float], int, float, list[float]]:
        self._promote()  # a whole new resume point that a kill kept from replacing the old one is the latest
        part = self.folder / "partial"
        if not (part / "state.json").exists():
            return 0, 0, None, 0, 0.0, []
        try:
            state = json.loads((part / "state.json").read_text())
            _load_state(self.model, part / "model.safetensors")
            opt = torch.load(part / "optim.pt", weights_only=True)
            self.optimizer.load_state_dict(opt["optimizer"])
            self.scheduler.load_state_dict(opt["scheduler"])
            torch.set_rng_state(opt["rng"])
        except Exception as err:  # unpickling and safetensors raise many types: unreadable is unreadable
            log.warning("resume point %s is unreadable (%s); training stage %s from the start", part, err,
                        self.stage.name)
            shutil.rmtree(part)
            raise _Restart from None
        log.info("stage %s: resuming after epoch %d", self.stage.name, state["epoch"] + 1)
        return (state["epoch"] + 1, state["step"], state["best"], state["stale"], state["seconds"],
                state.get("scores", []))

    def run(self) -> tuple[int, float, Optional[float], list[float]]:
        """Train; returns (steps, seconds, best calibration score, the score after each epoch). The best
        epoch's weights end in the model."""
        frozen = [p for p in self.model.parameters() if id(p) not in {id(q) for q in self.params}]
        for p in frozen:
            p.requires_grad_(False)
        torch.manual_seed(self.seed)
        improved = False
        try:
            start, step, best, stale, seconds, scores = self._resume()
            for epoch in range(start, self.epochs):
                began = time.perf_counter()
                self.model.train()
                loader = epoch_loader(self.data, self.cfg, self.seed, epoch)
                bar = tqdm(loader, desc=f"{self.stage.name} epoch {epoch + 1}/{self.epochs}", disable=not self.progress, leave=False)
                for batch in bar:
                    if step >= self.total:
                        break
                    loss = self.stage.loss(self.model, to_device(batch, self.device))
                    if not torch.isfinite(loss):
                        raise DynbenchError(
                            f"stage {self.stage.name}: the loss became {loss.item()} at step {step}; the last good "
                            f"epoch is kept in {self.folder / 'partial'}; lower train.lr or check the data")
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                    self.optimizer.step()
                    if self.stage.after_step is not None:
                        self.stage.after_step(self.model)
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                    self.logger.log_metrics({f"train/{self.stage.name}/loss": loss.item(),
                                             f"train/{self.stage.name}/lr": self.scheduler.get_last_lr()[0]}, step)
                seconds += time.perf_counter() - began
                improved = False
                if self.stage.predict is not None:
                    score = calib_score(self.model, self.stage, self.data, self.eval_batch_size)
                    self.logger.log_metrics({f"train/{self.stage.name}/calib_score": score}, step)
                    log.info("stage %s epoch %d: calibration score %.4f", self.stage.name, epoch + 1, score)
                    scores.append(score)
                    improved = best is None or _rank(score) > _rank(best)
                    best, stale = (score, 0) if improved else (best, stale + 1)
                patience = self.cfg.early_stopping_patience
                if step >= self.total or (patience and stale >= patience):
                    break  # finished: the caller saves the stage itself, no resume point needed
                self._save_resume_point(epoch, step, best, stale, seconds, improved, scores)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        best_path = self.folder / "partial" / "best.safetensors"
        if not improved and best_path.exists():  # an earlier epoch was better than the last one
            _load_state(self.model, best_path)
        return step, seconds, best, scores


def train_stages(model: nn.Module, stages: list[Stage], data: TaskData, cfg: TrainConfig, key_base: dict[str, Any],
                 cache_dir: str, seed: int, logger: Logger, progress: bool, eval_batch_size: int) -> list[StageResult]:
    """Train (or load from the cache) every stage in order; returns what each took."""
    results = []
    for i, stage in enumerate(stages):
        key = stable_hash({**key_base, "format": CHECKPOINT_FORMAT, "stages": [s.signature for s in stages[: i + 1]]})
        folder = Path(cache_dir) / "stages" / key
        # one process trains a stage, the others wait and load it; a killed trainer's lock goes with it, and
        # whoever takes the lock next resumes its last finished epoch
        with exclusive(folder, f"another process is training (or loading) stage {stage.name}"):
            meta = _load_checkpoint(model, folder)
            reused = meta is not None
            if reused:
                log.info("stage %s: reusing %s", stage.name, folder)
            else:
                folder.mkdir(parents=True, exist_ok=True)
                if stage.setup is not None:
                    stage.setup(model)  # before any resume point loads: the model is what the earlier stages made
                make = lambda: _Run(model, stage, data, cfg, stage_epochs(stages, i, cfg), folder,  # noqa: E731
                                    seed * 100 + i, logger, progress, eval_batch_size)
                initial = _saved_state(model, stage)
                try:
                    steps, seconds, best, scores = make().run()
                except _Restart:
                    model.load_state_dict(initial, strict=False)  # undo what the broken resume point loaded
                    steps, seconds, best, scores = make().run()
                save_file(_saved_state(model, stage), str(folder / "model.tmp"))
                (folder / "model.tmp").replace(folder / "model.safetensors")
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                meta = {"stage": stage.name, "signature": stage.signature, "steps": steps, "seconds": seconds,
                        "calib_score": best, "peak_rss_mb": peak, "epoch_scores": scores or None,
                        "sha256": _file_sha(folder / "model.safetensors")}
                atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1))
                shutil.rmtree(folder / "partial", ignore_errors=True)
        results.append(StageResult(stage.name, key, meta["seconds"], meta["steps"], reused, meta["calib_score"],
                                   meta.get("peak_rss_mb"), meta.get("epoch_scores")))
    return results
