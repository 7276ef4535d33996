"""dynbench's training loop against the Hugging Face ``Trainer``: same model, data split, batch size,
max length, optimiser settings and dynamic padding, measured side by side in one process.

Part 1 (throughput): ``--rounds`` rounds of ``--steps`` optimiser steps on each side, a fresh model every
time, the side that goes first alternating; the median examples/s of each and their ratio. The two samplers
draw different batches, and with dynamic padding a batch costs what its longest example costs, so a short
run can favour either side by luck of the draw: each round uses its own shuffle seed (the bias averages out
over rounds), and the padded tokens each side processed are counted, to give the per-token ratio (the fair
comparison of the loops themselves) too. Part 2 (``--score``): the Trainer fine-tunes for the full budget
(``train.epochs``) and is scored on dev, to set beside the ``full`` record of the same config.

    python benchmarks/trainer_throughput.py --task mrpc --steps 40 --rounds 5 --score
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

from dynbench import metrics
from dynbench.backbone import _resolve, load_backbone
from dynbench.cli import load_config
from dynbench.loggers import Logger
from dynbench.method import get_method
from dynbench.records import git_commit
from dynbench.runner import load_data
from dynbench.train import _Run, epoch_loader
from methods.full import plain_finetune


def trainer_args(cfg, out: str, steps: int | None, total: int) -> TrainingArguments:
    t = cfg.train
    return TrainingArguments(
        output_dir=out, per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=cfg.eval.batch_size,
        learning_rate=t.lr, weight_decay=t.weight_decay, warmup_steps=round(t.warmup_fraction * total),
        max_grad_norm=t.max_grad_norm, num_train_epochs=t.epochs, max_steps=steps or -1, seed=cfg.seed,
        logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
    )


def run_trainer(cfg, data, steps: int | None) -> tuple[float, int, Trainer]:
    """Seconds of ``trainer.train()``, the padded tokens it trained on, and the trainer."""
    total = steps or math.ceil(len(data.train) / cfg.train.batch_size) * cfg.train.epochs
    model = AutoModelForSequenceClassification.from_pretrained(
        _resolve(cfg.model.pretrained), num_labels=cfg.task.num_labels, attn_implementation=cfg.model.attn_implementation)
    tokens = 0

    def count(module, args, kwargs):  # the forward's batches (accelerate's loader fetches one batch ahead)
        nonlocal tokens
        tokens += kwargs["input_ids"].numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=trainer_args(cfg, out, steps, total), train_dataset=data.train,
                          data_collator=DataCollatorWithPadding(data.tokenizer))
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start, tokens, trainer


def run_ours(cfg, data, steps: int) -> tuple[float, int]:
    """Seconds of dynbench's loop, and the padded tokens it trained on (its loader is seeded, so recounted)."""
    torch.manual_seed(cfg.seed)
    model = get_method("full")(cfg.method, cfg.task).build(load_backbone(cfg.model), None)
    stage = dataclasses.replace(plain_finetune(model.backbone.num_layers), predict=None)
    train_cfg = dataclasses.replace(cfg.train, max_steps=steps)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        _Run(model, stage, data, train_cfg, Path(out), cfg.seed, Logger(), False, cfg.eval.batch_size).run()
        seconds = time.perf_counter() - start
    batches = (batch for epoch in itertools.count()
               for batch in epoch_loader(data, cfg.train, cfg.seed, epoch))
    return seconds, sum(batch["input_ids"].numel() for batch in itertools.islice(batches, steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--score", action="store_true", help="also fine-tune with the Trainer for the full budget")
    ap.add_argument("--out", default="results/trainer_throughput/trainer_vs_dynbench.json")
    args = ap.parse_args()
    cfg = load_config(f"task={args.task}", "model=minilm")
    data = load_data(cfg)
    examples = args.steps * cfg.train.batch_size
    rates: dict[str, list[float]] = {"dynbench": [], "trainer": []}
    token_rates: dict[str, list[float]] = {"dynbench": [], "trainer": []}
    first: list[str] = []
    for r in range(args.rounds):
        round_cfg = dataclasses.replace(cfg, seed=cfg.seed + r)
        sides = {"dynbench": lambda: run_ours(round_cfg, data, args.steps),
                 "trainer": lambda: run_trainer(round_cfg, data, args.steps)[:2]}
        order = sorted(sides, reverse=r % 2 == 1)  # who goes first alternates: the machine's drift cancels
        first.append(order[0])
        for side in order:
            seconds, tokens = sides[side]()
            rates[side].append(examples / seconds)
            token_rates[side].append(tokens / seconds)
        print(f"round {r + 1}: dynbench {rates['dynbench'][-1]:.1f} ex/s {token_rates['dynbench'][-1]:.0f} tok/s, "
              f"trainer {rates['trainer'][-1]:.1f} ex/s {token_rates['trainer'][-1]:.0f} tok/s", flush=True)
    median = {k: statistics.median(v) for k, v in rates.items()}
    median_tokens = {k: statistics.median(v) for k, v in token_rates.items()}
    result = {
        "task": cfg.task.name, "model": cfg.model.name, "batch_size": cfg.train.batch_size,
        "max_length": cfg.model.max_length, "steps_per_round": args.steps, "rounds": args.rounds,
        "examples_per_s": median, "all_rounds": rates, "first_per_round": first, "git_commit": git_commit(),
        "padded_tokens_per_s": median_tokens, "all_rounds_tokens": token_rates,
        "threads": torch.get_num_threads(),
        "ratio_dynbench_over_trainer": median["dynbench"] / median["trainer"],
        "ratio_tokens_dynbench_over_trainer": median_tokens["dynbench"] / median_tokens["trainer"],
    }
    if args.score:
        seconds, _, trainer = run_trainer(cfg, data, None)
        split = next(iter(data.dev.values()))
        pred = trainer.predict(split)
        by_split = {"dev": metrics.split_metrics(cfg.task, np.asarray(pred.predictions), np.asarray(split["label"]))}
        score, flat = metrics.score(cfg.task, by_split)
        result["trainer_full_budget"] = {"epochs": cfg.train.epochs, "train_seconds": seconds, "score": score,
                                         "metrics": flat}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
