"""The recipe search's table: per task and learning rate, the calibration score after each epoch (the split
held out from train), the best epoch, the time per epoch, and which learning rate wins on calibration.

Reads the records that ``python -m dynbench experiment=recipe_search`` writes and writes ``search.md`` and
``search.csv`` beside them. Dev scores are listed for the reader and choose nothing.

    python benchmarks/recipe_search.py results/recipe_search
    python benchmarks/recipe_search.py results/head_rule --compare   # the same table, without choosing
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from dynbench.report import best_epoch, epochs_run, load_records


def search_table(folder: Path, choose: bool = True) -> pd.DataFrame:
    """One row per (task, lr, head rule, patience): the plain fine-tune's learning curve on calibration and what
    it cost; with ``choose``, which learning rate wins per task."""
    rows = []
    for record in load_records(folder).itertuples():
        [stage] = record.stages
        curve = stage["epoch_scores"] or []
        rows.append({
            "task": record.task, "lr": record.config["train"]["lr"], "seed": record.seed,
            "head_lr_scale": record.config["train"]["head_lr_scale"],
            "patience": record.config["train"]["early_stopping_patience"],
            "max_epochs": record.config["train"]["epochs"], "epochs_run": epochs_run(record.stages),
            "best_epoch": best_epoch(record.stages), "calib_score": stage["calib_score"],
            "calib_by_epoch": " ".join(f"{s:.3f}" for s in curve),
            "train_s": round(stage["seconds"]), "s_per_epoch": round(stage["seconds"] / max(1, len(curve))),
            "dev_score (not used)": record.score,
        })
    table = pd.DataFrame(rows).sort_values(["task", "lr", "head_lr_scale", "patience", "seed"]).reset_index(drop=True)
    if not choose:
        return table
    # the winner per task: the best calibration score (ties: the smaller lr, the first in this order)
    best = table.groupby("task").calib_score.transform("max")
    table["chosen"] = ""
    for task, group in table[table.calib_score == best].groupby("task"):
        table.loc[group.index[0], "chosen"] = "yes"
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, nargs="?", default=Path("results/recipe_search"))
    ap.add_argument("--compare", action="store_true", help="list the runs without choosing a learning rate")
    args = ap.parse_args()
    folder = args.folder
    table = search_table(folder, choose=not args.compare)
    table.to_csv(folder / "search.csv", index=False, float_format="%.6g")
    (folder / "search.md").write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    print(table.to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
