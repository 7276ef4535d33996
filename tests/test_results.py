"""The committed benchmark folder is what it says: only the benchmark's records, each from the configs and method
versions of this checkout (``experiment=glue``), each point once, and the report its records make (the tables byte for
byte)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dynbench.cli import CONF_DIR, load_config
from dynbench.method import get_method
from dynbench.records import RecordFile, stable_hash
from dynbench.report import main as report_main, readme_headline
from dynbench.runner import _identity
from tests.conftest import ROOT
from tests.test_runner import CONTRACT

GLUE = ROOT / "results" / "glue"
RECORDS = sorted(GLUE.glob("*.jsonl"))
SCRIPT_JSON = ("sweep_cost_", "token_overhead_")  # what the benchmark scripts write beside the records
TIMED = ("latency_ms_b1", "speedup_latency_b1", "throughput_eval", "speedup_throughput_eval")


def _sweep() -> dict[str, list[str]]:
    params = OmegaConf.load(Path(CONF_DIR) / "experiment" / "glue.yaml").hydra.sweeper.params
    return {key: str(value).split(",") for key, value in params.items()}


@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_every_record_is_of_this_checkouts_benchmark_config(path: Path) -> None:
    records = RecordFile(path).records
    assert records, f"{path.name} is empty"
    first = records[0]
    sweep = _sweep()
    assert first["method"] in sweep["method"] and first["task"] in sweep["task"]
    assert str(first["seed"]) in sweep["seed"] and first["model"] == "minilm"
    cfg = load_config("experiment=glue", f"method={first['method']}", f"task={first['task']}",
                      f"seed={first['seed']}")
    # the data's digest is the TSVs' (checked by the runner when it reuses the file); the rest must be this
    # checkout's config: the task's recipe, the head rule, pooling, the method's settings
    expected = stable_hash(_identity(cfg, first["config"]["data"]))
    version = get_method(first["method"]).version
    # the wall-clock fields where the record was timed: the benchmark times seed 1 only (eval.timing)
    fields = set(CONTRACT) - (set() if cfg.eval.timing else set(TIMED))
    for record in records:
        assert fields <= set(record), f"{path.name} lacks {sorted(fields - set(record))}"
        assert record["speedup_flops"] == pytest.approx(record["flops_full"] / record["flops"], rel=1e-9)
        assert record["config_hash"] == expected, f"{path.name}: made under another config than experiment=glue's"
        assert record["method_version"] == version, f"{path.name}: method version {record['method_version']}"
        assert record["run_id"] == path.stem and not record["limited"]
        assert record["config"]["data"].startswith("tsv:"), "the benchmark runs on the original GLUE TSVs"
    points = [RecordFile._key(r) for r in records]  # a record's knob point, as the runner keys it
    assert len(points) == len(set(points)), f"{path.name} holds a point twice"


def _all_records() -> list[dict]:
    return [record for path in RECORDS for record in RecordFile(path).records]


@pytest.mark.skipif(not RECORDS, reason="no benchmark records yet")
def test_full_flops_are_one_number_per_task_across_methods_and_seeds() -> None:
    per_task: dict[str, set[float]] = {}
    for record in _all_records():
        per_task.setdefault(record["task"], set()).add(round(record["flops_full"], 3))
    assert {task: len(values) for task, values in per_task.items()} == {task: 1 for task in per_task}


@pytest.mark.skipif(not RECORDS, reason="no benchmark records yet")
def test_one_version_per_method() -> None:
    versions: dict[str, set[int]] = {}
    for record in _all_records():
        versions.setdefault(record["method"], set()).add(record["method_version"])
    assert {m: len(v) for m, v in versions.items()} == {m: 1 for m in versions}


def test_every_method_task_and_seed_of_the_benchmark_is_there() -> None:
    """Complete once the benchmark is: until then it names what is missing (the benchmark runs over many
    sittings, and each commits what finished)."""
    sweep = _sweep()
    have = {(r["method"], r["task"], str(r["seed"])) for r in _all_records()}
    # the minimum: seeds 1-3 on MRPC, RTE and STS-B, seed 1 on CoLA and SST-2; not the pairs the sweep skips
    # (a method that does not apply to a task: the entropy exits on STS-B)
    tasks = {t: load_config(f"task={t}").task for t in sweep["task"]}
    wanted = [(m, t, s) for s in sweep["seed"] for t in sweep["task"] for m in sweep["method"]
              if (s == "1" or t in ("mrpc", "rte", "stsb")) and get_method(m).applies_to(tasks[t])]
    missing = [f"{m}/{t}/seed{s}" for m, t, s in wanted if (m, t, s) not in have]
    if missing:
        pytest.skip(f"benchmark in progress: {len(missing)} of {len(wanted)} runs missing, next {missing[:3]}")


@pytest.mark.skipif(not RECORDS, reason="no benchmark records yet")
def test_the_folder_holds_records_notes_and_the_report_they_make(tmp_path: Path) -> None:
    copy = tmp_path / GLUE.name  # the page's title is the folder's name
    copy.mkdir()
    for path in RECORDS:
        shutil.copy(path, copy)
    report_main([str(copy)])
    made = {p.name for p in copy.iterdir() if p.suffix != ".jsonl"}
    committed = {p.name for p in GLUE.iterdir() if p.suffix not in (".jsonl", ".lock") and p.name != "NOTES.md"
                 and not (p.suffix == ".json" and p.name.startswith(SCRIPT_JSON))}  # .lock: git ignores them
    assert committed == made, "the folder holds files the report does not make, or lacks some: make report"
    # the tables byte for byte; the plots' bytes depend on matplotlib's version and fonts as well as on the records
    tables = sorted(name for name in made if name.endswith((".csv", ".md")))
    changed = [name for name in tables if (copy / name).read_bytes() != (GLUE / name).read_bytes()]
    assert changed == [], "the committed tables are not what the records make: make report"


@pytest.mark.skipif(not RECORDS, reason="no benchmark records yet")
def test_the_readmes_headline_table_is_the_committed_one() -> None:
    assert readme_headline(ROOT / "README.md") == (GLUE / "headline.md").read_text(), \
        "README.md's table is not results/glue/headline.md: make report"
