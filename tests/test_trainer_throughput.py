"""The Trainer comparison's command line (benchmarks/trainer_throughput.py): a score-only run never writes over the
committed throughput measurement."""
import pytest

from benchmarks.trainer_throughput import DEFAULT_OUT, parse_args


def test_rounds_write_the_throughput_file_by_default() -> None:
    assert parse_args([]).out == DEFAULT_OUT and parse_args(["--rounds", "3"]).rounds == 3


@pytest.mark.parametrize("argv", [["--rounds", "-1"], ["--rounds", "0"], ["--rounds", "0", "--score"],
                                  ["--rounds", "0", "--score", "--out", DEFAULT_OUT]])
def test_a_score_only_run_needs_a_file_of_its_own(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "--rounds" in capsys.readouterr().err


def test_a_score_only_run_writes_where_it_is_told(tmp_path) -> None:
    out = str(tmp_path / "score.json")
    args = parse_args(["--rounds", "0", "--score", "--out", out])
    assert (args.rounds, args.score, args.out) == (0, True, out)


def test_the_seed_defaults_to_the_configs() -> None:
    """The committed seed-1 score was made before ``--seed`` existed, from the config's default seed."""
    from dynbench.cli import load_config

    assert parse_args([]).seed == load_config().seed == 1 and parse_args(["--seed", "3"]).seed == 3
