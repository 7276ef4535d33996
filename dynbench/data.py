"""A GLUE task card → tokenised train, calibration and dev splits, from a local GLUE copy or the hub.

The calibration split is carved from train before fine-tuning (METHODS.md §0.4) with a seed fixed for
every method, so operating points are chosen without looking at dev. Tokenised splits are cached on disk, by
one process at a time (a lock per cache entry).
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from dynbench.config import TaskConfig
from dynbench.errors import DynbenchError
from dynbench.locks import exclusive

log = logging.getLogger(__name__)
datasets.disable_progress_bars()

Rows = dict[str, list]  # columns text_a, text_b (pairs only), label


@dataclass
class TaskData:
    """Tokenised splits; ``dev`` maps split names (``validation``; MNLI ``matched``/``mismatched``) to data."""

    task: TaskConfig
    source: str  # what the data came from (TSV digest or hub fingerprint): part of every checkpoint key
    train: datasets.Dataset
    calib: datasets.Dataset
    dev: dict[str, datasets.Dataset]
    tokenizer: PreTrainedTokenizerBase
    limited: bool

    def loader(self, split: datasets.Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
               group_by_length: bool = False) -> DataLoader:
        """Batches with dynamic padding (each batch padded to its own longest example). ``group_by_length``
        (with ``shuffle``) draws batches of similar lengths, as the HF Trainer's ``group_by_length`` does: a
        seeded shuffle, then examples sorted by length within chunks of 50 batches, so padding nearly vanishes
        while every epoch still sees a new mix."""
        generator = torch.Generator().manual_seed(seed)
        sampler = None
        if shuffle and group_by_length:
            lengths = [len(ids) for ids in split["input_ids"]]
            sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
        return DataLoader(
            split, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, generator=generator,
            collate_fn=DataCollatorWithPadding(self.tokenizer, return_tensors="pt"),
        )


def _label(raw: str, task: TaskConfig, where: str) -> float | int:
    if task.kind == "regression":
        try:
            score = float(raw)
        except ValueError:
            raise DynbenchError(f"{where}: score {raw!r} is not a number (task {task.name} is a regression)") from None
        lo, hi = task.score_range or (-math.inf, math.inf)
        if not lo <= score <= hi:
            raise DynbenchError(f"{where}: score {score} is outside {task.name}'s range [{lo}, {hi}]")
        return score
    if raw not in task.label_values:
        raise DynbenchError(f"{where}: label {raw!r} is not one of {list(task.label_values)} (task {task.name})")
    return task.label_values.index(raw)


def _lines(path: Path, encoding: str) -> Iterator[str]:
    """The file's lines, split as ``open(newline="")`` splits them and decoded as it decodes them, but one by one,
    so that bytes that do not decode are reported with their line."""
    lines = path.read_bytes().splitlines(keepends=True)
    decoder = codecs.getincrementaldecoder(encoding)()
    for number, line in enumerate(lines, 1):
        try:
            yield decoder.decode(line, final=number == len(lines))
        except UnicodeDecodeError as err:
            raise DynbenchError(f"{path}:{number}: {err.object[err.start:err.end]!r} is not {encoding} text; is this "
                                "the original GLUE TSV?") from None


def read_tsv(path: Path, task: TaskConfig) -> Rows:
    """Read one file of the original GLUE release (quirks: header-less CoLA, MRPC's BOM, unquoted text)."""
    src = task.tsv
    if not path.is_file():
        raise DynbenchError(f"{path} is missing: the GLUE folder has no {src.dir}/{path.name}; fetch it, or unset data_dir to use the hub")
    rows: Rows = {"text_a": [], "text_b": [], "label": []}
    reader = csv.reader(_lines(path, src.encoding), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = src.columns or next(reader, None)
    if not header:
        raise DynbenchError(f"{path} is empty")
    missing = [c for c in [*src.text, src.label] if c not in header]
    if missing:
        raise DynbenchError(f"{path}:1: no column {missing} in header {header}; is this the original GLUE TSV?")
    index = {c: header.index(c) for c in [*src.text, src.label]}
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            raise DynbenchError(f"{where}: expected {len(header)} tab-separated columns, found {len(row)}")
        rows["text_a"].append(row[index[src.text[0]]])
        rows["text_b"].append(row[index[src.text[1]]] if len(src.text) > 1 else None)
        rows["label"].append(_label(row[index[src.label]], task, where))
    if not rows["label"]:
        raise DynbenchError(f"{path} has a header but no rows")
    if len(src.text) == 1:
        del rows["text_b"]
    return rows


def _from_dir(task: TaskConfig, data_dir: str) -> tuple[Rows, dict[str, Rows], str]:
    folder = Path(data_dir).expanduser() / task.tsv.dir
    if not folder.is_dir():
        raise DynbenchError(f"data_dir={data_dir} has no folder {task.tsv.dir}/ for task {task.name}; point GLUE_DIR or data_dir at a GLUE copy")
    files = [folder / task.tsv.train, *(folder / f for f in task.tsv.dev.values())]
    train, *devs = (read_tsv(p, task) for p in files)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    return train, dict(zip(task.tsv.dev, devs)), f"tsv:{digest}"


def _from_hub(task: TaskConfig) -> tuple[Rows, dict[str, Rows], str]:
    hub = task.hub
    try:
        ds = datasets.load_dataset(hub.path, hub.name)
    except Exception as err:  # the hub raises connection, HTTP and not-found errors of many types
        raise DynbenchError(
            f"cannot load {hub.path}/{hub.name} from the Hugging Face hub ({type(err).__name__}) and no local data is set: "
            "set GLUE_DIR (or data_dir=PATH) to a folder of the original GLUE TSVs"
        ) from None

    def rows(split: datasets.Dataset) -> Rows:
        out: Rows = {"text_a": split[hub.text[0]], "label": split[hub.label]}
        if len(hub.text) > 1:
            out["text_b"] = split[hub.text[1]]
        return out

    return rows(ds["train"]), {k: rows(ds[v]) for k, v in hub.dev.items()}, f"hub:{ds['train']._fingerprint}"


def _split_calibration(train: Rows, task: TaskConfig) -> tuple[Rows, Rows]:
    n = len(train["label"])
    n_calib = min(task.calib_max, round(task.calib_fraction * n))
    order = np.random.default_rng(task.split_seed).permutation(n)
    calib, rest = np.sort(order[:n_calib]), np.sort(order[n_calib:])
    pick = lambda idx: {k: [v[i] for i in idx] for k, v in train.items()}  # noqa: E731
    return pick(rest), pick(calib)


def load_task(
    task: TaskConfig,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    data_dir: Optional[str],
    cache_dir: str,
    limit_train: Optional[int] = None,
    limit_eval: Optional[int] = None,
    train_subset: Optional[int] = None,
) -> TaskData:
    """Read (TSV or hub), split off calibration, tokenise (cached), draw the training subset if one is asked
    for (seeded by the task's ``split_seed``, so every seed and method trains on the same examples), and
    apply smoke-run limits."""
    train, devs, source = _from_dir(task, data_dir) if data_dir else _from_hub(task)
    key_src = json.dumps(
        [source, task.name, task.calib_fraction, task.calib_max, task.split_seed, tokenizer.name_or_path, max_length]
    )
    cache = Path(cache_dir) / "data" / hashlib.sha256(key_src.encode()).hexdigest()[:16]
    splits = None
    with exclusive(cache, f"another process is tokenising {task.name}"):  # one tokenises, the others then load
        if (cache / "done").exists():
            try:
                splits = datasets.load_from_disk(str(cache))
            except Exception as err:  # a damaged cache is rebuilt, never trusted
                log.warning("tokenised cache %s is unreadable (%s); rebuilding it", cache, err)
        if splits is None:
            log.info("tokenising %s into %s", task.name, cache)
            shutil.rmtree(cache, ignore_errors=True)  # a damaged cache, or what a killed process left half-written
            rest, calib = _split_calibration(train, task)
            raw = datasets.DatasetDict(
                {"train": datasets.Dataset.from_dict(rest), "calib": datasets.Dataset.from_dict(calib)}
                | {f"dev_{k}": datasets.Dataset.from_dict(v) for k, v in devs.items()}
            )

            def tokenize(b: dict) -> dict:
                return tokenizer(b["text_a"], b.get("text_b"), truncation=True, max_length=max_length)

            text_cols = [c for c in ("text_a", "text_b") if c in raw["train"].column_names]
            splits = raw.map(tokenize, batched=True, remove_columns=text_cols)
            splits.save_to_disk(str(cache))
            (cache / "done").touch()  # last: a folder without it is never loaded
    cut = lambda ds, n: ds.select(range(min(n, len(ds)))) if n else ds  # noqa: E731
    train = splits["train"]
    if train_subset:
        if train_subset >= len(train):
            raise DynbenchError(f"train.train_subset={train_subset} is not below {task.name}'s {len(train)} training "
                                "examples (after the calibration split); lower it or leave it unset")
        train = train.shuffle(seed=task.split_seed).select(range(train_subset))
    return TaskData(
        task=task,
        source=source,
        train=cut(train, limit_train),
        calib=cut(splits["calib"], limit_eval),
        dev={k: cut(splits[f"dev_{k}"], limit_eval) for k in devs},
        tokenizer=tokenizer,
        limited=bool(limit_train or limit_eval),
    )
