"""The exit family's shared machinery (METHODS.md §0.1-0.2): a classifier after every layer, the real
early-exit forward (``run``) and the exact one-pass replay (``replay``), both driven by the same rule.

An exit method supplies only an ``ExitRule``: a per-layer decision on the live rows. ``run`` removes exited
rows from the batch; ``replay`` runs every layer once and applies the rule afterwards, for many knob
values. Because both call the same rule on the same per-example logits, sweep == infer by construction
(up to float noise from different batch shapes; tests check it exactly at batch size 1).
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from dynbench.backbone import Backbone
from dynbench.config import MethodConfig, TaskConfig
from dynbench.errors import NotApplicable
from dynbench.live import LiveBatch
from dynbench.method import Batch, Knob, Method, Output, Stage, task_loss
from dynbench.trace import Trace

State = dict[str, torch.Tensor]  # per-row tensors, first dimension = live rows


class ExitRule:
    """Decides after each layer which rows leave, from the output ``z`` of that layer's head.

    ``step`` runs after every layer (0-based ``layer``, the last included, where every row leaves whatever it
    says) and returns the new per-row state and the rows that leave; ``answer`` is what a row outputs when it
    leaves: the head's logits by default, DACT's accumulated answer for DACT.
    """

    def start(self, rows: int) -> State:
        return {}

    def step(self, state: State, z: torch.Tensor, layer: int, knob: Any) -> tuple[State, torch.Tensor]:
        raise NotImplementedError

    def answer(self, state: State, z: torch.Tensor) -> torch.Tensor:
        return z

    def head_answer(self, z: torch.Tensor) -> torch.Tensor:
        """The classifier's own answer in a head's output ``z`` (DACT's heads append a halting logit)."""
        return z


class MultiExitModel(nn.Module):
    """The backbone, an exit head after layers 1..L−1 (``exits.0`` … ``exits.{L-2}``) and the final ``head``
    after layer L, named as in ``PlainClassifier`` so a plain fine-tune's checkpoint loads into it."""

    def __init__(self, backbone: Backbone, make_head: Callable[[Backbone], nn.Module],
                 make_exit: Callable[[Backbone], nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = make_head(backbone)  # built first: same initialisation as the plain model's head
        self.exits = nn.ModuleList([make_exit(backbone) for _ in range(backbone.num_layers - 1)])

    def head_at(self, layer: int) -> tuple[str, nn.Module]:
        """Module path and module of the classifier after 0-based ``layer``."""
        if layer == self.backbone.num_layers - 1:
            return "head", self.head
        return f"exits.{layer}", self.exits[layer]


def all_logits(model: MultiExitModel, batch: Batch) -> tuple[list[torch.Tensor], Trace]:
    """Every layer and every classifier on every row: ``[z_1 … z_L]``, each ``[B, C]``."""
    live = LiveBatch(model.backbone, batch)
    zs = []
    while not live.done:
        layer = live.next_layer
        live.run_layer()
        zs.append(live.run_head(*model.head_at(layer)))
    return zs, live.trace


def run(model: MultiExitModel, batch: Batch, rule: ExitRule, knob: Any) -> Output:
    """The real early-exit forward: an example leaves the batch at the first layer where ``rule`` says so."""
    live = LiveBatch(model.backbone, batch)
    last = model.backbone.num_layers - 1
    logits: torch.Tensor | None = None
    state = rule.start(len(live.rows))
    while not live.done:
        layer = live.next_layer
        live.run_layer()
        z = live.run_head(*model.head_at(layer))
        state, leave = rule.step(state, z, layer, knob)
        answer = rule.answer(state, z)
        if logits is None:
            logits = answer.new_empty(len(batch["attention_mask"]), answer.shape[-1])
        if layer == last:
            logits[live.rows] = answer
            break
        if leave.any():  # else nothing to move: at batch 1 that is every layer but the exit one
            logits[live.rows[leave]] = answer[leave]
            state = {k: v[~leave] for k, v in state.items()}
            live.keep_rows(~leave)
    return Output(logits, live.trace)


def replay(model: MultiExitModel, batch: Batch, rule: ExitRule, knobs: Sequence[Any]) -> list[Output]:
    """Exact one-pass sweep: one forward through every layer, then the rule replayed for each knob value."""
    zs, full = all_logits(model, batch)
    rows, depth = len(full.embed_tokens), len(zs)
    names = [model.head_at(layer)[0] for layer in range(depth)]
    outputs = []
    for knob in knobs:
        exit_layer = torch.full((rows,), depth - 1, dtype=torch.long)
        done = torch.zeros(rows, dtype=torch.bool)
        state = rule.start(rows)
        answers = []
        for layer in range(depth):
            state, leave = rule.step(state, zs[layer], layer, knob)
            answers.append(rule.answer(state, zs[layer]))
            if layer < depth - 1:
                exit_layer[leave.cpu() & ~done] = layer
                done |= leave.cpu()
        ran = torch.arange(depth)[None, :] <= exit_layer[:, None]  # [B, L]: layers each example went through
        trace = Trace(full.embed_tokens, full.layer_tokens * ran,
                      {name: full.head_tokens[name] * ran[:, i] for i, name in enumerate(names)})
        logits = torch.stack(answers)[exit_layer.to(zs[0].device), torch.arange(rows, device=zs[0].device)]
        outputs.append(Output(logits, trace))
    return outputs


def layer_weighted_loss(model: MultiExitModel, batch: Batch) -> torch.Tensor:
    """PABEE's joint loss: ``Σ_j j·L_j / Σ_j j`` over the classifiers of layers j = 1..L (METHODS.md §3b)."""
    zs, _ = all_logits(model, batch)
    weights = range(1, len(zs) + 1)
    return sum(j * task_loss(z, batch["labels"]) for j, z in zip(weights, zs)) / sum(weights)


def exit_heads_stage(name: str, signature: dict[str, Any], loss: Callable[[nn.Module, Batch], torch.Tensor]) -> Stage:
    """A stage that trains the exit heads only: the backbone and final head stay frozen and are not re-saved."""
    return Stage(name=name, signature=signature, trainable=lambda m: list(m.exits.parameters()), loss=loss,
                 saves=("exits.",))


def entropy(z: torch.Tensor) -> torch.Tensor:
    """``[b]`` entropy in nats of ``softmax(z)``."""
    logp = z.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def normalised_entropy(z: torch.Tensor) -> torch.Tensor:
    """``[b]`` entropy divided by its maximum ``ln C``: FastBERT's uncertainty, in [0, 1]."""
    return entropy(z) / math.log(z.shape[-1])


class StatelessRule(ExitRule):
    """A rule that looks at the current layer only: leave where ``leaves(z, knob)`` holds."""

    def __init__(self, leaves: Callable[[torch.Tensor, Any], torch.Tensor]) -> None:
        self.leaves = leaves

    def step(self, state: State, z: torch.Tensor, layer: int, knob: Any) -> tuple[State, torch.Tensor]:
        return state, self.leaves(z, knob)


class ExitMethod(Method):
    """Base of the exit family: a subclass builds its model and stages and sets ``rule`` (or overrides
    ``exit_rule`` when the rule depends on the model); the real forward and the one-pass sweep come from
    here, so they cannot drift apart."""

    knob: ClassVar[Knob]
    classification_only: ClassVar[bool] = False  # entropy rules have no meaning on one regression output
    rule: ExitRule

    @classmethod
    def applies_to(cls, task: TaskConfig) -> bool:
        return not (cls.classification_only and task.kind == "regression")

    def __init__(self, cfg: MethodConfig, task: TaskConfig) -> None:
        super().__init__(cfg, task)
        if not self.applies_to(task):
            raise NotApplicable(
                f"method={self.name} does not apply to the regression task {task.name}: the entropy of one output "
                "is meaningless (METHODS.md §0.5); use pabee, full or truncate")

    def exit_rule(self, model: nn.Module) -> ExitRule:
        return self.rule

    def infer(self, model: nn.Module, batch: Batch, knob_value: Any) -> Output:
        return run(model, batch, self.exit_rule(model), knob_value)

    def sweep(self, model: nn.Module, batch: Batch, values: Sequence[Any]) -> list[Output]:
        return replay(model, batch, self.exit_rule(model), values)

    def head_logits(self, model: nn.Module, batch: Batch) -> list[torch.Tensor]:
        zs, _ = all_logits(model, batch)
        rule = self.exit_rule(model)
        return [rule.head_answer(z) for z in zs]
