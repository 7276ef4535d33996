"""Typed config schemas (Hydra structured configs): types at compose time, ranges in ``__post_init__``.

Values live only in ``conf/**.yaml``; these dataclasses say what may be set and check it before any data or
weights load (``OmegaConf.to_object`` runs the checks).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

TASK_KINDS = ("classification", "regression")
METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")
LOGGERS = ("none", "csv", "wandb")


@dataclass
class HubSource:
    """Where a task lives on the Hugging Face hub and which columns hold text and label."""

    path: str = "nyu-mll/glue"
    name: str = MISSING
    text: list[str] = MISSING
    label: str = "label"
    dev: dict[str, str] = MISSING  # our split name -> hub split name


@dataclass
class TsvSource:
    """Layout of a task's folder in the original GLUE TSV release (see shared/glue/README.md)."""

    dir: str = MISSING
    train: str = "train.tsv"
    dev: dict[str, str] = MISSING  # our split name -> file name
    columns: Optional[list[str]] = None  # names for a header-less file (CoLA)
    text: list[str] = MISSING
    label: str = MISSING
    encoding: str = "utf-8-sig"  # also reads plain UTF-8; strips MRPC's BOM


@dataclass
class Recipe:
    """A task's training budget, frozen from a search that never looked at dev (README: the recipe), and read
    by ``conf/train/default.yaml``: every stage of every method trains under it."""

    lr: float = 5e-5
    epochs: float = 3.0
    early_stopping_patience: Optional[int] = None  # epochs without a better calibration score
    train_subset: Optional[int] = None  # a seeded subset of train, for tasks too big for the CPU budget


@dataclass
class TaskConfig:
    name: str = MISSING
    kind: str = "classification"
    num_labels: int = MISSING  # 1 for regression
    label_values: Optional[list[str]] = None  # raw TSV label strings, in the hub's id order
    score_range: Optional[list[float]] = None  # regression: allowed gold scores [lo, hi]
    metrics: list[str] = MISSING  # GLUE's metrics; the primary score is their mean (GLUE convention)
    hub: HubSource = field(default_factory=HubSource)
    tsv: TsvSource = field(default_factory=TsvSource)
    calib_fraction: float = 0.1  # METHODS.md §0.4: held out from train to choose operating points
    calib_max: int = 2000
    split_seed: int = 0  # fixed for every method and run seed, so all methods see the same split
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task.kind: {self.kind!r} is not one of {TASK_KINDS}")
        if (self.kind == "regression") != (self.num_labels == 1):
            raise ValueError(f"task.num_labels: regression needs 1 label, classification >= 2 (got {self.num_labels})")
        if self.kind == "classification" and (self.label_values is None or len(self.label_values) != self.num_labels):
            raise ValueError(f"task.label_values: need {self.num_labels} values, got {self.label_values}")
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"task.metrics: unknown {sorted(unknown)}; choose from {METRICS}")
        if not 0.0 < self.calib_fraction < 1.0:
            raise ValueError(f"task.calib_fraction: must be in (0, 1), got {self.calib_fraction}")


@dataclass
class ModelConfig:
    name: str = MISSING
    pretrained: Optional[str] = MISSING  # hub id, or "embedded:minilm"; null = random weights from `random`
    tokenizer: Optional[str] = None  # defaults to `pretrained`
    random: Optional[dict[str, Any]] = None  # BertConfig fields for a random-weight model (model=tiny)
    # how the checkpoint summarises a sequence, read by every head of every method (backbone.Backbone):
    # "cls" (the pretrained pooler on [CLS]) or "mean" (over the tokens present: sentence-transformers models)
    pooling: str = MISSING
    max_length: int = 128
    attn_implementation: str = "sdpa"  # FLOPs are always calibrated with eager attention (flops.py)

    def __post_init__(self) -> None:
        if self.pretrained is None and not self.random:
            raise ValueError("model.pretrained: null needs model.random (a BertConfig for random weights)")
        if self.max_length < 8:
            raise ValueError(f"model.max_length: must be >= 8, got {self.max_length}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"model.pooling: 'mean' or 'cls', got {self.pooling!r}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"model.attn_implementation: 'sdpa' or 'eager', got {self.attn_implementation!r}")


@dataclass
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    # parameters the checkpoint did not train (every head, exit classifier and halting unit a method adds)
    # train at this multiple of lr: at 1x a fresh head moves about lr per Adam step from its N(0, 0.02)
    # init, too little within a GLUE budget for a deep one such as FastBERT's students (README: "The protocol")
    head_lr_scale: float = 20.0
    # batches of examples of similar length (the HF Trainer's group_by_length sampler): less padding
    group_by_length: bool = True
    # epochs of a stage that continues a trained model and keeps its last epoch (DeeBERT's off-ramps,
    # FastBERT's distillation, DACT, two-stage token gates, TR-BERT's RL stages), at most `epochs`: with no
    # calibration score to stop on, they would run the whole ceiling that early stopping keeps the fine-tune
    # under; the papers' second stages train 3 (DeeBERT, TR-BERT) to 5 epochs (FastBERT). null: `epochs`
    followup_epochs: Optional[float] = 3.0
    max_steps: Optional[int] = None  # caps the steps of every stage
    early_stopping_patience: Optional[int] = None  # epochs without a better calibration score
    # a seeded random subset of the training split (a budget cut for big tasks on CPU, e.g. SST-2): part of
    # the budget, so records say it (`train_examples`, `budget_hash`); calibration and dev stay whole
    train_subset: Optional[int] = None
    limit_train: Optional[int] = None  # smoke runs only: records carry `limited: true`
    limit_eval: Optional[int] = None
    threads: Optional[int] = None  # torch threads per job (set per job under joblib multirun)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("train: epochs, batch_size and lr must be positive")
        if self.followup_epochs is not None and not self.followup_epochs > 0:
            raise ValueError(f"train.followup_epochs: must be > 0 or null, got {self.followup_epochs}")
        if not self.head_lr_scale > 0:
            raise ValueError(f"train.head_lr_scale: must be > 0, got {self.head_lr_scale}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"train.warmup_fraction: must be in [0, 1), got {self.warmup_fraction}")
        for name in ("max_steps", "train_subset", "limit_train", "limit_eval", "threads", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"train.{name}: must be >= 1 or null, got {value}")


@dataclass
class EvalConfig:
    batch_size: int = 64
    timing: bool = True  # wall-clock against the full model, interleaved in this process
    latency_examples: int = 32  # dev examples timed one by one
    throughput_examples: int = 256  # dev examples timed at `batch_size`
    repeats: int = 5  # interleaved rounds: the median is reported, and the rounds' lowest and highest ratio

    def __post_init__(self) -> None:
        for name in ("batch_size", "latency_examples", "throughput_examples", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name}: must be >= 1, got {getattr(self, name)}")


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "dynbench"

    def __post_init__(self) -> None:
        if self.name not in LOGGERS:
            raise ValueError(f"logger.name: {self.name!r} is not one of {LOGGERS}")


@dataclass
class MethodConfig:
    """Base of every method's config; a method subclasses it to add its own knobs and checks."""

    name: str = MISSING
    knobs: Optional[list[Any]] = None  # the knob grid to sweep; null = task_knobs' grid for the task, else the default
    # a task's own grid (task name -> grid), where one grid does not span every task's curve: a training knob's
    # effect can depend on the task (the gates' lambda weighs a share of the tokens, and a short sequence's
    # tokens each weigh more), so each such grid is chosen on that task's calibration split
    task_knobs: dict[str, list[Any]] = field(default_factory=dict)
    # fields that list grids to sweep: which points a run evaluates, not what any one point gives, so they
    # are left out of the run's identity (a sub-grid or an extended grid resumes into the same records file)
    grids: ClassVar[tuple[str, ...]] = ("knobs", "task_knobs")

    def knob_grids(self) -> list[tuple[str, list[Any]]]:
        """Every grid of the main knob this config sets, each with the key its errors name (for the checks)."""
        return ([("method.knobs", self.knobs)] if self.knobs is not None else []) + \
            [(f"method.task_knobs.{task}", grid) for task, grid in self.task_knobs.items()]


@dataclass
class RootConfig:
    method: Any = MISSING  # typed Any so subclasses keep their own field types (STYLE.md §4)
    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    train: TrainConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = MISSING
    seed: int = 1
    data_dir: Optional[str] = None  # a local GLUE copy (original TSVs); null = the hub
    results_dir: str = "results/runs"
    cache_dir: str = ".cache/dynbench"
    progress: bool = True
    device: str = "cpu"  # cpu, cuda or cuda:N: where models train, run and are timed (dynbench/device.py)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device: 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


def nonnegative(value: Any) -> bool:
    """A finite value >= 0 (a weight or threshold knob)."""
    return 0 <= value < float("inf")


def positive_integer(value: Any) -> bool:
    """An integer >= 1 (a count knob: layers, patience)."""
    return int(value) == value and value >= 1


def check_grid(values: Optional[list[Any]], key: str, valid: Callable[[Any], bool], rule: str) -> None:
    """A grid (null = the method's default) is non-empty and ``valid`` for each value; else one line,
    ``<key>: <rule>, got <grid>``."""
    if values is not None and (not values or not all(map(valid, values))):
        raise ValueError(f"{key}: {rule}, got {values}")


def check_knob_grids(cfg: MethodConfig, valid: Callable[[Any], bool], rule: str) -> None:
    """``check_grid`` on every grid of the main knob that ``cfg`` sets."""
    for key, grid in cfg.knob_grids():
        check_grid(grid, key, valid, rule)


def register_schemas() -> None:
    """Store the schemas that the YAML files extend (``defaults: [task_schema, _self_]``)."""
    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="train", name="train_schema", node=TrainConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


register_schemas()
