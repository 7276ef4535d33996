"""PABEE: exit once `patience` consecutive classifiers agree (Zhou et al. 2020; METHODS.md §3).

One classifier per layer (the backbone's pooling, shared, then a Linear per layer), trained jointly with the
backbone on the layer-weighted loss. Departures from the paper: the classifiers read the backbone's pooled
representation of their layer, not ``[CLS]`` through BERT's pooler: a mean-pooled checkpoint such as MiniLM has
an untrained pooler and an early ``[CLS]`` that is one vector for every input, so a ``[CLS]`` classifier there
could learn only the class prior (``model.pooling``); MiniLM has 6 layers, so patience runs 1..L−1 (the paper's
12-layer grid is 3..8); the budget is dynbench's shared one (the paper: 5 epochs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING
from torch import nn

from dynbench import exits
from dynbench.backbone import Backbone
from dynbench.config import MethodConfig, check_knob_grids, positive_integer
from dynbench.heads import PoolerHead
from dynbench.method import Knob, Stage, register_method
from methods.full import final_output


@dataclass
class PabeeConfig(MethodConfig):
    regression_tol: float = MISSING  # STS-B: an answer is "unchanged" if it moved by less than this

    def __post_init__(self) -> None:
        check_knob_grids(self, positive_integer, "patience values must be integers >= 1")
        if self.regression_tol <= 0:
            raise ValueError(f"method.regression_tol: must be > 0, got {self.regression_tol}")


class PatienceRule(exits.ExitRule):
    """Per example: count consecutive layers whose answer equals the previous layer's; leave at ``patience``."""

    def __init__(self, regression_tol: float) -> None:
        self.tol = regression_tol

    def step(self, state: exits.State, z: torch.Tensor, layer: int, patience: int) -> tuple[exits.State, torch.Tensor]:
        regression = z.shape[-1] == 1
        answer = z[:, 0].float() if regression else z.argmax(-1).float()
        if layer == 0:
            streak = torch.zeros(len(z), dtype=torch.long, device=z.device)
        else:
            same = (answer - state["prev"]).abs() < self.tol if regression else answer == state["prev"]
            streak = torch.where(same, state["streak"] + 1, 0)
        return {"prev": answer, "streak": streak}, streak >= patience


@register_method("pabee", config=PabeeConfig)
class Pabee(exits.ExitMethod):
    version = 2  # 2: the classifiers read the backbone's pooling and train at train.head_lr_scale
    knob = Knob("patience", at="infer")

    def __init__(self, cfg: PabeeConfig, task) -> None:
        super().__init__(cfg, task)
        self.rule = PatienceRule(cfg.regression_tol)

    def default_knobs(self, num_layers: int) -> list[Any]:
        return list(range(1, num_layers))  # patience >= L - 1 never exits before the last layer

    def build(self, backbone: Backbone, knob_value: Any) -> nn.Module:
        classifier = lambda b: PoolerHead(b, self.task.num_labels)  # noqa: E731
        return exits.MultiExitModel(backbone, classifier, classifier)

    def stages(self, model: nn.Module, knob_value: Any) -> list[Stage]:
        return [Stage(
            name="pabee_joint",
            signature={"stage": "pabee_joint", "layers": model.backbone.num_layers, "v": self.version},
            trainable=lambda m: list(m.parameters()),
            loss=exits.layer_weighted_loss,
            predict=lambda m, batch: final_output(m, batch).logits,
        )]
