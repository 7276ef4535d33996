"""dynbench's training loop against the Hugging Face ``Trainer``: same model, data split, batch size,
max length, optimiser settings and dynamic padding, measured side by side in one process.

Part 1 (throughput): ``--rounds`` rounds of ``--steps`` optimiser steps on each side (dynbench's loop as
configured, length-grouped batches by default; the Trainer as ``run_glue`` runs it; the Trainer with
``train_sampling_strategy="group_by_length"``, 4.x's ``group_by_length=True``, so that a gain is not only the
grouping), a fresh model every time, the order of the sides rotating; the median examples/s of each and the
ratios. The samplers draw different batches, and with dynamic padding a batch costs what its longest example
costs, so a short run can favour either side by luck of the draw: each round uses its own shuffle seed (the
bias averages out over rounds), and the padded tokens each side processed are counted, to give the per-token
ratio (the loops themselves, less what grouping saves) too. Part 2 (``--score``): the Trainer fine-tunes for
the full budget (``train.epochs``) and is scored on dev, to set beside the ``full`` record of the same config;
``--rounds 0`` skips part 1, to run part 2 alone into its own ``--out``.

    python benchmarks/trainer_throughput.py --task mrpc --steps 40 --rounds 5 --score
    python benchmarks/trainer_throughput.py --rounds 0 --score --out results/trainer_throughput/trainer_full_budget.json
    python benchmarks/trainer_throughput.py --rounds 0 --score --seed 2 \
        --out results/trainer_throughput/trainer_full_budget_seed2.json
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

DEFAULT_OUT = "results/trainer_throughput/trainer_vs_dynbench.json"


def trainer_args(cfg, out: str, steps: int | None, total: int, grouped: bool = False) -> TrainingArguments:
    t = cfg.train
    return TrainingArguments(
        output_dir=out, per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=cfg.eval.batch_size,
        learning_rate=t.lr, weight_decay=t.weight_decay, warmup_steps=round(t.warmup_fraction * total),
        max_grad_norm=t.max_grad_norm, num_train_epochs=t.epochs, max_steps=steps or -1, seed=cfg.seed,
        logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )


def run_trainer(cfg, data, steps: int | None, grouped: bool = False) -> tuple[float, int, Trainer]:
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
        trainer = Trainer(model=model, args=trainer_args(cfg, out, steps, total, grouped), train_dataset=data.train,
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
        _Run(model, stage, data, train_cfg, train_cfg.epochs, Path(out), cfg.seed, Logger(), False,
             cfg.eval.batch_size).run()
        seconds = time.perf_counter() - start
    batches = (batch for epoch in itertools.count()
               for batch in epoch_loader(data, cfg.train, cfg.seed, epoch))
    return seconds, sum(batch["input_ids"].numel() for batch in itertools.islice(batches, steps))


def throughput(rates: dict[str, list[float]], token_rates: dict[str, list[float]], first: list[str], steps: int,
               rounds: int, grouped: bool) -> dict:
    """Part 1's summary: the median examples and padded tokens per second of each side, and the ratios."""
    names = list(rates)
    median = {k: statistics.median(v) for k, v in rates.items()}
    median_tokens = {k: statistics.median(v) for k, v in token_rates.items()}
    # paired per round (the same shuffle seed and machine state), then the median
    paired = {other: statistics.median(a / b for a, b in zip(rates["dynbench"], rates[other]))
              for other in names[1:]}
    return {
        "steps_per_round": steps, "rounds": rounds,
        "examples_per_s": median, "all_rounds": rates, "first_per_round": first,
        "padded_tokens_per_s": median_tokens, "all_rounds_tokens": token_rates,
        "group_by_length": grouped,
        "ratio_dynbench_over_trainer": median["dynbench"] / median["trainer"],
        "ratio_tokens_dynbench_over_trainer": median_tokens["dynbench"] / median_tokens["trainer"],
        "ratio_dynbench_over_trainer_grouped": median["dynbench"] / median["trainer_grouped"],
        "ratio_tokens_dynbench_over_trainer_grouped": median_tokens["dynbench"] / median_tokens["trainer_grouped"],
        "paired_median_ratio": paired,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--rounds 0`` (the score only) must not overwrite the committed throughput file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--seed", type=int, default=1, help="the config's seed: the score's run; round r uses seed + r")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5, help="0: no throughput rounds (with --score: the score only)")
    ap.add_argument("--score", action="store_true", help="also fine-tune with the Trainer for the full budget")
    ap.add_argument("--out", default=None, help="the JSON to write (default, with rounds: " + DEFAULT_OUT + ")")
    args = ap.parse_args(argv)
    if args.rounds < 0:
        ap.error("--rounds must be 0 or more")
    if args.rounds == 0 and not (args.score and args.out and Path(args.out) != Path(DEFAULT_OUT)):
        ap.error("--rounds 0 measures the score only: pass --score and an --out of its own, so the committed "
                 "throughput file is not overwritten")
    args.out = args.out or DEFAULT_OUT
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(f"task={args.task}", "model=minilm", f"seed={args.seed}")
    data = load_data(cfg)
    examples = args.steps * cfg.train.batch_size
    names = ("dynbench", "trainer", "trainer_grouped")
    rates: dict[str, list[float]] = {name: [] for name in names}
    token_rates: dict[str, list[float]] = {name: [] for name in names}
    first: list[str] = []
    for r in range(args.rounds):
        round_cfg = dataclasses.replace(cfg, seed=cfg.seed + r)
        sides = {"dynbench": lambda: run_ours(round_cfg, data, args.steps),
                 "trainer": lambda: run_trainer(round_cfg, data, args.steps)[:2],
                 "trainer_grouped": lambda: run_trainer(round_cfg, data, args.steps, grouped=True)[:2]}
        order = names[r % 3:] + names[: r % 3]  # who goes first rotates: the machine's drift cancels
        first.append(order[0])
        for side in order:
            seconds, tokens = sides[side]()
            rates[side].append(examples / seconds)
            token_rates[side].append(tokens / seconds)
        print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f} ex/s {token_rates[n][-1]:.0f} tok/s"
                                            for n in names), flush=True)
    result = {"task": cfg.task.name, "model": cfg.model.name, "batch_size": cfg.train.batch_size,
              "max_length": cfg.model.max_length, "seed": cfg.seed, "git_commit": git_commit(),
              "threads": torch.get_num_threads()}
    if args.rounds:
        result |= throughput(rates, token_rates, first, args.steps, args.rounds, cfg.train.group_by_length)
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
