"""GLUE loading: the TSV quirks, the calibration split, caching, and every bad-input error."""
from __future__ import annotations

import pytest

from dynbench.backbone import load_tokenizer
from dynbench.data import load_task, read_tsv
from dynbench.errors import DynbenchError
from tests.conftest import GLUE, make_config, write_tsv


def _task(name: str):
    return make_config(f"task={name}", "model=tiny").task


@pytest.mark.parametrize("name, n_dev", [("cola", 1043), ("sst2", 872), ("mrpc", 408), ("stsb", 1500),
                                          ("rte", 277), ("wnli", 71), ("qnli", 5463)])
def test_real_dev_files_parse_with_glue_row_counts(name: str, n_dev: int) -> None:
    task = _task(name)
    rows = read_tsv(GLUE / task.tsv.dir / task.tsv.dev["validation"], task)
    assert len(rows["label"]) == n_dev
    if task.kind == "regression":
        assert all(0.0 <= y <= 5.0 for y in rows["label"])
    else:
        assert set(rows["label"]) == set(range(task.num_labels))


def test_quirks_headerless_cola_and_mrpc_bom() -> None:
    cola = read_tsv(GLUE / "CoLA" / "dev.tsv", _task("cola"))
    assert cola["text_a"][0] == "The sailors rode the breeze clear of the rocks." and cola["label"][0] == 1
    mrpc = read_tsv(GLUE / "MRPC" / "dev.tsv", _task("mrpc"))  # header starts with a BOM
    assert mrpc["text_a"][0].startswith("He said the foodservice pie") and mrpc["label"][0] == 1
    assert mrpc["text_b"][1].startswith("His wife said he was \" 100 percent")  # unquoted quote kept


def test_malformed_row_names_file_and_line(tmp_path) -> None:
    path = write_tsv(tmp_path / "RTE" / "dev.tsv", ["index", "sentence1", "sentence2", "label"],
                     [["0", "a", "b", "entailment"], ["1", "only two"]])
    with pytest.raises(DynbenchError, match=r"dev.tsv:3: expected 4 tab-separated columns, found 2"):
        read_tsv(path, _task("rte"))
    write_tsv(path, ["index", "sentence1", "sentence2", "label"], [["0", "a", "b", "entailment", "extra"]])
    with pytest.raises(DynbenchError, match=r"dev.tsv:2: expected 4 tab-separated columns, found 5"):
        read_tsv(path, _task("rte"))


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path) -> None:
    path = tmp_path / "RTE" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n")  # Latin-1
    with pytest.raises(DynbenchError, match=r"dev.tsv:3: b'\\xe9' is not utf-8-sig text") as err:
        read_tsv(path, _task("rte"))
    assert "\n" not in str(err.value)


def test_label_outside_the_label_set(tmp_path) -> None:
    path = write_tsv(tmp_path / "RTE" / "dev.tsv", ["index", "sentence1", "sentence2", "label"],
                     [["0", "a", "b", "maybe"]])
    with pytest.raises(DynbenchError, match=r"dev.tsv:2: label 'maybe' is not one of \['entailment', 'not_entailment'\]"):
        read_tsv(path, _task("rte"))


def test_regression_score_outside_its_range(tmp_path) -> None:
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    path = write_tsv(tmp_path / "STS-B" / "dev.tsv", header, [["0", "g", "f", "y", "o", "s", "s", "a", "b", "7.5"]])
    with pytest.raises(DynbenchError, match=r"dev.tsv:2: score 7.5 is outside stsb's range \[0.0, 5.0\]"):
        read_tsv(path, _task("stsb"))


def test_a_damaged_tokenised_cache_is_rebuilt(tmp_path) -> None:
    tok = load_tokenizer(make_config("model=tiny").model)
    first = load_task(_task("wnli"), tok, 128, str(GLUE), str(tmp_path / "cache"))
    [folder] = [p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]  # beside it: its lock file
    for arrow in folder.rglob("*.arrow"):
        arrow.write_bytes(b"garbage")
    again = load_task(_task("wnli"), tok, 128, str(GLUE), str(tmp_path / "cache"))
    assert again.train["input_ids"] == first.train["input_ids"]


def test_missing_folder_and_missing_train_file(tmp_path) -> None:
    tok = load_tokenizer(make_config("model=tiny").model)
    with pytest.raises(DynbenchError, match="has no folder MRPC/ for task mrpc; point GLUE_DIR"):
        load_task(_task("mrpc"), tok, 128, str(tmp_path), str(tmp_path / "cache"))
    with pytest.raises(DynbenchError, match="QNLI/train.tsv"):  # QNLI's train.tsv is missing from shared/glue
        load_task(_task("qnli"), tok, 128, str(GLUE), str(tmp_path / "cache"))


def test_hub_unreachable_says_to_set_glue_dir(tmp_path, monkeypatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # fails at once, as an unreachable hub does
    tok = load_tokenizer(make_config("model=tiny").model)
    with pytest.raises(DynbenchError, match="set GLUE_DIR"):
        load_task(_task("rte"), tok, 128, None, str(tmp_path / "cache"))


def test_calibration_split_is_disjoint_fixed_and_cached(tmp_path) -> None:
    task, tok = _task("rte"), load_tokenizer(make_config("model=tiny").model)
    data = load_task(task, tok, 128, str(GLUE), str(tmp_path / "cache"))
    assert len(data.calib) == round(0.1 * 2490) and len(data.train) == 2490 - len(data.calib)
    assert len(data.dev["validation"]) == 277
    train_ids = {tuple(x) for x in data.train["input_ids"]}
    assert not any(tuple(x) in train_ids for x in data.calib["input_ids"][:50])
    again = load_task(task, tok, 128, str(GLUE), str(tmp_path / "cache"))  # from the on-disk cache
    assert again.calib["input_ids"] == data.calib["input_ids"]
    assert len([p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]) == 1
    assert max(len(x) for x in data.train["input_ids"]) <= 128


def test_a_training_subset_is_seeded_and_leaves_calibration_and_dev_whole(tmp_path) -> None:
    task, tok = _task("rte"), load_tokenizer(make_config("model=tiny").model)
    whole = load_task(task, tok, 128, str(GLUE), str(tmp_path / "cache"))
    sub = load_task(task, tok, 128, str(GLUE), str(tmp_path / "cache"), train_subset=100)
    assert len(sub.train) == 100 and not sub.limited
    assert sub.calib["input_ids"] == whole.calib["input_ids"] and len(sub.dev["validation"]) == 277
    picked = {tuple(x) for x in sub.train["input_ids"]}
    assert picked <= {tuple(x) for x in whole.train["input_ids"]}
    assert sub.train["input_ids"][:100] != whole.train["input_ids"][:100]  # drawn at random, not the head
    again = load_task(task, tok, 128, str(GLUE), str(tmp_path / "cache"), train_subset=100)
    assert again.train["input_ids"] == sub.train["input_ids"]
    with pytest.raises(DynbenchError, match=r"train.train_subset=2241 is not below rte's 2241 training examples"):
        load_task(task, tok, 128, str(GLUE), str(tmp_path / "cache"), train_subset=2241)


def test_mnli_has_matched_and_mismatched_dev(tmp_path) -> None:
    header = ["index", "sentence1", "sentence2", "gold_label"]
    rows = [[str(i), f"premise {i}", f"hypothesis {i}", lab] for i, lab in
            enumerate(["entailment", "neutral", "contradiction"] * 10)]
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        write_tsv(tmp_path / "glue" / "MNLI" / name, header, rows)
    data = load_task(_task("mnli"), load_tokenizer(make_config("model=tiny").model), 128, str(tmp_path / "glue"),
                     str(tmp_path / "cache"))
    assert set(data.dev) == {"matched", "mismatched"}
    assert sorted(set(data.dev["matched"]["label"])) == [0, 1, 2]


def test_limits_mark_data_as_limited(tmp_path) -> None:
    tok = load_tokenizer(make_config("model=tiny").model)
    data = load_task(_task("mrpc"), tok, 128, str(GLUE), str(tmp_path / "cache"), limit_train=10, limit_eval=5)
    assert (len(data.train), len(data.calib), len(data.dev["validation"]), data.limited) == (10, 5, 5, True)
