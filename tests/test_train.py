"""The shared training loop and the stage cache: reuse, sharing, resume, corruption, NaN, frozen parts."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from dynbench.backbone import load_backbone, load_tokenizer
from dynbench.data import load_task
from dynbench.errors import DynbenchError
from dynbench.loggers import Logger
from dynbench.method import Stage, get_method, task_loss
from dynbench.train import train_stages
from methods.full import plain_finetune


@pytest.fixture
def setup(config, tmp_path):
    cfg = config("task=rte", "train.max_steps=null", "train.epochs=2", "train.limit_train=16", "train.limit_eval=8")
    data = load_task(cfg.task, load_tokenizer(cfg.model), 64, cfg.data_dir, cfg.cache_dir, 16, 8)

    def build(method: str = "full", knob=None):
        torch.manual_seed(cfg.seed)
        return get_method(method)(cfg.method, cfg.task).build(load_backbone(cfg.model, cfg.seed), knob)

    def train(model, stages, cache: Path | None = None, train_cfg=None):
        return train_stages(model, stages, data, train_cfg or cfg.train, {"k": 1}, str(cache or tmp_path / "cache"),
                            cfg.seed, Logger(), False, 8)

    return cfg, build, train


def _dies_at_call(n: int):
    """A plain fine-tune loss that raises KeyboardInterrupt (a kill) on its ``n``-th call."""
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return task_loss(model(batch).logits, batch["labels"])

    return loss


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_deterministic_and_a_rerun_reuses_the_checkpoint(setup, tmp_path) -> None:
    _, build, train = setup
    first = build()
    [r1] = train(first, [plain_finetune(2)])
    assert not r1.reused and r1.steps == 4
    again = build()
    [r2] = train(again, [plain_finetune(2)])
    assert r2.reused and r2.seconds == r1.seconds and _same(_weights(first), _weights(again))
    fresh = build()
    train(fresh, [plain_finetune(2)], cache=tmp_path / "other")  # same config, same seed: same numbers
    assert _same(_weights(first), _weights(fresh))
    assert not _same(_weights(build()), _weights(first))  # training changed something


def test_full_and_truncate_at_full_depth_share_one_checkpoint(setup) -> None:
    _, build, train = setup
    full = build()
    [a] = train(full, get_method("full").stages(None, full, None))
    trunc = build("truncate", 2)
    [b] = train(trunc, get_method("truncate").stages(None, trunc, 2))
    assert b.reused and a.key == b.key
    short = build("truncate", 1)
    [c] = train(short, get_method("truncate").stages(None, short, 1))
    assert not c.reused and c.key != a.key


def test_a_killed_stage_resumes_and_ends_where_an_uninterrupted_one_ends(setup, tmp_path) -> None:
    _, build, train = setup
    dies_in_epoch_two = _dies_at_call(3)
    stage = dataclasses.replace(plain_finetune(2), loss=dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(build(), [stage])
    resumed = build()
    [r] = train(resumed, [plain_finetune(2)])
    assert r.steps == 4 and not r.reused
    straight = build()
    train(straight, [plain_finetune(2)], cache=tmp_path / "straight")
    assert _same(_weights(resumed), _weights(straight))


def test_a_kill_while_a_resume_point_is_replaced_loses_neither_it_nor_the_next(setup, tmp_path) -> None:
    """A kill between writing ``partial.new/`` and replacing ``partial/`` with it, after an earlier kill left a
    half-deleted ``partial.old/``: the resume takes the newest whole point and the next epochs save past the
    leftovers."""
    cfg, build, setup_train = setup
    three = dataclasses.replace(cfg.train, epochs=3)

    def train(model, stages, cache=None):
        return setup_train(model, stages, cache, three)

    with pytest.raises(KeyboardInterrupt):  # dies at the start of epoch 2: the resume point is epoch 1's
        train(build(), [dataclasses.replace(plain_finetune(3), loss=_dies_at_call(3))])
    [part] = list((tmp_path / "cache" / "stages").glob("*/partial"))
    shutil.copytree(part, tmp_path / "epoch1")
    with pytest.raises(KeyboardInterrupt):  # resumed, dies at the start of epoch 3: epoch 2's
        train(build(), [dataclasses.replace(plain_finetune(3), loss=_dies_at_call(3))])
    part.rename(part.parent / "partial.new")  # epoch 2's, written whole but not yet in place
    shutil.copytree(tmp_path / "epoch1", part)  # the point it was about to replace
    (part.parent / "partial.old").mkdir()
    (part.parent / "partial.old" / "optim.pt").write_bytes(b"left by a kill during the last rmtree")
    calls = {"n": 0}

    def counted(model, batch):
        calls["n"] += 1
        return task_loss(model(batch).logits, batch["labels"])

    resumed = build()
    [r] = train(resumed, [dataclasses.replace(plain_finetune(3), loss=counted)])
    assert calls["n"] == r.steps // 3  # only epoch 3 ran: the resume took epoch 2's point
    straight = build()
    train(straight, [plain_finetune(3)], cache=tmp_path / "straight")
    assert _same(_weights(resumed), _weights(straight))
    assert not list(part.parent.glob("partial*"))  # finished: no resume point is left behind


def test_a_corrupt_checkpoint_is_detected_and_retrained(setup, tmp_path) -> None:
    _, build, train = setup
    [r] = train(build(), [plain_finetune(2)])
    path = tmp_path / "cache" / "stages" / r.key / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    [again] = train(build(), [plain_finetune(2)])
    assert not again.reused


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_epoch(setup, tmp_path) -> None:
    _, build, train = setup
    calls = {"n": 0}

    def nan_in_epoch_two(model, batch):
        calls["n"] += 1
        loss = task_loss(model(batch).logits, batch["labels"])
        return loss * float("nan") if calls["n"] == 3 else loss

    with pytest.raises(DynbenchError, match=r"loss became nan at step 2; the last good epoch is kept"):
        train(build(), [dataclasses.replace(plain_finetune(2), loss=nan_in_epoch_two)])
    assert list((tmp_path / "cache" / "stages").glob("*/partial/model.safetensors"))


def test_frozen_parameters_do_not_change(setup) -> None:
    _, build, train = setup
    model = build()
    before = _weights(model)
    head_only = Stage("head_only", {"stage": "head_only"}, trainable=lambda m: list(m.head.parameters()),
                      loss=lambda m, b: task_loss(m(b).logits, b["labels"]))
    train(model, [head_only])
    after = _weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["head.classifier.weight"], after["head.classifier.weight"])
    assert all(p.requires_grad for p in model.parameters())  # frozen only during the stage


def test_an_unreadable_resume_point_restarts_the_stage_cleanly(setup, tmp_path) -> None:
    _, build, train = setup
    dies_in_epoch_two = _dies_at_call(3)
    with pytest.raises(KeyboardInterrupt):
        train(build(), [dataclasses.replace(plain_finetune(2), loss=dies_in_epoch_two)])
    [optim] = list((tmp_path / "cache" / "stages").glob("*/partial/optim.pt"))
    optim.write_bytes(b"truncated")
    restarted = build()
    [r] = train(restarted, [plain_finetune(2)])
    assert r.steps == 4
    straight = build()
    train(straight, [plain_finetune(2)], cache=tmp_path / "straight")
    assert _same(_weights(restarted), _weights(straight))


def test_the_best_epoch_on_the_calibration_split_is_kept(setup) -> None:
    _, build, train = setup
    snapshots = []

    def good_then_bad(model, batch):  # one calibration batch per epoch: perfect after epoch 1, wrong after 2
        snapshots.append(_weights(model))
        right = torch.nn.functional.one_hot(batch["labels"], 2).float()
        return right if len(snapshots) == 1 else 1 - right

    model = build()
    [r] = train(model, [dataclasses.replace(plain_finetune(2), predict=good_then_bad)])
    assert len(snapshots) == 2 and r.calib_score == 1.0
    assert _same(_weights(model), snapshots[0]) and not _same(snapshots[0], snapshots[1])
    assert r.epoch_scores == [1.0, 0.0]  # every epoch's calibration score, the record's learning curve


def test_parameters_the_checkpoint_did_not_train_get_the_head_lr(setup) -> None:
    """One rule for every method: what a method adds beside the backbone trains at ``head_lr_scale`` x lr
    (here the plain head, and DeeBERT's off-ramps); the backbone at lr."""
    from dynbench.train import optimizer_and_schedule

    cfg, build, _ = setup
    for model in (build(), build("deebert")):
        stage = Stage("all", {}, trainable=lambda m: list(m.parameters()), loss=lambda m, b: 0)
        optimizer, _ = optimizer_and_schedule(model, list(model.parameters()), stage, cfg.train, total=10)
        lr_of = {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}  # before warm-up
        for name, p in model.named_parameters():
            scale = 1.0 if name.startswith("backbone.") else cfg.train.head_lr_scale
            assert lr_of[id(p)] == pytest.approx(cfg.train.lr * scale), name
    assert cfg.train.head_lr_scale == 20.0


def test_length_grouped_batches_cover_every_example_once_with_little_padding(setup) -> None:
    """The HF Trainer's group_by_length sampler: an epoch is a permutation, batches hold similar lengths
    (less padding than a plain shuffle), and the same seed and epoch give the same batches."""
    from dynbench.train import epoch_loader

    cfg, _, _ = setup
    tokenizer = load_tokenizer(cfg.model)
    data = load_task(cfg.task, tokenizer, 64, cfg.data_dir, cfg.cache_dir, 96, 8)
    grouped, plain = (dataclasses.replace(cfg.train, batch_size=8, group_by_length=g) for g in (True, False))

    def batches(train_cfg, epoch):
        return [b["input_ids"] for b in epoch_loader(data, train_cfg, cfg.seed, epoch)]

    def padding(bs):
        return sum(int((b == tokenizer.pad_token_id).sum()) for b in bs)

    first = batches(grouped, 0)
    assert sum(len(b) for b in first) == len(data.train)
    assert all(torch.equal(a, b) for a, b in zip(first, batches(grouped, 0)))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, batches(grouped, 1)))
    assert padding(first) < 0.5 * padding(batches(plain, 0))


def test_a_follow_up_stage_trains_followup_epochs_and_a_stage_that_stops_early_trains_epochs(setup, tmp_path) -> None:
    """A stage after the first that keeps its last epoch (DeeBERT's off-ramps here) trains
    ``train.followup_epochs``, never more than ``train.epochs``; the first stage, and a later one with a
    calibration prediction to stop on, train ``train.epochs``; null restores ``train.epochs`` everywhere."""
    cfg, build, train = setup  # train.epochs = 2, 2 steps per epoch

    def steps(followup, later_predicts: bool = False) -> list[int]:
        model, method = build("deebert"), get_method("deebert")(cfg.method, cfg.task)
        stages = method.stages(model, None)
        assert stages[1].predict is None  # the off-ramps keep their last epoch
        if later_predicts:
            stages[1] = dataclasses.replace(stages[1], predict=lambda m, b: method.infer(m, b, 0.0).logits)
        train_cfg = dataclasses.replace(cfg.train, followup_epochs=followup)
        return [r.steps for r in train(model, stages, tmp_path / f"{followup}-{later_predicts}", train_cfg)]

    assert steps(1) == [4, 2]
    assert steps(5) == [4, 4]  # at most train.epochs
    assert steps(None) == [4, 4]
    assert steps(1, later_predicts=True) == [4, 4]
