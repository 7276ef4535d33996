"""What a researcher reads, made from the records alone: tables, plots and one HTML page per results folder.

- Points: every knob value of every method, averaged over seeds (± std), with the bootstrap interval of
  the dev score where there is one seed.
- Benchmark table: per task and method, the score at fixed speed-ups read off the method's Pareto front,
  the largest speed-up keeping ≥ 99% of the full model's score, and the normalised area under the front.
  Operating points are chosen on one half of dev and read on the other, both ways (two-fold cross-fitting):
  the data that chooses is distributed like the data reported, and never the same examples.
- Plots per task: score against relative FLOPs (or measured latency), where each method's examples exit,
  and how many tokens each token-reduction method carries into each layer.
- Every comparison (points, fronts, operating points, ELUE-style scores, heads, plots) is over the seeds that
  every method of the task has finished (``matched_seeds``; where a method has not finished the seeds the rest
  share, it is left out, and named), so a benchmark part way through never sets one method's three-seed mean
  beside another's one seed; the full model's own table covers all its seeds.

Deterministic from the records (same records, same files); never trains or evaluates.

    python -m dynbench.report results/glue [--axis flops|latency|both] [--readme README.md]
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from pathlib import Path
from typing import Any, Optional

import matplotlib
import numpy as np
import pandas as pd

from dynbench import pareto
from dynbench.errors import DynbenchError
from dynbench.method import list_methods
from dynbench.records import atomic_write_text, stable_hash

matplotlib.use("Agg")  # files only, no display

REQUIRED = ["method", "task", "model", "seed", "knob", "knob_value", "score", "flops", "flops_full", "speedup_flops"]
RUN = ["task", "model", "seed"]
POINT = ["task", "model", "budget", "method", "knob", "knob_value", "infer_knob", "infer_knob_value"]
MEANS = ["score", "calib_score", "speedup_flops", "calib_speedup_flops", "layers_mean", "tokens_mean",
         "speedup_latency_b1", "speedup_throughput_eval"]
FIXED_SPEEDUPS = (1.5, 2.0, 3.0)
REFERENCES = ("full", "truncate")  # drawn as references on every plot
PNG_METADATA = {"Software": None}  # no version stamp: the same records give the same bytes


def load_records(folder: Path) -> pd.DataFrame:
    """Every record of every ``*.jsonl`` under ``folder``; a bad line is reported with its file and line."""
    rows, known = [], set(list_methods())
    for path in sorted(folder.rglob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DynbenchError(f"{path}:{number}: not a JSON record ({err.msg})") from None
            missing = [f for f in REQUIRED if f not in record]
            if missing:
                raise DynbenchError(f"{path}:{number}: record lacks {missing}")
            if record["method"] not in known:
                raise DynbenchError(f"{path}:{number}: unknown method {record['method']!r} (known: {sorted(known)})")
            rows.append(record)
    if not rows:
        raise DynbenchError(f"no records (*.jsonl) under {folder}")
    frame = pd.DataFrame(rows)
    for column in ("budget_hash", "infer_knob", "infer_knob_value", "limited", "knob_at", "machine"):
        if column not in frame:
            frame[column] = None
    frame["budget_hash"] = frame["budget_hash"].fillna("")
    configs = frame["config"] if "config" in frame else pd.Series(None, index=frame.index)
    frame["budget"] = [experiment_budget(c, b) for c, b in zip(configs, frame.budget_hash)]
    frame = frame[frame.limited != True].reset_index(drop=True)  # noqa: E712  smoke runs are not results
    if frame.empty:
        raise DynbenchError(f"only smoke-run records (limited: true) under {folder}: run without train=smoke, "
                            "train.limit_train and train.limit_eval to make results")
    return frame


BUDGET_KEYS = ("model", "task", "data", "train")


def experiment_budget(config: Any, budget_hash: str) -> str:
    """What makes runs the seeds of one experiment, so that the report averages over them: model, task, data and
    training budget, from the record's ``config`` (a record's ``budget_hash`` holds its seed as well: it keys
    the stages that seed trained). Records whose ``config`` lacks any of these keep their ``budget_hash``: a
    partial config would make runs of different budgets look like seeds of one."""
    if not isinstance(config, dict) or not all(key in config for key in BUDGET_KEYS):
        return budget_hash
    return stable_hash({key: config[key] for key in BUDGET_KEYS})


def _point_key(value: Any) -> str:
    """A knob value as ``points`` groups it: None and NaN alike (pandas turns one into the other beside
    numbers), 1 and 1.0 alike."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "None"
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    """The records with a point measured twice for one seed (say, by two runs with different knob grids)
    counted once: the latest."""
    return frame.drop_duplicates(subset=[*POINT, "seed"], keep="last")


def _point_keys(rows: pd.DataFrame) -> list[str]:
    """Each row's knob point (knob, value, inference knob, value) as one string of ``_point_key``'s."""
    return [" ".join(keys) for keys in zip(*(rows[c].map(_point_key) for c in POINT[4:]))]


def _point_label(point: tuple[str, ...]) -> str:
    """A point's knob values as a reader names them (``patience=2``, ``tau=0.3/slack=0.1``)."""
    named = dict(zip(POINT, point))
    label = f"{named['knob']}={named['knob_value']}"
    if named["infer_knob"] != "None":
        label += f"/{named['infer_knob']}={named['infer_knob_value']}"
    return label


def _numeric_order(point: tuple[str, ...]) -> tuple:
    """Sorts points by their values as numbers where they are numbers (``k=2`` before ``k=10``)."""
    def one(v: str) -> tuple:
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)
    return tuple(one(v) for v in point)


def _seed_status(rows: pd.DataFrame) -> tuple[set, dict]:
    """One method's records of one task: the seeds it has finished (every point it has in any seed) and, per
    unfinished seed, what it lacks."""
    keys = pd.Series([tuple(map(_point_key, point)) for point in rows[POINT].itertuples(index=False)], rows.index)
    grid, lacking = set(keys), {}
    for seed, have in keys.groupby(rows.seed):
        missing = sorted(grid - set(have), key=_numeric_order)
        if missing:
            shown = ", ".join(map(_point_label, missing[:3])) + (", ..." if len(missing) > 3 else "")
            lacking[seed] = f"lacks {len(missing)} of {len(grid)} points ({shown})"
    return set(rows.seed.unique()) - set(lacking), lacking


def matched_seeds(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The records that the comparisons read, and a note for each seed and each method left out of them, so
    that a benchmark part way through, or a stray point, is seen rather than silent.

    Per task (and model and budget): a method's seed is finished when it has every point the method has in
    any seed. Compared are the methods that finished the seed most methods finished (the lowest such seed on
    ties), all of them on the seeds they have all finished: normally every method, on the seeds every method
    finished. A method that has not finished one of those seeds (a late one, or one whose seeds each lack a
    point) is left out and named, rather than compared over other seeds than the rest, full included."""
    keep = pd.Series(False, index=frame.index)
    notes: list[str] = []
    for (task, model, budget), run in frame.groupby(["task", "model", "budget"]):
        status = {method: _seed_status(rows) for method, rows in run.groupby("method")}
        seeds = sorted(run.seed.unique())
        by_seed = {seed: {m for m, (done, _) in status.items() if seed in done} for seed in seeds}
        compared = by_seed[max(seeds, key=lambda seed: (len(by_seed[seed]), -seed))]
        shared = [seed for seed in seeds if compared <= by_seed[seed]] if compared else []
        keep[run.index[run.seed.isin(shared) & run.method.isin(compared)]] = True
        where = f"{task} ({model}, budget {budget[:8] or 'none'})"

        def why(method: str, seed: Any) -> str:
            return status[method][1].get(seed, "has not run it")

        for method in sorted(set(status) - compared):
            done = sorted(map(int, status[method][0]))
            on = "; ".join(f"seed {int(seed)}: {why(method, seed)}" for seed in shared) or "no seed is compared"
            notes.append(f"{where}: {method} left out of the comparisons ({on}; finished: {done or 'none'})")
        for seed in sorted(set(seeds) - set(shared)) if compared else []:
            behind = [m for m in sorted(compared) if m not in by_seed[seed]]
            unrun = [m for m in behind if seed not in status[m][1]]
            reasons = ([f"not run by {', '.join(unrun)}"] if unrun else []) + [
                f"{m} {why(m, seed)}" for m in behind if m not in unrun]
            notes.append(f"{where}: seed {int(seed)} left out of the comparisons: {'; '.join(reasons)}")
    return frame[keep], notes


def points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model, budget, method, knob point): means and stds over seeds, seed count (and
    ``timed_seeds``, those with wall-clock timing, which the wall-clock means are over), and the dev score's
    bootstrap interval when one seed made it."""
    rows = []
    frame = _latest(frame)
    for _, group in frame.groupby(POINT, sort=True, dropna=False):  # None (no knob) is a group of its own
        first = frame.loc[group.index[0]]
        # wall-clock is timed on some seeds only (eval.timing): its means are over these
        row = {c: first[c] for c in POINT} | {"seeds": group.seed.nunique(), "timed_seeds": 0}
        for c in MEANS:
            if c in frame:
                values = pd.to_numeric(frame.loc[group.index, c], errors="coerce")
                if c == "speedup_latency_b1":
                    row["timed_seeds"] = int(values.notna().sum())
                row[c] = values.mean()
                row[f"{c}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
        ci = first.get("score_ci95")
        row["score_ci95"] = ci if row["seeds"] == 1 and isinstance(ci, list) else None
        row["exit_counts"] = first.get("exit_counts")
        row["tokens_per_layer"] = first.get("tokens_per_layer")
        row["rel_flops"] = 1.0 / row["speedup_flops"]
        rows.append(row)
    return pd.DataFrame(rows)


def _fold_choice(rows: pd.DataFrame, full_scores: list[float], fold: int, keep: float) -> Optional[pd.Series]:
    """The point with the largest FLOPs speed-up on dev fold ``fold`` whose score there is ≥ ``keep`` × the
    full model's on that fold (ties: the better score); None if no point is."""
    ok = rows[[s[fold] >= keep * full_scores[fold] for s in rows.fold_scores]]
    if ok.empty:
        return None
    order = sorted(ok.index, key=lambda i: (ok.fold_speedup_flops[i][fold], ok.fold_scores[i][fold]), reverse=True)
    return ok.loc[order[0]]


def operating_points(frame: pd.DataFrame, keep: float = 0.99) -> pd.DataFrame:
    """Per run and method, two-fold cross-fitting on dev: on each half, the point with the largest FLOPs
    speed-up keeping ≥ ``keep`` × full's score on that half, read on the other half; the two readings are
    averaged. A half where no point qualifies falls back to the full model (speed-up 1, full's score), which
    is what a user of the method would run. The 95% interval adds the two readings' bootstrap errors (the
    halves are disjoint), given the choices. Also each chosen point's wall-clock over FLOPs speed-up."""
    out = []
    if "fold_scores" not in frame:
        return pd.DataFrame(out)
    frame = frame[frame.fold_scores.map(lambda v: isinstance(v, list))]
    for key, run in frame.groupby(RUN + ["budget"]):  # never mix training budgets
        full = run[run.method == "full"]
        if full.empty:
            continue
        full = full.iloc[0]
        for method, rows in run[run.method != "full"].groupby("method"):
            readings = []  # (chosen point or None, score, standard error, speed-up) on the other half
            for fold in range(len(full.fold_scores)):
                other = 1 - fold
                chosen = _fold_choice(rows, full.fold_scores, fold, keep)
                source = full if chosen is None else chosen
                readings.append((chosen, source.fold_scores[other], source.fold_score_se[other],
                                 1.0 if chosen is None else chosen.fold_speedup_flops[other]))
            score = float(np.mean([r[1] for r in readings]))
            half = 1.96 * float(np.sqrt(sum(r[2] ** 2 for r in readings))) / len(readings)
            point = dict(zip(RUN + ["budget"], key)) | {
                "method": method, "knob": rows.knob.iloc[0],
                "knob_value": " | ".join("full" if c is None else _value(c.knob_value) for c, *_ in readings),
                "infer_knob_value": " | ".join("full" if c is None else _value(c.infer_knob_value) for c, *_ in readings)
                if rows.infer_knob_value.notna().any() else None,
                "score": score, "score_ci95_low": score - half, "score_ci95_high": score + half,
                "score_vs_full": score / float(np.mean(full.fold_scores)),
                "speedup_flops": float(np.mean([r[3] for r in readings])),
            }
            point |= _wall_clock([c for c, *_ in readings if c is not None])
            out.append(point)
    return pd.DataFrame(out)


def _wall_clock(chosen: list[pd.Series]) -> dict[str, float]:
    """The measured speed-ups at the chosen points (batch 1, and the eval batch size), averaged over the
    points as the FLOPs speed-up is: the median round's ratio, the lowest and the highest round's (the spread
    of the interleaved repeats, so a reader sees whether a 1.2x is above the ±20% the machine swings), and
    wall-clock over the FLOPs speed-up of the same timed examples (how much of the counted saving the clock
    sees)."""
    out = {}
    for timing, examples in (("speedup_latency_b1", "speedup_flops_b1_examples"),
                             ("speedup_throughput_eval", "speedup_flops_eval_examples")):
        timed = [c for c in chosen if pd.notna(c.get(timing)) and pd.notna(c.get(examples))]
        if not timed:
            continue
        out[timing] = float(np.mean([c[timing] for c in timed]))
        spreads = [c.get(f"{timing}_range") for c in timed]
        if all(isinstance(r, list) for r in spreads):
            out[f"{timing}_low"] = float(np.mean([r[0] for r in spreads]))
            out[f"{timing}_high"] = float(np.mean([r[1] for r in spreads]))
        out[f"{timing}_over_flops"] = float(np.mean([c[timing] / c[examples] for c in timed]))
    return out


def elue_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run (task, model, seed, budget) and method: the ELUE-style score against the same seed's static
    truncation curve (``pareto.elue_score``), with the number of points inside truncation's FLOPs range."""
    rows = []
    latest = _latest(frame)
    for key, run in latest.groupby(RUN + ["budget"]):
        ref = run[run.method == "truncate"]
        if ref.empty:
            continue
        for method, curve in run[~run.method.isin(REFERENCES)].groupby("method"):
            value, used = pareto.elue_score(curve.speedup_flops, curve.score, ref.speedup_flops, ref.score)
            rows.append(dict(zip(RUN + ["budget"], key)) | {"method": method, "elue": value, "points": used})
    return pd.DataFrame(rows)


def _rows_of(table: pd.DataFrame, task: str, model: str, budget: str, method: str) -> pd.DataFrame:
    """The rows of a report table (per run, per point or per record) for one task, model, budget and method."""
    if table.empty:
        return table
    return table[(table.task == task) & (table.model == model) & (table.budget == budget)
                 & (table.method == method)]


def _mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std over seeds (NaN std for one seed)."""
    return values.mean(), values.std(ddof=1) if len(values) > 1 else np.nan


def benchmark_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task, model, budget and method: score at each fixed speed-up (on the front of the seed-averaged
    points; its ``_std`` is the spread over seeds of the same front points, mixed alike), the area under the
    front, the operating point and the ELUE-style score against static truncation (both mean ± std over seeds)."""
    pts, ops, elue = points(frame), operating_points(frame), elue_scores(frame)
    latest = _latest(frame)
    rows = []
    for (task, model, budget), group in pts.groupby(["task", "model", "budget"]):
        full = group[group.method == "full"]
        full_score = full.score.iloc[0] if not full.empty else np.nan
        for method, curve in group.groupby("method"):
            row = {"task": task, "model": model, "budget": budget, "method": method, "points": len(curve),
                   "seeds": curve.seeds.max()}
            runs = _rows_of(latest, task, model, budget, method)
            per_seed = runs.assign(point=_point_keys(runs)).pivot(index="point", columns="seed", values="score")
            keys = _point_keys(curve)
            for s in FIXED_SPEEDUPS:
                mix = pareto.mix_at(curve.speedup_flops, curve.score, s)
                row[f"score@{s:g}x"] = sum(w * curve.score.iloc[i] for i, w in mix) if mix else np.nan
                # its spread: the same mix of the same knob points, read on each seed's own scores (its mean
                # over seeds is the value above; a seed without one of the points gives NaN, not a smaller spread)
                reads = sum(w * per_seed.loc[keys[i]] for i, w in mix) if mix else None
                row[f"score@{s:g}x_std"] = (reads.std(ddof=1, skipna=False) if reads is not None and len(reads) > 1
                                            else np.nan)
            row["area"] = pareto.area(curve.speedup_flops, curve.score, full_score) if pd.notna(full_score) else np.nan
            op = _rows_of(ops, task, model, budget, method)
            if len(op):
                row["speedup@99%"], row["speedup@99%_std"] = _mean_std(op.speedup_flops)
                row["score@99%"], row["score@99%_std"] = _mean_std(op.score)
            mine = _rows_of(elue, task, model, budget, method)
            if len(mine):
                row["elue"], row["elue_std"] = _mean_std(mine.elue)
                row["elue_points"] = mine.points.mean()
            rows.append(row)
    return pd.DataFrame(rows)


HEADLINE_BEGIN = "<!-- headline table: python -m dynbench.report <folder> --readme <file> writes it; edits are lost -->"
HEADLINE_END = "<!-- end of headline table -->"


def _mean_pm(mean: Any, std: Any, digits: int = 3, unit: str = "", signed: bool = False) -> str:
    """``0.812 ± 0.008`` (``±`` only where seeds give a spread), ``–`` where there is no value."""
    if pd.isna(mean):
        return "–"
    spread = f" ± {std:.{digits}f}" if pd.notna(std) else ""
    return f"{mean:{'+' if signed else ''}.{digits}f}".replace("-", "−") + spread + unit


def headline_table(bench: pd.DataFrame, pts: pd.DataFrame) -> str:
    """The benchmark's answer in one Markdown table, the one the README shows: per task, the full model's score
    and, per method, the score at each fixed speed-up, the operating point and the ELUE-style score, each as
    mean ± std over the seeds compared (``bench`` is ``benchmark_table``'s, ``pts`` ``points``'). Rows run task
    by task, the references (full, truncation) first; the full model's row is its score, at 1×."""
    header = (["task", "method", "seeds"] + [f"score at {s:g}×" for s in FIXED_SPEEDUPS]
              + ["speed-up at ≥ 99% of full", "score there", "ELUE-style"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rank = {method: i for i, method in enumerate(REFERENCES)}
    # name the model where the folder holds several, and the budget where a task has several
    several_models = bench.model.nunique() > 1
    several_budgets = bench.groupby(["task", "model"]).budget.nunique().max() > 1
    for (task, model, budget), group in bench.groupby(["task", "model", "budget"], sort=True):
        full = _rows_of(pts, task, model, budget, "full")
        label = task + (f" ({model})" if several_models else "") + (f" [{budget[:8]}]" if several_budgets else "")
        for row in sorted(group.to_dict("records"), key=lambda r: (rank.get(r["method"], len(rank)), r["method"])):
            if row["method"] == "full":
                cells = ["–"] * len(FIXED_SPEEDUPS) + ["1×", _mean_pm(full.score.iloc[0], full.score_std.iloc[0]), "–"]
            else:  # a column no method of the folder has (no truncation: no ELUE-style score) reads as missing
                cells = [_mean_pm(row[f"score@{s:g}x"], row[f"score@{s:g}x_std"]) for s in FIXED_SPEEDUPS]
                cells += [_mean_pm(row.get("speedup@99%"), row.get("speedup@99%_std"), 2, "×"),
                          _mean_pm(row.get("score@99%"), row.get("score@99%_std")),
                          _mean_pm(row.get("elue"), row.get("elue_std"), signed=True)]
            lines.append("| " + " | ".join([label, row["method"], str(int(row["seeds"]))] + cells) + " |")
    return "\n".join(lines) + "\n"


def head_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task, model, budget, exit method and trained model (a training knob's value): the dev score of
    the classifier after each layer (``layer_1`` …, mean over seeds), beside the full model's score and the
    majority-class answer's."""
    if "head_scores" not in frame:
        return pd.DataFrame()
    with_heads = frame[frame.head_scores.map(lambda v: isinstance(v, list))]
    full = frame[frame.method == "full"].groupby(["task", "model", "budget"]).score.mean()
    rows = []
    for (task, model, budget, method), group in with_heads.groupby(["task", "model", "budget", "method"]):
        trains = (group.knob_at == "train").all()
        for value, models in group.groupby(group.knob_value.map(_value) if trains else pd.Series("", group.index)):
            per_seed = models.drop_duplicates("seed")  # one trained model per seed: every knob point repeats it
            scores = np.array(per_seed.head_scores.tolist(), dtype=float)
            row = {"task": task, "model": model, "method": method, "trained_knob": value or None,
                   "seeds": len(per_seed), "budget": budget}
            row |= {f"layer_{i + 1}": v for i, v in enumerate(scores.mean(0))}
            row["full"] = full.get((task, model, budget), np.nan)
            row["majority"] = pd.to_numeric(per_seed.get("majority_score"), errors="coerce").mean()
            rows.append(row)
    return pd.DataFrame(rows)


def full_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task, model and budget: the full model's dev score and each metric (mean ± std over seeds), the
    per-seed scores, and its training (the epoch early stopping on calibration kept, the epochs run, seconds
    in all and per epoch, which sizes every other method's training): the baseline every method's curve is
    read against."""
    full = frame[frame.method == "full"].drop_duplicates(subset=[*RUN, "budget"], keep="last")
    rows = []
    for (task, model, budget), group in full.groupby(["task", "model", "budget"]):
        group = group.sort_values("seed")
        row = {"task": task, "model": model, "seeds": len(group), "budget": budget}
        row["score"], row["score_std"] = _mean_std(group.score)
        row["per_seed"] = [round(float(v), 4) for v in group.score]
        metrics = group["metrics"] if "metrics" in group else pd.Series([{}] * len(group), index=group.index)
        metrics = metrics.map(lambda m: m if isinstance(m, dict) else {})
        for metric in sorted(set().union(*metrics)):
            row[metric] = metrics.map(lambda m: m.get(metric, np.nan)).mean()
        seconds = pd.to_numeric(group.get("train_seconds"), errors="coerce")
        if "stages" in group:
            row["best_epoch"] = [best_epoch(s) for s in group.stages]
            epochs = group.stages.map(epochs_run)
            row["epochs_run"] = list(epochs)
            row["s_per_epoch"] = (seconds / epochs.astype(float)).mean()
        row["train_s"] = seconds.mean()
        rows.append(row)
    return pd.DataFrame(rows)


def _first_stage_scores(stages) -> Optional[list[float]]:
    """The calibration score after each epoch of a record's first stage (None where it kept none)."""
    return stages[0].get("epoch_scores") if isinstance(stages, list) and stages else None


def best_epoch(stages) -> Optional[int]:
    """The epoch a stage's early stopping kept (1-based; the best calibration score, first on ties)."""
    scores = _first_stage_scores(stages)
    return int(np.argmax(scores)) + 1 if scores else None


def epochs_run(stages) -> Optional[int]:
    """How many epochs a stage ran before it finished or stopped early (its calibration scores, one each)."""
    scores = _first_stage_scores(stages)
    return len(scores) if scores else None


def machine_name(machine: Any) -> str:
    """A record's ``machine`` in one cell: CPU, its vector capability and cores (and the GPU where one ran)."""
    if not isinstance(machine, dict):
        return "not recorded"
    name = f"{machine.get('cpu')} ({machine.get('cpu_capability')}, {machine.get('cores')} cores)"
    return f"{name}, {machine['gpu']}" if machine.get("gpu") else name


def compute_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task, method and machine, where the wall time went (seconds, all seeds and budgets): training,
    evaluation passes and wall-clock timing, and the total. Each stage counts once, with the run that trained it,
    or, where none of these records trained it (a cache filled elsewhere), with the first run that reused it.
    Seconds on different machines are not one unit (a benchmark run in pieces meets several), so each machine
    has its own row; records from before they named it count as ``not recorded``."""
    stages = frame["stages"] if "stages" in frame else pd.Series([None] * len(frame), index=frame.index)
    listed = [(i, stage) for i, value in stages.items() for stage in (value if isinstance(value, list) else [])]
    trained_here = {stage.get("key") for _, stage in listed if not stage.get("reused")}
    owner: dict[str, tuple[int, float]] = {}
    for i, stage in listed:
        key = stage.get("key")
        if key not in owner and (not stage.get("reused") or key not in trained_here):
            owner[key] = (i, float(stage.get("seconds") or 0.0))
    train_by_row = pd.Series(0.0, index=frame.index)
    for i, seconds in owner.values():
        train_by_row[i] += seconds
    rows = []
    for (task, method, machine), group in frame.groupby([frame["task"], frame["method"],
                                                         frame["machine"].map(machine_name)]):
        row = {"task": task, "method": method, "machine": machine, "train_s": train_by_row[group.index].sum()}
        for column, name in (("eval_seconds", "eval_s"), ("timing_seconds", "timing_s")):
            row[name] = pd.to_numeric(group[column], errors="coerce").sum() if column in group else np.nan
        row["total_s"] = np.nansum([row["train_s"], row["eval_s"], row["timing_s"]])
        rows.append(row)
    return pd.DataFrame(rows)


# the plots the report writes, per task: ``{task}_{kind}.png``; it owns every file of these names in its folder
PLOT_KINDS = ("score_vs_flops", "score_vs_latency", "exits", "tokens", "heads")


def _png(fig, folder: Path, task: str, kind: str) -> Path:
    assert kind in PLOT_KINDS, kind
    path = folder / f"{task}_{kind}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata=PNG_METADATA)
    return path


def _remove_stale_plots(folder: Path, written: list[Path]) -> None:
    """Delete the report's plots that this pass did not write (a method or task gone from the records, an
    axis not asked for), so the folder never shows a plot of records it no longer holds."""
    for kind in PLOT_KINDS:
        for path in folder.glob(f"*_{kind}.png"):
            if path not in written:
                path.unlink()


def plot_curves(frame: pd.DataFrame, folder: Path, axis: str = "flops") -> list[Path]:
    """Per task: dev score against relative FLOPs (``axis="flops"``) or relative batch-1 latency
    (``"latency"``): every point faint, each method's Pareto front as a line, ± std bands across seeds, the
    full model as a star and a dotted line, static truncation dashed."""
    import matplotlib.pyplot as plt

    speed = {"flops": "speedup_flops", "latency": "speedup_latency_b1"}[axis]
    label = {"flops": "FLOPs per example", "latency": "latency at batch 1 (measured)"}[axis]
    paths = []
    pts = points(frame)
    colors = {m: f"C{i}" for i, m in enumerate(sorted(pts.method.unique()))}  # one colour per method on every plot
    for task, rows in pts.groupby("task"):
        fig, ax = plt.subplots(figsize=(7, 4.6))
        for method, curve in sorted(rows.groupby("method"), key=lambda kv: kv[0]):
            curve = curve[curve[speed].notna()]
            if curve.empty:
                continue
            color = colors[method]
            x = 1.0 / curve[speed]
            if method == "full":
                ax.plot(x, curve.score, "*", color=color, markersize=14, label="full")
                ax.axhline(curve.score.iloc[0], color=color, linestyle=":", linewidth=1)
                continue
            ax.plot(x, curve.score, "o", color=color, alpha=0.35, markersize=4)
            idx = pareto.front(curve[speed], curve.score)
            on = curve.iloc[idx]
            ax.plot(1.0 / on[speed], on.score, marker="o", color=color, markersize=5, label=method,
                    linestyle="--" if method in REFERENCES else "-")
            if on.seeds.max() > 1:
                std = on.score_std.fillna(0)
                ax.fill_between(1.0 / on[speed], on.score - std, on.score + std, color=color, alpha=0.15)
        ax.set_xlabel(f"{label}, relative to the full model")
        ax.set_ylabel("dev score (primary metric)")
        ax.set_title(f"{task}: score vs {axis}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        seeds = int(rows.seeds.max())
        fig.text(0.01, -0.04, f"Lines: each method's Pareto front (mean over {seeds} seed{'s' * (seeds > 1)}"
                 f"{', bands ± std' if seeds > 1 else ''}); between two front points the line is what sending each "
                 "example to one or\nthe other at random reaches (score and cost mix linearly). Faint dots: every "
                 "knob point. Dashed: static truncation, the reference; star: the full model.", fontsize=7,
                 va="top")
        paths.append(_png(fig, folder, task, f"score_vs_{axis}"))
        plt.close(fig)
    return paths


def plot_exits(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Per task: for each adaptive method, the share of dev examples leaving at each layer, one row per knob
    point (slowest at the top)."""
    import matplotlib.pyplot as plt

    paths = []
    pts = points(frame)
    for task, rows in pts.groupby("task"):
        methods = [(m, c) for m, c in sorted(rows.groupby("method"), key=lambda kv: kv[0])
                   if m not in REFERENCES and _exits_early(c.exit_counts)]
        if not methods:
            continue
        fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.6), squeeze=False)
        for ax, (method, curve) in zip(axes[0], methods):
            curve = curve.sort_values("speedup_flops")
            counts = np.array(curve.exit_counts.tolist(), dtype=float)
            ax.imshow(counts / counts.sum(1, keepdims=True), aspect="auto", cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(counts.shape[1]), [str(i + 1) for i in range(counts.shape[1])])
            ax.set_yticks(range(len(curve)), [_knob_label(r) for r in curve.itertuples()], fontsize=6)
            ax.set_xlabel("exit layer")
            ax.set_title(method, fontsize=9)
        fig.suptitle(f"{task}: where examples exit (share per knob point)")
        paths.append(_png(fig, folder, task, "exits"))
        plt.close(fig)
    return paths


def _exits_early(counts: pd.Series) -> bool:
    """Whether every point of a method has exit counts and any lets examples leave before the last layer
    (token methods never do)."""
    return bool(counts.notna().all()) and any(sum(c[:-1]) > 0 for c in counts)


def _shrinks(tokens: pd.Series) -> bool:
    """Whether any point of a method carries fewer tokens into a later layer than into the first."""
    return any(isinstance(t, list) and min(t) < t[0] for t in tokens)


def plot_tokens(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Per task: for each token-reduction method, the mean tokens entering each layer (dev), one line per knob
    point, beside the full model's."""
    import matplotlib.pyplot as plt

    paths = []
    pts = points(frame)
    for task, rows in pts.groupby("task"):
        # exit methods' means shrink too (a layer an example skipped counts 0 tokens): token methods never exit
        methods = [(m, c) for m, c in sorted(rows.groupby("method"), key=lambda kv: kv[0])
                   if m not in REFERENCES and _shrinks(c.tokens_per_layer)
                   and not _exits_early(c.exit_counts)]
        if not methods:
            continue
        full = rows[(rows.method == "full") & rows.tokens_per_layer.notna()]
        fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.4), squeeze=False)
        for ax, (method, curve) in zip(axes[0], methods):
            for row in curve.sort_values("speedup_flops").itertuples():
                if not isinstance(row.tokens_per_layer, list):  # a record from before the field existed
                    continue
                ax.plot(range(1, len(row.tokens_per_layer) + 1), row.tokens_per_layer, marker=".",
                        label=_knob_label(row))
            if not full.empty:
                reference = full.tokens_per_layer.iloc[0]
                ax.plot(range(1, len(reference) + 1), reference, "k--", label="full")
            ax.set_xlabel("layer")
            ax.set_ylabel("mean tokens entering")
            ax.set_title(f"{method} ({curve.knob.iloc[0]})", fontsize=9)
            ax.legend(fontsize=6)
        fig.suptitle(f"{task}: tokens carried per layer")
        paths.append(_png(fig, folder, task, "tokens"))
        plt.close(fig)
    return paths


def _value(v) -> str:
    """A knob value as a label: ``0.1``, ``3`` (pandas turns a column's integers into floats beside None)."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot_heads(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Per task: the dev score of each exit method's classifier after every layer (the per-layer accuracy
    plot of the early-exit papers), with the full model's score and the majority-class answer's."""
    import matplotlib.pyplot as plt

    paths, table = [], head_table(frame)
    for task, rows in (table.groupby("task") if not table.empty else []):
        fig, ax = plt.subplots(figsize=(6, 4))
        layers = [c for c in rows.columns if c.startswith("layer_") and rows[c].notna().any()]
        x = range(1, len(layers) + 1)
        for row in rows.itertuples():
            label = row.method if row.trained_knob is None else f"{row.method} {row.trained_knob}"
            ax.plot(x, [getattr(row, c) for c in layers], marker="o", label=label)
        if rows.full.notna().any():
            ax.axhline(rows.full.iloc[0], color="k", linestyle=":", linewidth=1, label="full")
        if rows.majority.notna().any():
            ax.axhline(rows.majority.iloc[0], color="grey", linestyle="--", linewidth=1, label="majority class")
        ax.set_xticks(list(x))
        ax.set_xlabel("classifier after layer")
        ax.set_ylabel("dev score (primary metric)")
        ax.set_title(f"{task}: each internal classifier on every example")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_png(fig, folder, task, "heads"))
        plt.close(fig)
    return paths


def _knob_label(row) -> str:
    label = _value(row.knob_value)
    if row.infer_knob_value not in (None, "None") and pd.notna(row.infer_knob_value):
        label += f"/{_value(row.infer_knob_value)}"
    return label


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g") if not frame.empty else "(none)"


def write_report(folder: Path, axes: tuple[str, ...] = ("flops",), wandb_project: str | None = None) -> dict[str, str]:
    """Writes the tables (Markdown and CSV), the plots (removing those of its plots it no longer writes) and
    ``report.html`` into ``folder`` (and logs tables and plots to a wandb run in ``wandb_project``, if given);
    returns the tables as Markdown, and under ``seeds`` the seeds left out of the comparisons and why."""
    frame = load_records(folder)
    compared, notes = matched_seeds(frame)
    tables = {"benchmark": benchmark_table(compared), "operating_points": operating_points(compared),
              "full": full_table(frame), "heads": head_table(compared), "compute": compute_table(frame),
              "points": points(compared).drop(columns=["rel_flops"])}
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False, float_format="%.6g")
    text = "".join(f"# {title}\n\n{_markdown(tables[name])}\n\n" for name, title in (
        ("benchmark", f"Benchmark: score at {', '.join(f'{s:g}x' for s in FIXED_SPEEDUPS)} FLOPs speed-up (Pareto "
                      "front, dev), speed-up at >= 99% of full (cross-fitted on dev halves), normalised area, "
                      "ELUE-style score (mean score minus static truncation's at the same FLOPs; points outside "
                      "truncation's FLOPs range left out); every table but the full model's and compute's is over the "
                      "seeds every method of the task has finished (a method that has not is left out: Seeds "
                      "compared, at the end)"),
        ("operating_points", "Operating points (>= 99% of full's score, chosen on one half of dev and read on the "
                             "other, both ways, averaged; 95% interval; wall-clock speed-ups at "
                             "batch 1 and the eval batch size, median of interleaved rounds with the lowest and "
                             "highest round's)"),
        ("full", "The full model (dev score, mean and std over seeds; the epoch early stopping kept on calibration)"),
        ("heads", "Internal classifiers (dev score of the classifier after each layer, on every example)"),
        ("compute", "Where the time went (seconds: training of the stages each method's runs trained, evaluation "
                    "passes, wall-clock timing; per machine)"),
        ("points", "Points (every knob value; dev scores; mean over the seeds compared, below)")))
    seeds = "\n".join(f"- {note}" for note in notes) or "Every finished seed of every task."
    text += f"# Seeds compared\n\n{seeds}\n"
    (folder / "summary.md").write_text(text)
    headline = headline_table(tables["benchmark"], tables["points"])
    (folder / "headline.md").write_text(headline)
    plots = ([p for a in axes for p in plot_curves(compared, folder, a)] + plot_exits(compared, folder)
             + plot_tokens(compared, folder) + plot_heads(compared, folder))
    _remove_stale_plots(folder, plots)
    (folder / "report.html").write_text(_html(folder.name, tables, plots, frame, notes))
    if wandb_project:
        _log_to_wandb(wandb_project, folder, tables, plots)
    return {name: _markdown(t) for name, t in tables.items()} | {"seeds": seeds, "headline": headline}


def _headline_block(readme: Path) -> tuple[str, int, int]:
    """The README's text and where its table goes: after the one ``HEADLINE_BEGIN`` line, up to the first
    ``HEADLINE_END`` after it; a one-line error that says what to add where it has no such block."""
    try:
        text = readme.read_text()
    except OSError as err:
        raise DynbenchError(f"--readme {readme}: {err.strerror}; give the README that holds the headline block") from None
    begin = text.find(HEADLINE_BEGIN)
    end = text.find(HEADLINE_END, begin + len(HEADLINE_BEGIN)) if begin >= 0 else -1
    if end < 0 or text.count(HEADLINE_BEGIN) > 1:
        raise DynbenchError(f"{readme} needs one headline block: a line {HEADLINE_BEGIN!r} and, below it, a line "
                            f"{HEADLINE_END!r} where the table goes")
    return text, begin + len(HEADLINE_BEGIN) + 1, end


def update_readme(readme: Path, headline: str) -> None:
    """Puts ``headline`` between the README's ``HEADLINE_BEGIN`` and ``HEADLINE_END`` lines, so the table a reader
    sees is the one the records make (``tests/test_results.py`` checks that it is)."""
    text, begin, end = _headline_block(readme)
    atomic_write_text(readme, text[:begin] + headline + text[end:])


def readme_headline(readme: Path) -> str:
    """The table in the README's headline block (what ``update_readme`` put there)."""
    text, begin, end = _headline_block(readme)
    return text[begin:end]


def _log_to_wandb(project: str, folder: Path, tables: dict[str, pd.DataFrame], plots: list[Path]) -> None:
    """The report's tables and plots as one wandb run (``WANDB_MODE=offline`` needs no account)."""
    try:
        import wandb
    except ImportError:
        raise DynbenchError("--wandb needs wandb: pip install wandb (or pip install -e '.[wandb]')") from None
    run = wandb.init(project=project, name=f"report-{folder.resolve().name}", job_type="report")
    run.log({name: wandb.Table(dataframe=table.astype(str)) for name, table in tables.items()}
            | {path.stem: wandb.Image(str(path)) for path in plots})
    run.finish()


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """A table as the page shows it: no hash columns, ``budget`` cut to the 8 characters the seed notes
    name it by, lists as short rounded strings (the CSVs keep all)."""
    shown = table.drop(columns=[c for c in table.columns if c.endswith("_hash")])
    if "budget" in shown:
        shown = shown.assign(budget=shown.budget.str[:8])

    def compact(v):
        if isinstance(v, list):
            return "[" + ", ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in v) + "]"
        return v

    return shown.apply(lambda column: column.map(compact) if column.dtype == object else column)


def _table_html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>(none in these records)</p>"
    html_table = _display(table).to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")
    return f"<div class='wide'>{html_table}</div>"


def _html(title: str, tables: dict[str, pd.DataFrame], plots: list[Path], frame: pd.DataFrame,
          notes: list[str]) -> str:
    """One self-contained page: the plots first (inlined as base64), then the seeds left out of the
    comparisons, the summary tables, then the raw points and every run's config behind collapsible sections.
    Wide tables scroll inside their box, so nothing runs off the page."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dynbench: {html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;"
             "white-space:nowrap}.wide{overflow-x:auto;max-width:100%}.plots{display:flex;flex-wrap:wrap;gap:1em}"
             "figure{margin:0;max-width:48%}img{max-width:100%}</style></head><body>",
             f"<h1>dynbench report: {html.escape(title)}</h1>", "<div class='plots'>"]
    for path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<figure><img alt='{path.name}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{path.name}</figcaption></figure>")
    parts.append("</div>")
    if notes:
        parts.append("<h2>seeds compared</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for name, table in tables.items():
        if name != "points":
            parts.append(f"<h2>{name.replace('_', ' ')}</h2>" + _table_html(table))
    parts.append(f"<details><summary>every knob point ({len(tables['points'])} rows; also points.csv)</summary>"
                 + _table_html(tables["points"]) + "</details>")
    parts.append("<h2>runs and their configs</h2>")
    if "config" in frame:
        runs = frame.drop_duplicates("run_id") if "run_id" in frame else frame
        for row in runs.sort_values(list(runs.columns.intersection(["run_id"])) or ["method"]).itertuples():
            config = json.dumps(row.config, indent=1, sort_keys=True, default=str)
            parts.append(f"<details><summary>{html.escape(str(getattr(row, 'run_id', row.method)))}</summary>"
                         f"<pre>{html.escape(config)}</pre></details>")
    return "\n".join(parts) + "\n</body></html>\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Tables, plots and an HTML page from dynbench records.")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--axis", choices=["flops", "latency", "both"], default="both",
                    help="speed-up axis of the score plots: relative FLOPs, measured batch-1 latency, or both")
    ap.add_argument("--wandb", metavar="PROJECT", nargs="?", const="dynbench", default=None,
                    help="also log the tables and plots to wandb (project, default dynbench)")
    ap.add_argument("--readme", metavar="FILE", type=Path, default=None,
                    help="also write the headline table (headline.md) into FILE, between its headline lines")
    args = ap.parse_args(argv)
    try:
        if args.readme:
            _headline_block(args.readme)  # a README without the block stops before the report is written
        tables = write_report(args.folder, ("flops", "latency") if args.axis == "both" else (args.axis,), args.wandb)
        if args.readme:
            update_readme(args.readme, tables["headline"])
    except DynbenchError as err:
        sys.exit(f"error: {err}")
    print(tables["benchmark"] + "\n\n" + tables["operating_points"] + "\n\nSeeds compared:\n" + tables["seeds"])
    print(f"\nwrote {args.folder / 'summary.md'}, *.csv, *.png and {args.folder / 'report.html'}")


if __name__ == "__main__":
    main()
