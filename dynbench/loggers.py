"""Where training curves and records go besides the records file: nowhere, CSV files, or wandb.

Named ``loggers`` so as not to shadow the standard library's ``logging``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from dynbench.config import LoggerConfig
from dynbench.errors import DynbenchError


class Logger:
    """The quiet default; subclasses send the same calls somewhere."""

    def log_config(self, config: dict[str, Any]) -> None: ...

    def log_metrics(self, values: dict[str, float], step: int) -> None: ...

    def log_record(self, record: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


class CsvLogger(Logger):
    """``metrics.csv`` (step, name, value) and ``records.csv`` in the run's output folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._metrics = open(folder / "metrics.csv", "w", newline="")
        self._writer = csv.writer(self._metrics)
        self._writer.writerow(["step", "name", "value"])
        self._records: list[dict[str, Any]] = []

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self._writer.writerow([step, name, value])

    def log_record(self, record: dict[str, Any]) -> None:
        self._records.append({k: v for k, v in record.items() if not isinstance(v, (dict, list))})
        with open(self.folder / "records.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self._records[0]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self._records)

    def finish(self) -> None:
        self._metrics.close()


class WandbLogger(Logger):
    """Weights & Biases: the config, training curves, each record's numbers as it comes, and at the end every
    record in a table (``records``). ``WANDB_MODE=offline`` works without an account."""

    def __init__(self, cfg: LoggerConfig, config: dict[str, Any], name: str) -> None:
        try:
            import wandb
        except ImportError:
            raise DynbenchError("logger=wandb needs wandb: pip install wandb (or pip install -e '.[wandb]')") from None
        self.wandb = wandb
        self.run = wandb.init(project=cfg.project, name=name, config=config)
        self.records: list[dict[str, Any]] = []

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self.run.log(values | {"train/stage_step": step})  # wandb's own step keeps growing across stages

    def log_record(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.run.log({f"record/{k}": v for k, v in record.items() if isinstance(v, (int, float))})

    def finish(self) -> None:
        if self.records:
            columns = sorted({k for r in self.records for k in r})
            rows = [[_cell(r.get(c)) for c in columns] for r in self.records]
            self.run.log({"records": self.wandb.Table(columns=columns, rows=rows)})
        self.run.finish()


def _cell(value: Any) -> Any:
    """A table cell: nested values (metrics, exit counts, config) as JSON text."""
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value


def make_logger(cfg: LoggerConfig, folder: Path, config: dict[str, Any], name: str) -> Logger:
    if cfg.name == "csv":
        return CsvLogger(folder)
    if cfg.name == "wandb":
        return WandbLogger(cfg, config, name)
    return Logger()
