"""DeeBERT: off-ramps after every layer; exit at the first whose prediction entropy is below a threshold
(Xin et al. 2020; METHODS.md §6).

Stage 1 is the plain fine-tune (shared with `full` through the stage cache); stage 2 freezes the backbone
and final classifier and trains the off-ramps on the unweighted sum of their losses. Unlike the reference
code, the rule is not tested at layer L (whose off-ramp it never trains) and decisions are per example. The
off-ramps' poolers read the backbone's summary of their layer (``[CLS]``, or for a mean-pooled checkpoint
such as MiniLM the mean over the tokens: its early ``[CLS]`` is one vector for every input, ``model.pooling``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dynbench import exits
from dynbench.backbone import Backbone
from dynbench.config import MethodConfig, check_knob_grids
from dynbench.heads import OwnPoolerHead, PoolerHead
from dynbench.method import Batch, Knob, Stage, register_method, task_loss
from methods.full import plain_finetune

REFERENCE_GRID = [0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # castorini/DeeBERT


@dataclass
class DeebertConfig(MethodConfig):
    def __post_init__(self) -> None:
        check_knob_grids(self, lambda t: t >= 0, "entropy thresholds must be >= 0 (nats)")


def offramp_loss(model: exits.MultiExitModel, batch: Batch) -> torch.Tensor:
    """The unweighted sum of the off-ramp losses of layers 1..L−1 (METHODS.md §6b)."""
    zs, _ = exits.all_logits(model, batch)
    return sum(task_loss(z, batch["labels"]) for z in zs[:-1])


@register_method("deebert", config=DeebertConfig)
class Deebert(exits.ExitMethod):
    # 2: the off-ramps read the backbone's pooling and train at train.head_lr_scale; 3: they train
    # train.followup_epochs, not train.epochs
    version = 3
    knob = Knob("entropy", at="infer")
    classification_only = True
    rule = exits.StatelessRule(lambda z, threshold: exits.entropy(z) < threshold)

    def default_knobs(self, num_layers: int) -> list[Any]:
        # the reference grid, extended towards ln C (the maximum entropy) for tasks with more classes, and two
        # points just below ln C, where a 6-layer MiniLM's off-ramps sit (measured on MRPC and RTE)
        top = math.log(self.task.num_labels)
        coarse = [s for s in (0.8, 0.9, 1.0, 1.1) if s <= top + 0.01]
        return sorted(set(REFERENCE_GRID + coarse + [round(top - d, 3) for d in (0.04, 0.015)]))

    def build(self, backbone: Backbone, knob_value: Any) -> nn.Module:
        return exits.MultiExitModel(backbone, lambda b: PoolerHead(b, self.task.num_labels),
                                    lambda b: OwnPoolerHead(b, self.task.num_labels))

    def stages(self, model: nn.Module, knob_value: Any) -> list[Stage]:
        return [
            plain_finetune(model.backbone.num_layers),
            exits.exit_heads_stage("offramps", {"stage": "deebert_offramps", "v": self.version}, offramp_loss),
        ]
