"""``python -m dynbench`` end to end through Hydra: a single run, a multirun with a failing job, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GLUE, ROOT

SMOKE = ["model=tiny", "train=smoke", "progress=false", "eval.repeats=1", "eval.latency_examples=2",
         "eval.throughput_examples=8"]


def dynbench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # PYTHONPATH: the checkout under test, whichever dynbench the environment has installed
    env = {**os.environ, "GLUE_DIR": str(GLUE), "DYNBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "dynbench", *args, f"hydra.run.dir={tmp_path}/run",
                           f"hydra.sweep.dir={tmp_path}/sweep", f"results_dir={tmp_path}/results"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((tmp_path / "results").glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_single_run_prints_the_summary_table(tmp_path) -> None:
    out = dynbench(tmp_path, "method=full", "task=mrpc", *SMOKE)
    assert out.returncode == 0, out.stderr
    assert "speedup_flops" in out.stdout + out.stderr and "latency_ms_b1" in out.stdout + out.stderr
    assert [r["method"] for r in _records(tmp_path)] == ["full"]


def test_multirun_keeps_going_past_a_failing_job(tmp_path) -> None:
    # QNLI's train.tsv is missing from shared/glue: that job fails, the others finish and keep their records
    out = dynbench(tmp_path, "-m", "method=full,truncate", "task=rte,qnli", *SMOKE)
    assert out.returncode != 0
    assert "2 job(s) of the multirun failed" in out.stderr
    records = _records(tmp_path)
    assert {(r["method"], r["task"]) for r in records} == {("full", "rte"), ("truncate", "rte")}
    assert len(records) == 3  # full + truncate k=1,2


def test_a_multirun_skips_a_method_that_does_not_apply_to_a_task(tmp_path) -> None:
    # DeeBERT's entropy has no meaning on STS-B's one output: one run says so, a sweep goes on without it
    out = dynbench(tmp_path, "-m", "method=full,deebert", "task=stsb", *SMOKE)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipped: method=deebert does not apply to the regression task stsb" in out.stdout + out.stderr
    assert [r["method"] for r in _records(tmp_path)] == ["full"]


BAD_INPUT = [
    (["method=pabe"], "error: unknown method 'pabe'"),
    (["task=mnli2"], "choose from: cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb, wnli"),
    (["model=bert"], "unknown model 'bert'"),
    (["method=truncate", "method.knobs=[0,2]"], "error: bad config: method.knobs: layer counts k must be integers >= 1"),
    (["train.lr=-1"], "error: bad config: train: epochs, batch_size and lr must be positive"),
    (["train.epoch=3"], "error: bad config: no key 'train.epoch' (did you mean train.epochs?)"),
    (["data_dir=/nowhere"], "error: data_dir=/nowhere has no folder MRPC/"),
    (["method=deebert", "task=stsb"], "error: method=deebert does not apply to the regression task stsb"),
    (["method=dact", "+method.task_knobs.stsbb=[0.1]"],
     "error: method.task_knobs: unknown task 'stsbb' (did you mean 'stsb'?); choose from: cola,"),
    (["method=dact", "+method.task_knobs.rte=[-0.1]"], "error: bad config: method.task_knobs.rte: ponder weights tau must"),
]
# every bad input through ``entry`` (what ``python -m dynbench`` runs) in one process, each one's exit message:
# one start of Python and its imports instead of one each
ENTRIES = """import json, os, sys
from hydra.core.global_hydra import GlobalHydra
from dynbench.cli import entry
exits = []
for args in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    os.environ.pop("HYDRA_FULL_ERROR", None)  # entry sets it for Hydra; left set, it reads as the user's
    sys.argv = ["dynbench", *args]
    try:
        entry()
        exits.append(None)
    except SystemExit as done:
        exits.append(done.code)
print(json.dumps(exits))
"""


@pytest.fixture(scope="module")
def bad_input_exits(tmp_path_factory) -> list:
    tmp_path = tmp_path_factory.mktemp("bad_input")
    cases = [[*SMOKE, *args, f"hydra.run.dir={tmp_path}/run{i}", f"results_dir={tmp_path}/results"]
             for i, (args, _) in enumerate(BAD_INPUT)]
    env = {**os.environ, "GLUE_DIR": str(GLUE), "DYNBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", ENTRIES, json.dumps(cases)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=[" ".join(args) for args, _ in BAD_INPUT])
def test_bad_input_gives_one_clear_line(bad_input_exits: list, case: int) -> None:
    message = bad_input_exits[case]
    assert isinstance(message, str) and "\n" not in message  # exits non-zero, with one line
    assert BAD_INPUT[case][1] in message


def test_a_bad_input_ends_the_command_with_its_line(tmp_path) -> None:
    out = dynbench(tmp_path, *SMOKE, "data_dir=/nowhere")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == ("error: data_dir=/nowhere has no folder MRPC/ for task mrpc; "
                                                   "point GLUE_DIR or data_dir at a GLUE copy")


def test_every_conf_method_is_registered_and_back() -> None:
    from dynbench.method import list_methods

    assert sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")) == list_methods()


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment: str) -> None:
    from dynbench.cli import load_config

    cfg = load_config(f"experiment={experiment}")
    assert cfg.results_dir and cfg.model.name in ("minilm", "tiny")


def test_the_benchmark_times_seed_1_only() -> None:
    """Wall-clock ratios depend on the machine, not on the seed's weights: experiment=glue times seed 1 only,
    while a plain run times whatever its seed."""
    from dynbench.cli import load_config

    timed = {seed: load_config("experiment=glue", f"seed={seed}").eval.timing for seed in (1, 2, 3)}
    assert timed == {1: True, 2: False, 3: False}
    assert load_config("seed=2").eval.timing is True
