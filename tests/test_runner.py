"""A whole run through the runner: records with the contract's fields, re-runs, training knobs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from dynbench.errors import DynbenchError
from dynbench.runner import run

# README "Record fields": outside tools read these names; extend, never rename
CONTRACT = ["method", "task", "model", "seed", "knob", "knob_value", "score", "metrics", "flops", "flops_full",
            "speedup_flops", "layers_mean", "tokens_mean", "latency_ms_b1", "speedup_latency_b1", "throughput_eval",
            "speedup_throughput_eval", "train_seconds", "peak_rss_mb", "git_commit", "config_hash"]


def test_full_run_writes_one_record_with_every_contract_field(config) -> None:
    cfg = config("method=full", "task=mrpc")
    [record] = run(cfg)
    assert set(CONTRACT) <= set(record)
    assert record["speedup_flops"] == 1.0 and record["layers_mean"] == 2 and record["limited"] is True
    assert set(record["metrics"]) == {"accuracy", "f1"}
    assert record["score"] == pytest.approx((record["metrics"]["accuracy"] + record["metrics"]["f1"]) / 2)
    assert record["latency_ms_b1"] > 0 and record["throughput_eval"] > 0 and record["speedup_latency_b1"] > 0
    assert record["eval_seconds"] > 0 and record["timing_seconds"] > 0 and record["train_seconds"] > 0
    [path] = list(Path(cfg.results_dir).glob("*.jsonl"))
    assert json.loads(path.read_text()) == record
    # the seconds above are this machine's: the record says which (the benchmark runs on many)
    assert record["machine"]["cores"] == os.cpu_count() and record["machine"]["torch"] == torch.__version__
    assert record["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["machine"]["cpu"] and "gpu" not in record["machine"]


def test_rerun_neither_duplicates_nor_retrains(config) -> None:
    cfg = config("method=full", "task=rte")
    first = run(cfg)
    second = run(cfg)
    assert second == first  # nothing re-evaluated, nothing duplicated


def test_a_larger_grid_resumes_into_the_same_records(config) -> None:
    cfg = config("method=truncate", "task=rte", "eval.timing=false", "method.knobs=[1]")
    [first] = run(cfg)
    both = run(config("method=truncate", "task=rte", "eval.timing=false", "method.knobs=[2,1]"))
    assert [r["knob_value"] for r in both] == [1, 2] and both[0] == first  # k=1 kept, not re-evaluated
    assert both[1]["stages"][0]["reused"] is False and {r["config_hash"] for r in both} == {first["config_hash"]}
    assert len(list(Path(cfg.results_dir).glob("*.jsonl"))) == 1


def test_a_tasks_own_grid_is_swept_on_that_task_only_and_keeps_the_run_identity(config) -> None:
    from dynbench.method import get_method
    from dynbench.records import stable_hash
    from dynbench.runner import _identity

    own = config("method=truncate", "task=rte", "eval.timing=false", "+method.task_knobs.rte=[1]")
    assert [r["knob_value"] for r in run(own)] == [1]  # the default grid is k = 1, 2

    def grid(*overrides: str) -> list:
        cfg = config("method=truncate", *overrides)
        return get_method("truncate")(cfg.method, cfg.task).knob_values(2)

    assert grid("task=mrpc", "+method.task_knobs.rte=[1]") == [1, 2]  # another task keeps the default
    assert grid("task=rte", "method.knobs=[2]", "+method.task_knobs.rte=[1]") == [2]  # method.knobs wins
    # a grid says which points run, not what a point gives: the records file and stage keys stay the same
    default = config("method=truncate", "task=rte", "eval.timing=false")
    assert stable_hash(_identity(own, "d")) == stable_hash(_identity(default, "d"))


def test_records_of_another_method_version_are_evaluated_again(config, monkeypatch) -> None:
    from methods.truncate import Truncate

    cfg = config("method=truncate", "task=rte", "eval.timing=false", "method.knobs=[1]")
    [old] = run(cfg)
    monkeypatch.setattr(Truncate, "version", old["method_version"] + 1)
    [new] = run(cfg)
    assert new["method_version"] == old["method_version"] + 1  # evaluated again (its checkpoint reused)
    [path] = list(Path(cfg.results_dir).glob("*.jsonl"))
    assert [json.loads(line)["method_version"] for line in path.read_text().splitlines()] == [new["method_version"]]


def test_a_training_subset_is_part_of_the_budget(config) -> None:
    [whole] = run(config("method=full", "task=rte", "eval.timing=false"))
    [sub] = run(config("method=full", "task=rte", "eval.timing=false", "train.train_subset=20"))
    assert (whole["train_examples"], sub["train_examples"]) == (48, 20)  # train=smoke keeps 48 examples
    assert sub["budget_hash"] != whole["budget_hash"] and sub["config_hash"] != whole["config_hash"]
    assert "train_subset" not in whole["config"]["train"]  # unset: the keys of earlier records stand
    assert sub["eval_examples"] == whole["eval_examples"]


def test_follow_up_epochs_are_part_of_the_budget_and_their_default_keeps_earlier_keys(config) -> None:
    from dynbench.runner import _identity, stage_key_base

    default = config("method=deebert", "task=rte")
    other = config("method=deebert", "task=rte", "train.followup_epochs=1")
    assert default.train.followup_epochs == 3  # left out of keys: DeeBERT and the others went up a version instead
    for keys in (stage_key_base, _identity):
        assert "followup_epochs" not in keys(default, "d")["train"] and keys(other, "d") != keys(default, "d")


def test_truncate_trains_one_model_per_k_and_saves_flops(config) -> None:
    records = run(config("method=truncate", "task=rte", "eval.timing=false"))
    assert [r["knob_value"] for r in records] == [1, 2]
    one, two = records
    assert (one["layers_mean"], two["layers_mean"]) == (1, 2)
    assert one["speedup_flops"] > 1.5 and two["speedup_flops"] == 1.0
    assert one["flops_full"] == two["flops_full"]
    assert one["stages"][0]["key"] != two["stages"][0]["key"]
    assert "latency_ms_b1" not in one


def test_knob_grid_is_checked_against_the_model_before_any_training(config) -> None:
    cfg = config("method=truncate", "method.knobs=[1,3]")
    with pytest.raises(DynbenchError, match="k=3 exceeds the backbone's 2 layers"):
        run(cfg)
    assert not (Path(cfg.cache_dir) / "stages").exists()  # k=1 was not trained first


def test_stsb_runs_as_regression(config) -> None:
    [record] = run(config("method=full", "task=stsb", "eval.timing=false"))
    assert set(record["metrics"]) == {"pearson", "spearman"}


def test_csv_logger_writes_curves_and_records(config, tmp_path) -> None:
    from dynbench.runner import run as run_once

    run_once(config("method=full", "task=wnli", "eval.timing=false", "logger=csv"), tmp_path / "out")
    curves = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    assert curves[0] == "step,name,value" and any("plain_finetune/loss" in line for line in curves[1:])
    assert "speedup_flops" in (tmp_path / "out" / "records.csv").read_text().splitlines()[0]


def test_wandb_without_the_package_is_a_clear_error(monkeypatch, tmp_path) -> None:
    import sys

    from dynbench.config import LoggerConfig
    from dynbench.loggers import make_logger

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(DynbenchError, match="logger=wandb needs wandb: pip install wandb"):
        make_logger(LoggerConfig(name="wandb"), tmp_path, {}, "run")


def test_embedded_minilm_on_a_real_glue_slice(config) -> None:
    records = run(config("model=minilm", "method=pabee", "task=mrpc", "eval.timing=false"))
    assert all(r["model"] == "minilm" and r["eval_examples"] == 32 and r["limited"] for r in records)
    assert records[0]["flops_full"] > 1e9  # six MiniLM layers on real MRPC pairs (about 50 tokens)
    assert [r["knob_value"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["flops"] <= r["flops_full"] * 1.01 for r in records)  # exit heads are cheap beside layers


def test_provenance_is_dirty_for_changed_code_not_for_changed_results(tmp_path, monkeypatch) -> None:
    import subprocess

    from dynbench.records import git_dirty

    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "a.jsonl").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "a.jsonl").write_text("{}\n{}\n")  # a run's records, written beside it
    assert git_dirty() is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_dirty() is True


def test_trained_model_loads_what_a_run_trained_without_training(config, monkeypatch) -> None:
    import torch

    from dynbench import train
    from dynbench.runner import load_data, trained_model

    cfg = config("method=truncate", "task=rte", "eval.timing=false", "method.knobs=[1]")
    run(cfg)
    monkeypatch.setattr(train, "_Run", lambda *a, **k: pytest.fail("trained again"))
    method, model = trained_model(cfg, load_data(cfg), 1)
    _, again = trained_model(cfg, load_data(cfg), 1)
    assert not model.training and model.backbone.num_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_atomic_writes_are_readable_by_the_other_users_of_a_shared_folder(tmp_path) -> None:
    from dynbench.records import atomic_write_text

    atomic_write_text(tmp_path / "r.jsonl", "{}\n")
    assert (tmp_path / "r.jsonl").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
