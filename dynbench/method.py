"""The method interface (the heart of dynbench) and the registry that maps ``method=NAME`` to a class.

A method is one file in ``methods/`` plus one YAML in ``conf/method/``. It only says what differs between
methods: the model it builds, its training stages, its real adaptive forward (``infer``) and its knob. The
runner owns training, evaluation, timing and records, so every method is measured by the same code.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from hydra.core.config_store import ConfigStore
from torch import nn

from dynbench.backbone import Backbone
from dynbench.config import MethodConfig, TaskConfig
from dynbench.errors import DynbenchError
from dynbench.trace import Trace

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Knob:
    """A method's speed knob. ``at="infer"``: swept on one trained model; ``at="train"``: one model per value."""

    name: str
    at: str

    def __post_init__(self) -> None:
        if self.at not in ("infer", "train"):
            raise ValueError(f"Knob.at must be 'infer' or 'train', got {self.at!r}")


@dataclass
class Stage:
    """One training stage: what trains, on which loss. The runner runs it; a method writes no training loop.

    ``signature`` is everything beside (model, task, seed, train config, earlier stages) that determines the
    stage's result. It goes into the checkpoint key instead of the method's name, so methods that share a
    stage (the plain fine-tune) share its checkpoint.
    """

    name: str
    signature: dict[str, Any]
    trainable: Callable[[nn.Module], list[nn.Parameter]]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    predict: Optional[Callable[[nn.Module, Batch], torch.Tensor]] = None  # logits used to keep the best epoch
    # parameter-name prefix -> lr multiple, instead of the head rule (``train.head_lr_scale``) for those names
    lr_scales: dict[str, float] = field(default_factory=dict)
    no_decay: Sequence[str] = ()  # parameter-name prefixes without weight decay (besides biases and norms)
    # called with the model as the earlier stages left it, before this stage trains (e.g. to copy a teacher)
    setup: Optional[Callable[[nn.Module], None]] = None
    # called with the model right after every optimiser step, e.g. to clip parameters that must stay in a range
    # (AdamW cannot bound them; the runner owns the loop, so this is the method's one way into it)
    after_step: Optional[Callable[[nn.Module], None]] = None
    saves: Sequence[str] = field(default_factory=lambda: ("",))  # state-dict prefixes this stage determines


@dataclass
class Output:
    """What an adaptive forward returns: logits ``[B, C]`` in input order and the per-example compute trace."""

    logits: torch.Tensor
    trace: Trace


class Method:
    """Base class. Subclasses set ``knob`` and ``version`` and implement ``build``, ``stages`` and ``infer``."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    version: ClassVar[int] = 1  # bump whenever outputs would change; enters records and stage signatures
    knob: ClassVar[Optional[Knob]] = None  # None: no knob (one evaluation point)
    # a second, inference knob swept on each model of a training knob (DACT: tau trains, the slack is swept)
    infer_knob: ClassVar[Optional[Knob]] = None

    def __init__(self, cfg: MethodConfig, task: TaskConfig) -> None:
        self.cfg = cfg
        self.task = task

    @classmethod
    def applies_to(cls, task: TaskConfig) -> bool:
        """Whether the method exists for ``task`` (a sweep over methods and tasks skips the pairs it does not);
        one that does not raises ``NotApplicable`` when built for it."""
        return True

    def default_knobs(self, num_layers: int) -> list[Any]:
        """The knob grid swept when ``method.knobs`` is null."""
        return [None]

    def knob_values(self, num_layers: int) -> list[Any]:
        """The grid a run sweeps: ``method.knobs``, else the task's own (``method.task_knobs``), else the default."""
        if self.cfg.knobs is not None:
            return list(self.cfg.knobs)
        return list(self.cfg.task_knobs.get(self.task.name) or self.default_knobs(num_layers))

    def infer_knob_values(self) -> list[Any]:
        """The grid of ``infer_knob`` swept on every trained model; ``[None]`` when there is none."""
        return [None]

    def build(self, backbone: Backbone, knob_value: Any) -> nn.Module:
        """The model: the backbone plus this method's heads, gates or halting units."""
        raise NotImplementedError

    def stages(self, model: nn.Module, knob_value: Any) -> list[Stage]:
        """The ordered training stages of ``model`` (a training knob's value must enter their signatures)."""
        raise NotImplementedError

    def infer(self, model: nn.Module, batch: Batch, knob_value: Any) -> Output:
        """The real adaptive forward: finished rows leave the batch, dropped tokens leave the sequence.
        ``knob_value`` is the inference knob's value (``infer_knob``'s when the main knob trains, else None)."""
        raise NotImplementedError

    def sweep(self, model: nn.Module, batch: Batch, values: Sequence[Any]) -> list[Output]:
        """All inference-knob values at once; methods with an exact one-pass replay override this."""
        return [self.infer(model, batch, v) for v in values]

    def head_logits(self, model: nn.Module, batch: Batch) -> Optional[list[torch.Tensor]]:
        """The answer of every internal classifier on every row, one ``[B, C]`` per layer (the records'
        ``head_scores``: how good each exit could be), or None for a method without per-layer heads."""
        return None


_METHODS: dict[str, type[Method]] = {}


def register_method(name: str, config: type[MethodConfig]) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: registers the method and stores its config schema as ``method/<name>_schema``."""

    def add(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} already registered by {_METHODS[name].__module__}")
        cls.name, cls.config_class = name, config
        _METHODS[name] = cls
        ConfigStore.instance().store(group="method", name=f"{name}_schema", node=config)
        return cls

    return add


def import_methods() -> None:
    """Import every module of the ``methods`` package, so a new file is a new plug-in."""
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"methods.{info.name}")


def list_methods() -> list[str]:
    import_methods()
    return sorted(_METHODS)


def get_method(name: str) -> type[Method]:
    import_methods()
    if name not in _METHODS:
        near = difflib.get_close_matches(name, _METHODS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise DynbenchError(f"unknown method {name!r}.{hint} Choose from: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for classification, MSE for regression (one output, as HF's ``problem_type``);
    ``reduction="none"`` gives each example's loss (a reward per example, TR-BERT)."""
    if logits.shape[-1] == 1:
        return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype), reduction=reduction)
    return nn.functional.cross_entropy(logits, labels, reduction=reduction)
