"""The report from records: Pareto fronts and the numbers read off them, operating points chosen on one half
of dev and read on the other, seeds, plots and the HTML page; bad records named."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dynbench import pareto
from dynbench.errors import DynbenchError
from dynbench.report import (HEADLINE_BEGIN, HEADLINE_END, benchmark_table, compute_table, full_table, head_table,
                             load_records, main, matched_seeds, operating_points, plot_curves, plot_exits, plot_heads,
                             plot_tokens, points)


def _record(method: str, knob_value, score: float, calib: float, speedup: float, folds=None, fold_speedups=None) -> dict:
    return {"method": method, "task": "mrpc", "model": "minilm", "seed": 1, "knob": None if method == "full" else "k",
            "knob_value": knob_value, "score": score, "calib_score": calib, "flops": 1e9 / speedup,
            "flops_full": 1e9, "speedup_flops": speedup, "calib_speedup_flops": speedup * 1.01, "speedup_latency_b1": speedup * 0.9,
            "speedup_latency_b1_range": [speedup * 0.85, speedup * 0.95], "speedup_throughput_eval": speedup * 0.8,
            "speedup_flops_b1_examples": speedup,
            "speedup_flops_eval_examples": speedup, "budget_hash": "b1", "limited": False,
            "fold_scores": folds or [score, score], "fold_score_se": [0.01, 0.01],
            "fold_speedup_flops": fold_speedups or [speedup, speedup]}


def test_operating_point_is_chosen_on_one_dev_half_and_read_on_the_other(tmp_path) -> None:
    records = [_record("full", None, 0.85, 0.90, 1.0, folds=[0.80, 0.90]),
               _record("pabee", 1, 0.78, 0.99, 3.0, folds=[0.85, 0.70]),  # keeps 99% on half 0 only
               _record("pabee", 2, 0.80, 0.99, 2.05, folds=[0.70, 0.895], fold_speedups=[2.0, 2.1]),  # half 1 only
               _record("pabee", 3, 0.85, 0.90, 1.5, folds=[0.80, 0.90]),  # both halves, but slower
               _record("deebert", 1, 0.68, 0.99, 2.0, folds=[0.85, 0.50])]  # nothing keeps 99% on half 1
    smoke = _record("pabee", 4, 0.9, 0.99, 9.0) | {"limited": True}  # a smoke run's record: ignored
    other_budget = _record("full", None, 0.5, 0.5, 1.0) | {"budget_hash": "b2"}  # a different training budget
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*records, smoke, other_budget]))
    ops = operating_points(load_records(tmp_path)).set_index("method")
    pabee = ops.loc["pabee"]
    # half 0 chooses k=1 (3x), read on half 1: 0.70 at 3x; half 1 chooses k=2 (2.1x), read on half 0: 0.70 at 2x
    assert pabee.knob_value == "1 | 2" and pabee.score == pytest.approx(0.70) and pabee.speedup_flops == 2.5
    assert pabee.score_vs_full == pytest.approx(0.70 / 0.85)
    half = 1.96 * (2 * 0.01 ** 2) ** 0.5 / 2
    assert (pabee.score_ci95_low, pabee.score_ci95_high) == (pytest.approx(0.70 - half), pytest.approx(0.70 + half))
    assert pabee.speedup_latency_b1_over_flops == pytest.approx(0.9)
    # the clock's spread at the chosen points (3x and 2.05x), averaged over them as the speed-up is
    assert pabee.speedup_latency_b1_low == pytest.approx((3.0 + 2.05) / 2 * 0.85)
    assert pabee.speedup_latency_b1_high == pytest.approx((3.0 + 2.05) / 2 * 0.95)
    # half 1 has no DeeBERT point: a user would run the full model there (full's half-0 score, 1x)
    deebert = ops.loc["deebert"]
    assert deebert.knob_value == "1 | full" and deebert.score == pytest.approx((0.50 + 0.80) / 2)
    assert deebert.speedup_flops == pytest.approx((2.0 + 1.0) / 2)
    [png] = plot_curves(load_records(tmp_path), tmp_path)
    assert png.name == "mrpc_score_vs_flops.png" and png.stat().st_size > 10_000


def test_elue_score_against_static_truncation_never_extrapolates() -> None:
    # truncation at relative FLOPs 1/3, 2/3, 1 scores 0.6, 0.75, 0.8
    ref_speedup, ref_score = np.array([3.0, 1.5, 1.0]), np.array([0.6, 0.75, 0.8])
    # points at relative FLOPs 0.5 (truncation: 0.675) and 1.0 (0.8); 4x (0.25) is cheaper than every k: out
    value, used = pareto.elue_score(np.array([2.0, 1.0, 4.0]), np.array([0.70, 0.80, 0.99]), ref_speedup, ref_score)
    assert used == 2 and value == pytest.approx(((0.70 - 0.675) + 0.0) / 2)
    assert pareto.elue_score(np.array([5.0]), np.array([0.9]), ref_speedup, ref_score)[1] == 0


def test_elue_in_the_benchmark_table_per_seed_then_averaged(tmp_path) -> None:
    records = []
    for seed, gain in ((1, 0.02), (2, 0.04)):
        base = {"seed": seed, "budget_hash": "b1"}
        records += [_record("truncate", k, s, s, sp) | base for k, s, sp in [(1, 0.6, 3.0), (2, 0.75, 1.5), (3, 0.8, 1.0)]]
        records += [_record("full", None, 0.8, 0.8, 1.0) | base, _record("pabee", 1, 0.675 + gain, 0.7, 2.0) | base]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    row = benchmark_table(load_records(tmp_path)).set_index("method").loc["pabee"]
    assert row.elue == pytest.approx(0.03) and row.elue_std == pytest.approx(np.std([0.02, 0.04], ddof=1))


def test_head_scores_per_layer_per_trained_model_beside_full_and_the_majority(tmp_path) -> None:
    heads = {1: [0.6, 0.7, 0.8], 2: [0.62, 0.74, 0.8]}  # per seed; every knob point of one model repeats them
    records = [_record("full", None, 0.80 + 0.02 * (seed - 1), 0.8, 1.0) | {"seed": seed} for seed in (1, 2)]
    records += [_record("pabee", k, 0.7, 0.7, 3.0 / k) | {"seed": seed, "knob_at": "infer", "head_scores": heads[seed],
                                                        "majority_score": 0.68} for seed in (1, 2) for k in (1, 2)]
    records += [_record("dact", tau, 0.7, 0.7, 2.0) | {"knob_at": "train", "head_scores": [tau, 0.5, 0.6],
                                                     "majority_score": 0.68} for tau in (0.1, 0.2)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = head_table(load_records(tmp_path))
    [pabee] = table[table.method == "pabee"].itertuples()
    assert pd.isna(pabee.trained_knob) and pabee.seeds == 2
    assert [pabee.layer_1, pabee.layer_2, pabee.layer_3] == pytest.approx([0.61, 0.72, 0.8])
    assert pabee.full == pytest.approx(0.81) and pabee.majority == pytest.approx(0.68)
    dact = table[table.method == "dact"].set_index("trained_knob")  # one row per DACT model (tau trains)
    assert dact.layer_1.to_dict() == {"0.1": pytest.approx(0.1), "0.2": pytest.approx(0.2)}
    [png] = plot_heads(load_records(tmp_path), tmp_path)
    assert png.name == "mrpc_heads.png" and png.stat().st_size > 10_000


def test_the_runners_records_of_two_seeds_are_averaged_as_one_experiment(config, tmp_path) -> None:
    from dynbench.runner import run

    records = [run(config("method=full", "task=rte", "eval.timing=false", f"seed={seed}"))[0] for seed in (1, 2)]
    assert records[0]["budget_hash"] != records[1]["budget_hash"]  # it keys each seed's stages
    folder = tmp_path / "unlimited"  # smoke records are left out of reports; here they stand for real ones
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r | {"limited": False}) + "\n" for r in records))
    [row] = full_table(load_records(folder)).itertuples()
    assert row.seeds == 2 and row.score == pytest.approx(np.mean([r["score"] for r in records]))


def test_full_table_gives_mean_std_per_seed_scores_metrics_and_the_kept_epoch(tmp_path) -> None:
    records = [_record("full", None, score, 0.8, 1.0) | {
        "seed": seed, "metrics": {"accuracy": score - 0.01, "f1": score + 0.01}, "train_seconds": 100.0 * seed,
        "stages": [{"name": "plain_finetune", "key": f"k{seed}", "seconds": 100.0 * seed, "reused": False,
                    "epoch_scores": scores}]}
        for seed, score, scores in ((2, 0.84, [0.7, 0.8, 0.8, 0.7]), (1, 0.80, [0.7, 0.75, 0.9]))]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    [row] = full_table(load_records(tmp_path)).itertuples()
    assert row.seeds == 2 and row.per_seed == [0.80, 0.84]  # in seed order
    assert row.score == pytest.approx(0.82) and row.score_std == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert row.accuracy == pytest.approx(0.81) and row.f1 == pytest.approx(0.83)
    assert row.best_epoch == [3, 2] and row.train_s == pytest.approx(150.0)  # ties: the first best epoch
    assert row.epochs_run == [3, 4] and row.s_per_epoch == pytest.approx((100 / 3 + 200 / 4) / 2)


def test_compute_table_counts_each_trained_stage_once_where_it_was_trained(tmp_path) -> None:
    def stage(key: str, seconds: float, reused: bool) -> dict:
        return {"name": key, "key": key, "seconds": seconds, "reused": reused}

    shared, offramps, elsewhere = stage("ft", 600.0, False), stage("ramps", 50.0, False), stage("pre", 7.0, True)
    timing = {"eval_seconds": 2.0, "timing_seconds": 3.0}
    records = [_record("full", None, 0.8, 0.8, 1.0) | timing | {"stages": [shared]}]
    # DeeBERT reuses full's stage (trained above) and trains its own; its two points repeat both stages
    records += [_record("deebert", t, 0.8, 0.8, 1.5) | timing | {"stages": [stage("ft", 600.0, True), offramps]}
                for t in (0.1, 0.2)]
    # a stage filled elsewhere (no record here trained it) counts with the first run that reused it
    records += [_record("pabee", p, 0.8, 0.8, 1.5) | timing | {"stages": [elsewhere]} for p in (1, 2)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = compute_table(load_records(tmp_path)).set_index("method")
    assert table.train_s.to_dict() == {"deebert": 50.0, "full": 600.0, "pabee": 7.0}
    assert table.eval_s.to_dict() == {"deebert": 4.0, "full": 2.0, "pabee": 4.0}
    assert table.total_s["deebert"] == pytest.approx(50.0 + 4.0 + 6.0)
    assert set(table.machine) == {"not recorded"}  # records from before they named their machine


def test_compute_table_keeps_each_machines_seconds_apart(tmp_path) -> None:
    """The benchmark runs in pieces on whatever machine a sitting gets: seconds of two machines are not summed."""
    fast = {"cpu": "Xeon", "cpu_capability": "AVX512", "cores": 2, "torch": "2.13.0"}
    slow = fast | {"cpu": "EPYC", "cpu_capability": "AVX2"}
    records = [_record("pabee", p, 0.8, 0.8, 1.5) | {"eval_seconds": 1.0, "timing_seconds": 0.0, "machine": m,
                                                      "stages": [{"name": "s", "key": f"k{p}", "seconds": 100.0 * p,
                                                                  "reused": False}]}
               for p, m in ((1, fast), (2, slow), (3, slow))]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = compute_table(load_records(tmp_path)).set_index("machine")
    assert table.train_s.to_dict() == {"Xeon (AVX512, 2 cores)": 100.0, "EPYC (AVX2, 2 cores)": 500.0}


def test_pareto_front_interpolation_and_area_on_hand_made_points() -> None:
    speedup = np.array([1.0, 1.5, 2.0, 1.4, 4.0, 4.0])
    score = np.array([0.80, 0.79, 0.70, 0.75, 0.50, 0.40])
    assert pareto.front(speedup, score).tolist() == [0, 1, 2, 4]  # 1.4x/0.75 and 4x/0.40 are beaten
    assert pareto.score_at(speedup, score, 1.75) == pytest.approx(0.745)  # halfway between 1.5x and 2x
    assert pareto.score_at(speedup, score, 3.0) == pytest.approx(0.60)
    assert pareto.score_at(speedup, score, 0.5) == pytest.approx(0.80)  # slower than every point: the best
    assert np.isnan(pareto.score_at(speedup, score, 5.0))  # never extrapolated
    # best reachable score over relative FLOPs: 0.5 on [1/4, 1/2), 0.7 on [1/2, 2/3), 0.79 on [2/3, 1)
    expected = (0.5 * 0.25 + 0.7 * (2 / 3 - 0.5) + 0.79 * (1 - 2 / 3)) / 0.8
    assert pareto.area(speedup, score, 0.8) == pytest.approx(expected)
    assert pareto.area(np.array([1.0]), np.array([0.8]), 0.8) == 0.0
    assert np.isnan(pareto.score_at(speedup[:2], np.array([np.nan, np.nan]), 1.5))  # undefined scores: no front


def _config(seed: int) -> dict:
    """A record's config as the runner writes it: the seed beside the training budget that seeds share."""
    return {"seed": seed, "model": {"name": "minilm"}, "task": {"name": "mrpc"}, "data": "tsv:abc",
            "train": {"lr": 1e-4, "epochs": 10}, "method": {"name": "any"}}


def _curve(seed: int, shift: float) -> list[dict]:
    # each seed's budget_hash differs, as the runner's do (it keys that seed's stages): seeds are averaged
    # because their configs' training budgets are equal
    base = {"seed": seed, "budget_hash": f"b{seed}", "run_id": f"r{seed}", "config": _config(seed)}
    return [_record("full", None, 0.80 + shift, 0.80, 1.0) | base | {"exit_counts": [0, 0, 2]},
            *[_record("pabee", k, score + shift, score, speedup) | base | {"exit_counts": counts}
              for k, score, speedup, counts in [(1, 0.60, 3.0, [2, 0, 0]), (2, 0.76, 2.0, [1, 1, 0]),
                                                (3, 0.80, 1.2, [0, 1, 1])]]]


def test_benchmark_table_reads_fixed_speedups_off_the_seed_averaged_front(tmp_path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _curve(1, 0.0) + _curve(2, 0.02)))
    frame = load_records(tmp_path)
    pts = points(frame)
    pabee2 = pts[(pts.method == "pabee") & (pts.knob_value == 2)].iloc[0]
    assert pabee2.seeds == 2 and pabee2.score == pytest.approx(0.77) and pabee2.score_std == pytest.approx(0.01414, rel=1e-3)
    row = benchmark_table(frame).set_index("method").loc["pabee"]
    assert row["score@1.5x"] == pytest.approx(0.81 + (0.77 - 0.81) * (1.5 - 1.2) / 0.8)
    assert row["score@2x"] == pytest.approx(0.77) and row["score@3x"] == pytest.approx(0.61)
    # the spread: each seed's own front read at the same speed-up (seed 1: 0.785 at 1.5x, seed 2: 0.805)
    assert row["score@1.5x_std"] == pytest.approx(np.std([0.785, 0.805], ddof=1))
    assert row["score@2x_std"] == pytest.approx(np.std([0.76, 0.78], ddof=1))
    assert row["speedup@99%"] == pytest.approx(1.2)  # only k=3 keeps 99% on either dev half, in both seeds
    assert row["area"] == pytest.approx((0.61 * (0.5 - 1 / 3) + 0.77 * (1 / 1.2 - 0.5) + 0.81 * (1 - 1 / 1.2)) / 0.81)
    assert row.budget == frame.budget.iloc[0] and frame.budget.nunique() == 1


def test_a_fixed_speedups_spread_is_over_the_points_its_value_mixes(tmp_path) -> None:
    # seed 2 is not seed 1 shifted: k=2 runs at 2.2x there (2.1x on average) and k=1, k=3 score 0.04 higher
    records = _curve(1, 0.0)
    for r in _curve(2, 0.0):
        if r["knob_value"] in (1, 3):
            r["score"] += 0.04
        if r["knob_value"] == 2:
            r["speedup_flops"], r["flops"] = 2.2, 1e9 / 2.2
        records.append(r)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    row = benchmark_table(load_records(tmp_path)).set_index("method").loc["pabee"]
    # at 2x the averaged front mixes k=3 (1.2x, 0.82) and k=2 (2.1x, 0.76) with weight 0.8 / 0.9 on k=2; the same
    # mix of each seed's scores: 0.764 and 0.769, whose mean is the value; each seed's own front would read 0.760
    # and 0.776 instead
    w = 0.8 / 0.9
    seeds = [(1 - w) * 0.80 + w * 0.76, (1 - w) * 0.84 + w * 0.76]
    assert row["score@2x"] == pytest.approx(np.mean(seeds))
    assert row["score@2x_std"] == pytest.approx(np.std(seeds, ddof=1))
    assert row["score@3x_std"] == pytest.approx(np.std([0.60, 0.64], ddof=1))  # k=1 alone


def test_the_headline_table_goes_between_the_readmes_lines_and_nowhere_else(tmp_path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _curve(1, 0.0) + _curve(2, 0.02)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{HEADLINE_BEGIN}\nan old table\n{HEADLINE_END}\n\nthe rest\n")
    main([str(folder), "--readme", str(readme)])
    table = (folder / "headline.md").read_text()
    assert readme.read_text() == f"# intro\n\n{HEADLINE_BEGIN}\n{table}{HEADLINE_END}\n\nthe rest\n"
    # full: its score, at 1x; pabee's fronts read at 1.5x, 2x, 3x (mean ± std over the seeds' own fronts), its
    # operating point (k=3 on both seeds: 1.2x, dev 0.80 and 0.82), no ELUE-style score without truncation
    spread = np.std([0.80, 0.82], ddof=1)
    assert table.splitlines()[2:] == [
        f"| mrpc | full | 2 | – | – | – | 1× | 0.810 ± {spread:.3f} | – |",
        f"| mrpc | pabee | 2 | 0.795 ± {spread:.3f} | 0.770 ± {spread:.3f} | 0.610 ± {spread:.3f} | 1.20 ± 0.00× "
        f"| 0.810 ± {spread:.3f} | – |"]
    main([str(folder), "--readme", str(readme)])
    assert readme.read_text().count(table) == 1  # a re-run rewrites the block, it does not add one
    # the end line quoted above the block is not the block's end
    readme.write_text(f"`{HEADLINE_END}` ends it\n{HEADLINE_BEGIN}\nold\n{HEADLINE_END}\n")
    main([str(folder), "--readme", str(readme)])
    assert readme.read_text() == f"`{HEADLINE_END}` ends it\n{HEADLINE_BEGIN}\n{table}{HEADLINE_END}\n"
    (folder / "headline.md").unlink()
    for broken in ("# no block\n", f"{HEADLINE_BEGIN}\nno end\n", f"{HEADLINE_END}\n{HEADLINE_BEGIN}\n",
                   f"{HEADLINE_BEGIN}\n{HEADLINE_END}\n{HEADLINE_BEGIN}\n{HEADLINE_END}\n"):
        readme.write_text(broken)
        with pytest.raises(SystemExit, match="needs one headline block"):
            main([str(folder), "--readme", str(readme)])
        assert readme.read_text() == broken
    assert not (folder / "headline.md").exists()  # it stopped before writing the report
    with pytest.raises(SystemExit, match="give the README that holds the headline block"):
        main([str(folder), "--readme", str(tmp_path / "missing.md")])


def test_wall_clock_means_say_how_many_seeds_were_timed(tmp_path) -> None:
    untimed = [{k: v for k, v in r.items() if not k.startswith("speedup_latency_b1")} for r in _curve(2, 0.0)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _curve(1, 0.0) + untimed))
    pabee2 = points(load_records(tmp_path)).set_index(["method", "knob_value"]).loc[("pabee", 2)]
    assert pabee2.seeds == 2 and pabee2.timed_seeds == 1 and pabee2.speedup_latency_b1 == pytest.approx(2.0 * 0.9)


def test_a_benchmark_part_way_compares_methods_on_the_seeds_they_all_finished(tmp_path) -> None:
    # full has seeds 1 and 2; PABEE finished seed 1 and one of its three points of seed 2
    heads = {"head_scores": [0.5, 0.6, 0.7], "knob_at": "infer"}
    seed2 = _curve(2, 0.10)
    records = [r | heads if r["method"] == "pabee" else r for r in _curve(1, 0.0) + seed2[:2]]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = load_records(tmp_path)
    compared, notes = matched_seeds(frame)
    assert set(compared.seed) == {1}
    assert notes == ["mrpc (minilm, budget " + compared.budget.iloc[0][:8] + "): seed 2 left out of the comparisons: "
                     "pabee lacks 2 of 3 points (k=2, k=3)"]
    main([str(tmp_path)])
    assert notes[0] in (tmp_path / "summary.md").read_text() and notes[0] in (tmp_path / "report.html").read_text()
    bench = pd.read_csv(tmp_path / "benchmark.csv").set_index("method")
    assert bench.seeds.to_dict() == {"full": 1, "pabee": 1}
    # the area is against seed 1's full model (0.80), not the mean over full's two seeds (0.85)
    area = (0.60 * (0.5 - 1 / 3) + 0.76 * (1 / 1.2 - 0.5) + 0.80 * (1 - 1 / 1.2)) / 0.80
    assert bench.loc["pabee", "area"] == pytest.approx(area, rel=1e-5)
    assert pd.read_csv(tmp_path / "heads.csv").full.tolist() == [pytest.approx(0.80)]
    pts = pd.read_csv(tmp_path / "points.csv")
    assert pts[pts.method == "full"].score.tolist() == [pytest.approx(0.80)]
    full = pd.read_csv(tmp_path / "full.csv")  # the full model's own table: every seed it has
    assert full.seeds.tolist() == [2] and full.score.tolist() == [pytest.approx(0.85)]
    # once PABEE's seed 2 is finished, both seeds count
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r | heads) + "\n" for r in seed2[2:]))
    assert matched_seeds(load_records(tmp_path))[0].seed.unique().tolist() == [1, 2]
    assert matched_seeds(load_records(tmp_path))[1] == []


def test_seeds_of_one_experiment_need_its_whole_budget_in_the_config() -> None:
    from dynbench.report import experiment_budget

    assert experiment_budget(_config(1), "b1") == experiment_budget(_config(2), "b2")
    assert experiment_budget(_config(1) | {"train": {"lr": 2e-4}}, "b1") != experiment_budget(_config(2), "b2")
    partial = {k: v for k, v in _config(1).items() if k != "data"}  # which data trained it is unknown
    assert experiment_budget(partial, "b1") == "b1" and experiment_budget(None, "b1") == "b1"


def test_a_method_that_shares_no_seed_with_the_rest_is_left_out_and_named(tmp_path) -> None:
    records = [r for r in _curve(1, 0.0) if r["method"] == "full"] + [r for r in _curve(2, 0.1) if r["method"] == "pabee"]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    compared, [note, seed2] = matched_seeds(load_records(tmp_path))
    assert set(zip(compared.method, compared.seed)) == {("full", 1)}  # never PABEE's seed 2 against full's seed 1
    assert note.endswith("pabee left out of the comparisons (seed 1: has not run it; finished: [2])")
    assert seed2.endswith("seed 2 left out of the comparisons: not run by full")
    main([str(tmp_path)])  # the report is still written, and the page and summary say what was left out
    assert pd.read_csv(tmp_path / "benchmark.csv").method.tolist() == ["full"]
    assert note in (tmp_path / "summary.md").read_text() and note in (tmp_path / "report.html").read_text()


def test_a_stray_point_or_a_late_method_is_named_where_it_holds_back_a_seed(tmp_path) -> None:
    def write(records: list[dict]) -> tuple[pd.DataFrame, list[str]]:
        (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return matched_seeds(load_records(tmp_path))

    both = _curve(1, 0.0) + _curve(2, 0.0)
    stray = _record("pabee", 9, 0.5, 0.5, 5.0) | {"seed": 1, "budget_hash": "b1", "config": _config(1)}
    compared, [note] = write(both + [stray])
    assert set(compared.seed) == {1} and note.endswith("seed 2 left out of the comparisons: pabee lacks 1 of 4 "
                                                       "points (k=9)")
    late = _record("deebert", 1, 0.7, 0.7, 2.0) | {"seed": 2, "budget_hash": "b2", "config": _config(2)}
    compared, [note] = write(both + [late])  # the seed most methods finished is seed 2: every method has it
    assert set(compared.seed) == {2} and note.endswith("seed 1 left out of the comparisons: not run by deebert")
    # a method whose seeds each lack a point the other has finished none: left out, the rest compared on both
    split = [_record("dact", k, 0.7, 0.7, 2.0) | {"seed": seed, "budget_hash": f"b{seed}", "config": _config(seed)}
             for seed, k in ((1, 1), (1, 2), (2, 2), (2, 3))]
    compared, [note] = write(both + split)
    assert "dact" not in set(compared.method) and set(compared.seed) == {1, 2}
    assert note.endswith("dact left out of the comparisons (seed 1: lacks 1 of 3 points (k=3); seed 2: lacks 1 of "
                         "3 points (k=1); finished: none)")
    # 1 in one seed and 1.0 in another are the same point, as points() averages them
    as_float = [r | {"knob_value": float(r["knob_value"])} if r["method"] == "pabee" else r for r in _curve(2, 0.0)]
    assert write(_curve(1, 0.0) + as_float)[1] == []


def test_a_folder_of_smoke_runs_only_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps(_record("full", None, 0.8, 0.8, 1.0) | {"limited": True}) + "\n")
    with pytest.raises(DynbenchError, match="only smoke-run records"):
        load_records(tmp_path)


def test_report_writes_tables_plots_and_a_self_contained_page_deterministically(tmp_path, capsys) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _curve(1, 0.0)))
    main([str(tmp_path)])
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix != ".jsonl"}
    assert {"summary.md", "benchmark.csv", "points.csv", "operating_points.csv", "report.html",
            "mrpc_score_vs_flops.png", "mrpc_score_vs_latency.png", "mrpc_exits.png"} <= set(files)
    page = files["report.html"].decode()
    for png in ("mrpc_score_vs_flops.png", "mrpc_score_vs_latency.png", "mrpc_exits.png"):
        assert f"alt='{png}' src='data:image/png;base64," in page and len(files[png]) > 5_000
    assert "<summary>r1</summary>" in page  # each run's config
    main([str(tmp_path)])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix != ".jsonl"} == files


def test_the_page_leads_with_decodable_plots_and_keeps_raw_points_folded(tmp_path) -> None:
    """What a reader sees first are the plots (every one a PNG that decodes to the file written), then the
    summary tables; the raw points sit in a collapsed section, without hash columns, wide tables scroll."""
    import base64
    import io
    from html.parser import HTMLParser

    import matplotlib.image

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.order: list[str] = []
            self.images: dict[str, bytes] = {}

        def handle_starttag(self, tag: str, attrs: list) -> None:
            attrs = dict(attrs)
            if tag == "img":
                self.images[attrs["alt"]] = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
            if tag in ("img", "h2", "details", "table"):
                self.order.append(tag)

    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _curve(1, 0.0)))
    main([str(tmp_path)])
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    assert page.images and all(data == (tmp_path / name).read_bytes() for name, data in page.images.items())
    for data in page.images.values():
        assert matplotlib.image.imread(io.BytesIO(data), format="png").ndim == 3  # decodes as an image
    assert page.order.index("h2") > max(i for i, tag in enumerate(page.order) if tag == "img")
    html_text = (tmp_path / "report.html").read_text()
    points_at = html_text.index("<summary>every knob point")
    assert html_text.index("<h2>benchmark</h2>") < points_at and "budget_hash" not in html_text
    budget = load_records(tmp_path).budget.iloc[0]  # shown by the 8 characters the seed notes name it by
    assert f"<td>{budget[:8]}</td>" in html_text and budget not in html_text
    assert "overflow-x:auto" in html_text


def test_report_removes_its_plots_that_the_records_no_longer_give(tmp_path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _curve(1, 0.0)))
    main([str(tmp_path)])
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r | {"task": "rte"}) + "\n" for r in _curve(1, 0.0)))
    (tmp_path / "notes.png").write_bytes(b"not the report's")
    main([str(tmp_path), "--axis", "flops"])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["notes.png", "rte_exits.png", "rte_score_vs_flops.png"]


def test_token_methods_get_a_tokens_plot_and_no_exits_plot(tmp_path) -> None:
    base = {"budget_hash": "b1", "exit_counts": [0, 0, 2]}
    records = [_record("full", None, 0.80, 0.80, 1.0) | base | {"tokens_per_layer": [50.0, 50.0, 50.0]},
               *[_record("token_gates", lam, 0.8 - lam, 0.8 - lam, 1 + lam) | base | {"tokens_per_layer": tokens}
                 for lam, tokens in [(0.01, [50.0, 50.0, 50.0]), (0.1, [50.0, 30.0, 20.0])]]]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = load_records(tmp_path)
    assert plot_exits(frame, tmp_path) == []  # every example ran every layer: nothing to show
    [png] = plot_tokens(frame, tmp_path)
    assert png.name == "mrpc_tokens.png" and png.stat().st_size > 5_000
    assert points(frame).set_index("knob_value").tokens_per_layer[0.1] == [50.0, 30.0, 20.0]
    exits_only = tmp_path / "exits"
    exits_only.mkdir()
    (exits_only / "a.jsonl").write_text("".join(json.dumps(r | {"tokens_per_layer": [50.0] * 3}) + "\n" for r in _curve(1, 0.0)))
    assert plot_tokens(load_records(exits_only), exits_only) == []
    (exits_only / "a.jsonl").write_text("".join(json.dumps(r | {"tokens_per_layer": [50.0, 25.0, 10.0]}) + "\n"
                                                for r in _curve(1, 0.0)))
    assert plot_tokens(load_records(exits_only), exits_only) == []  # fewer tokens because examples left


def test_bad_records_name_the_file_and_line(tmp_path) -> None:
    (tmp_path / "bad.jsonl").write_text(json.dumps(_record("full", None, 0.8, 0.9, 1.0)) + "\n{oops\n")
    with pytest.raises(DynbenchError, match=r"bad.jsonl:2: not a JSON record"):
        load_records(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"method": "full"}) + "\n")
    with pytest.raises(DynbenchError, match=r"bad.jsonl:1: record lacks \['task'"):
        load_records(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps(_record("fullish", None, 0.8, 0.9, 1.0)) + "\n")
    with pytest.raises(DynbenchError, match=r"bad.jsonl:1: unknown method 'fullish'"):
        load_records(tmp_path)
