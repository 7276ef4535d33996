"""Many processes, one results folder and one cache (README: "Many jobs, one results folder and one cache"):
records end as the union of every process's points, a stage or tokenised split that several processes need is
made once, and a lock goes with a killed holder. The processes are real ones, started together."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import GLUE, ROOT

# training long enough (a few seconds on the tiny model) that processes started together overlap in it; one
# torch thread each, since several share the cores
TINY = ["model=tiny", "train=smoke", "train.epochs=20", "train.max_steps=120", "train.threads=1", "task=rte",
        "progress=false", "eval.timing=false", f"data_dir={GLUE}"]
HOLD = """import sys, time
from pathlib import Path
from dynbench.locks import exclusive
with exclusive(Path(sys.argv[1]), "the test's holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def _start(tmp_path: Path, name: str, *args: str) -> subprocess.Popen:
    """``python -m dynbench`` of this checkout (``cwd``), with its output in ``<tmp_path>/<name>.log``; ``args``
    replace ``TINY``'s settings of the same keys."""
    keys = {arg.partition("=")[0] for arg in args}
    tiny = [arg for arg in TINY if arg.partition("=")[0] not in keys]
    with open(tmp_path / f"{name}.log", "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dynbench", *args, *tiny, f"results_dir={tmp_path / 'results'}",
             f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / name}", f"hydra.sweep.dir={tmp_path / name}"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _outputs(tmp_path: Path, processes: dict[str, subprocess.Popen]) -> dict[str, str]:
    """Wait for every process; each must succeed. Returns their outputs by name."""
    for name, process in processes.items():
        assert process.wait(timeout=300) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    return {name: (tmp_path / f"{name}.log").read_text() for name in processes}


def _records(tmp_path: Path, method: str) -> list[dict]:
    [path] = (tmp_path / "results").glob(f"{method}-*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _trained(records: list[dict]) -> list[bool]:
    """Whether the process that wrote ``records`` trained each of their stages (rather than loading it)."""
    [stages] = {json.dumps([s["reused"] for s in r["stages"]]) for r in records}  # one model per process
    return [not reused for reused in json.loads(stages)]


def test_runs_started_together_add_up_and_make_what_they_share_once(tmp_path) -> None:
    grids = {"low": [0.1, 0.2, 0.3, 0.35], "high": [0.4, 0.5, 0.6, 0.65]}  # two parts of one run's grid
    processes = {name: _start(tmp_path, name, "method=deebert", f"method.knobs=[{','.join(map(str, grid))}]")
                 for name, grid in grids.items()}
    processes["full"] = _start(tmp_path, "full", "method=full")  # shares deebert's first stage
    outputs = _outputs(tmp_path, processes)
    deebert = _records(tmp_path, "deebert")
    assert sorted(r["knob_value"] for r in deebert) == sorted(grids["low"] + grids["high"])  # each point once
    trained = {name: _trained([r for r in deebert if r["knob_value"] in grid]) for name, grid in grids.items()}
    trained["full"] = _trained(_records(tmp_path, "full"))
    assert sum(stages[0] for stages in trained.values()) == 1  # plain_finetune: by one process of the three
    assert trained["low"][1] + trained["high"][1] == 1  # deebert's off-ramps: by one of its two
    assert "".join(outputs.values()).count("another process is training (or loading) stage plain_finetune") >= 1
    assert "".join(outputs.values()).count("tokenising rte into") == 1


def test_a_joblib_multirun_writes_every_jobs_records_and_trains_the_stage_they_share_once(tmp_path) -> None:
    _outputs(tmp_path, {"sweep": _start(tmp_path, "sweep", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                        "method=full,deebert", "train.threads=null")})  # cli.threads_per_job sets them
    full, deebert = _records(tmp_path, "full"), _records(tmp_path, "deebert")
    assert len(full) == 1 and len({r["knob_value"] for r in deebert}) == len(deebert) > 10  # deebert's grid
    assert _trained(full)[0] + _trained(deebert)[0] == 1
    jobs = "".join(p.read_text() for p in (tmp_path / "sweep").glob("*/*.log"))
    assert (jobs.count("plain_finetune: trained"), jobs.count("plain_finetune: reused")) == (1, 1)


def test_a_lock_held_by_a_killed_process_is_free_at_once(tmp_path, caplog) -> None:
    from dynbench.locks import exclusive

    target = tmp_path / "stage"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    taken = threading.Event()

    def take() -> None:
        with exclusive(target, "the test's holder"):
            taken.set()

    try:
        assert holder.stdout.readline() == "held\n"
        with caplog.at_level(logging.INFO, logger="dynbench.locks"):
            threading.Thread(target=take, daemon=True).start()
            assert not taken.wait(1)  # the holder lives: the lock waits
            assert f"waiting for {target}: the test's holder" in caplog.text
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            assert taken.wait(10)  # the holder is killed: its lock is gone with it, not left behind
    finally:
        holder.kill()
