"""Operating points from records: chosen on the calibration split, reported on dev; bad records named."""
from __future__ import annotations

import json

import pytest

from dynbench.errors import DynbenchError
from dynbench.report import load_records, operating_points, plot_curves, summary


def _record(method: str, knob_value, score: float, calib: float, speedup: float) -> dict:
    return {"method": method, "task": "mrpc", "model": "minilm", "seed": 1, "knob": None if method == "full" else "k",
            "knob_value": knob_value, "score": score, "calib_score": calib, "flops": 1e9 / speedup,
            "flops_full": 1e9, "speedup_flops": speedup, "calib_speedup_flops": speedup * 1.01, "speedup_latency_b1": speedup * 0.9,
            "speedup_throughput_eval": speedup * 0.8, "speedup_flops_b1_examples": speedup,
            "speedup_flops_eval_examples": speedup, "budget_hash": "b1", "limited": False}


def test_operating_point_is_chosen_on_calibration_and_reported_on_dev(tmp_path) -> None:
    records = [_record("full", None, 0.80, 0.90, 1.0),
               _record("pabee", 1, 0.85, 0.85, 3.0),    # best dev, but calibration says < 99%: not eligible
               _record("pabee", 2, 0.70, 0.895, 2.0),   # eligible on calibration (0.895 >= 0.891); poor on dev
               _record("pabee", 3, 0.80, 0.90, 1.5)]
    smoke = _record("pabee", 4, 0.9, 0.99, 9.0) | {"limited": True}  # a smoke run's record: ignored
    other_budget = _record("full", None, 0.5, 0.5, 1.0) | {"budget_hash": "b2"}  # a different training budget
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*records, smoke, other_budget]))
    [point] = operating_points(load_records(tmp_path)).to_dict("records")
    assert point["knob_value"] == 2 and point["score"] == 0.70 and point["speedup_flops"] == 2.0
    assert point["score_vs_full"] == pytest.approx(0.875)
    assert point["speedup_latency_b1_over_flops"] == pytest.approx(0.9)
    assert "Operating points" in summary(load_records(tmp_path))
    [png] = plot_curves(load_records(tmp_path), tmp_path)
    assert png.name == "mrpc_score_vs_flops.png" and png.stat().st_size > 10_000


def test_bad_records_name_the_file_and_line(tmp_path) -> None:
    (tmp_path / "bad.jsonl").write_text(json.dumps(_record("full", None, 0.8, 0.9, 1.0)) + "\n{oops\n")
    with pytest.raises(DynbenchError, match=r"bad.jsonl:2: not a JSON record"):
        load_records(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"method": "full"}) + "\n")
    with pytest.raises(DynbenchError, match=r"bad.jsonl:1: record lacks \['task'"):
        load_records(tmp_path)
