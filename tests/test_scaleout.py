"""Sweeps beyond one process: a Hydra multirun through the submitit-local launcher on the tiny model (joblib's:
tests/test_concurrency.py), threads per job, and the wandb logger offline (no account, no network)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dynbench.cli import threads_per_job
from dynbench.runner import run
from tests.conftest import GLUE, ROOT


def _multirun(tmp_path: Path, *launcher: str) -> dict[str, list[dict]]:
    cmd = [sys.executable, "-m", "dynbench", "-m", *launcher, "method=full,truncate", "method.knobs=null",
           "model=tiny", "train=smoke", "task=rte", f"data_dir={GLUE}", f"results_dir={tmp_path / 'results'}",
           f"cache_dir={tmp_path / 'cache'}", "progress=false", "eval.timing=false",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {p.name.split("-")[0]: [json.loads(line) for line in p.read_text().splitlines()]
            for p in (tmp_path / "results").glob("*.jsonl")}


def test_submitit_local_multirun_runs_every_job_and_writes_its_records(tmp_path) -> None:
    records = _multirun(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert sorted(records) == ["full", "truncate"]
    assert (tmp_path / "sweep" / ".submitit").is_dir()  # the jobs really went through submitit


@pytest.mark.parametrize("launcher, cores, threads", [
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 8, 4),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 8, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -3}, 8, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -7}, 8, 4),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 16}, 8, 1),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, None),
])
def test_parallel_local_jobs_share_the_cores(launcher, cores, threads) -> None:
    assert threads_per_job(OmegaConf.create(launcher), cores) == threads


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """wandb in offline mode writing under ``tmp_path``; torn down after, since wandb keeps its settings
    (the folder among them) for the rest of the process."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield tmp_path
    wandb.teardown()


def test_wandb_offline_run_holds_the_records(config, tmp_path, wandb_offline) -> None:
    records = run(config("method=truncate", "task=rte", "eval.timing=false", "logger=wandb"))
    [table] = list(tmp_path.glob("wandb/offline-run-*/files/media/table/records_*.table.json"))
    logged = json.loads(table.read_text())
    column = logged["columns"].index("knob_value")
    assert sorted(row[column] for row in logged["data"]) == [r["knob_value"] for r in records] == [1, 2]


def test_report_plots_go_to_wandb_offline(tmp_path, wandb_offline) -> None:
    from dynbench.report import main
    from tests.test_report import _curve

    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _curve(1, 0.0)))
    main([str(folder), "--wandb", "dynbench-test"])
    images = {p.name.split("_")[0] for p in tmp_path.glob("wandb/offline-run-*/files/media/images/*.png")}
    assert {"mrpc"} == images and len(list(tmp_path.glob("wandb/offline-run-*/files/media/images/*.png"))) == 3
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/benchmark_*.table.json"))
