"""Tables from records: every knob value's point, and each method's operating point at ≥ 99% of full.

Operating points are chosen on the calibration split (held out from train) and reported on dev, never
chosen on dev (METHODS.md §0.4). Deterministic from the records; never retrains or re-evaluates.

    python -m dynbench.report results/exits   # writes results/exits/summary.md and <task>_score_vs_flops.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import pandas as pd

from dynbench.errors import DynbenchError

matplotlib.use("Agg")  # files only, no display

REQUIRED = ["method", "task", "model", "seed", "knob", "knob_value", "score", "flops", "flops_full", "speedup_flops"]
RUN = ["task", "model", "seed"]
CURVE_COLUMNS = ["task", "method", "knob", "knob_value", "score", "calib_score", "speedup_flops", "layers_mean",
                 "speedup_latency_b1", "speedup_throughput_eval", "exit_counts"]


def load_records(folder: Path) -> pd.DataFrame:
    """Every record of every ``*.jsonl`` under ``folder``; a bad line is reported with its file and line."""
    rows = []
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
            rows.append(record)
    if not rows:
        raise DynbenchError(f"no records (*.jsonl) under {folder}")
    return pd.DataFrame(rows)


def operating_points(frame: pd.DataFrame, keep: float = 0.99) -> pd.DataFrame:
    """Per run and method: the knob value with the largest calibration FLOPs speed-up whose calibration score
    is ≥ ``keep`` × the full model's, with its dev figures and wall-clock/FLOPs speed-up ratios."""
    out = []
    if "limited" in frame:
        frame = frame[frame.limited != True]  # noqa: E712  smoke runs never make operating points
    group = RUN + (["budget_hash"] if "budget_hash" in frame else [])  # never mix training budgets
    for key, run in frame.groupby(group):
        full = run[run.method == "full"]
        if full.empty or "calib_score" not in run:
            continue
        full_calib, full_dev = full.calib_score.iloc[0], full.score.iloc[0]
        for method, rows in run[run.method != "full"].groupby("method"):
            ok = rows[rows.calib_score >= keep * full_calib]
            if ok.empty:
                continue
            best = ok.sort_values(["calib_speedup_flops", "calib_score"], ascending=False).iloc[0]
            point = dict(zip(group, key)) | {
                "method": method, "knob": best.knob, "knob_value": best.knob_value, "score": best.score,
                "score_vs_full": best.score / full_dev, "speedup_flops": best.speedup_flops,
            }
            # wall-clock speed-up over the FLOPs speed-up of the same (timed) examples
            for timing, examples in (("speedup_latency_b1", "speedup_flops_b1_examples"),
                                     ("speedup_throughput_eval", "speedup_flops_eval_examples")):
                if pd.notna(best.get(timing)) and pd.notna(best.get(examples)):
                    point[timing] = best[timing]
                    point[f"{timing}_over_flops"] = best[timing] / best[examples]
            out.append(point)
    return pd.DataFrame(out)


def plot_curves(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Per task: dev score against relative FLOPs, one curve per method (a point per knob value)."""
    import matplotlib.pyplot as plt

    paths = []
    for task, rows in frame.groupby("task"):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for method, points in sorted(rows.groupby("method"), key=lambda kv: kv[0]):
            points = points.assign(rel=points.flops / points.flops_full).sort_values("rel")
            style = {"marker": "*", "markersize": 14, "linestyle": "none"} if len(points) == 1 else {"marker": "o"}
            ax.plot(points.rel, points.score, label=method, **style)
        ax.set_xlabel("FLOPs per example, relative to the full model")
        ax.set_ylabel("dev score (primary metric)")
        ax.set_title(f"{task}: score vs compute")
        ax.grid(alpha=0.3)
        ax.legend()
        path = folder / f"{task}_score_vs_flops.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def summary(frame: pd.DataFrame) -> str:
    curve = frame[[c for c in CURVE_COLUMNS if c in frame]].sort_values(["task", "method", "speedup_flops"])
    points = operating_points(frame)
    fmt = lambda f: f.to_markdown(index=False, floatfmt=".4g")  # noqa: E731
    text = "# Points (every knob value; scores on dev)\n\n" + fmt(curve)
    if not points.empty:
        text += "\n\n# Operating points (≥ 99% of full's score, chosen on the calibration split, reported on dev)\n\n"
        text += fmt(points)
    return text + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Tables from dynbench records.")
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    try:
        frame = load_records(args.folder)
    except DynbenchError as err:
        sys.exit(f"error: {err}")
    text = summary(frame)
    (args.folder / "summary.md").write_text(text)
    plot_curves(frame, args.folder)
    print(text)


if __name__ == "__main__":
    main()
