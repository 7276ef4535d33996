"""The full model: the standard fine-tune, pooler + linear on the last layer (METHODS.md §7).

Its single stage, the plain fine-tune, is the cached stage 1 that other methods (DeeBERT, DACT, TR-BERT,
two-stage gates) start from, and static truncation at k = L is the same training, hence the same checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from dynbench.backbone import Backbone
from dynbench.config import MethodConfig
from dynbench.heads import PoolerHead
from dynbench.live import LiveBatch
from dynbench.method import Batch, Method, Output, Stage, register_method, task_loss


def final_output(model: nn.Module, batch: Batch) -> Output:
    """Every layer of ``model.backbone``, then ``model.head`` on the last: the non-adaptive forward."""
    live = LiveBatch(model.backbone, batch)
    while not live.done:
        live.run_layer()
    return Output(live.run_head("head", model.head), live.trace)


class PlainClassifier(nn.Module):
    """Every layer of ``backbone``, then one ``PoolerHead`` on the last."""

    def __init__(self, backbone: Backbone, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = PoolerHead(backbone, num_labels)

    def forward(self, batch: Batch) -> Output:
        return final_output(self, batch)


def plain_finetune(num_layers: int) -> Stage:
    """Backbone and final head (``model.head``, a ``PoolerHead``) trained on the task loss, nothing else; the
    best epoch on the calibration split is kept. Any model with ``backbone`` and such a ``head`` shares the
    checkpoint."""
    return Stage(
        name="plain_finetune",
        signature={"stage": "plain_finetune", "layers": num_layers, "head": "pooler_linear", "v": 1},
        trainable=lambda model: [*model.backbone.parameters(), *model.head.parameters()],
        loss=lambda model, batch: task_loss(final_output(model, batch).logits, batch["labels"]),
        predict=lambda model, batch: final_output(model, batch).logits,
        saves=("backbone.", "head."),
    )


@dataclass
class FullConfig(MethodConfig):
    def __post_init__(self) -> None:
        if grids := self.knob_grids():
            raise ValueError(f"{grids[0][0]}: the full model has no knob; leave it unset")


@register_method("full", config=FullConfig)
class Full(Method):
    version = 2  # 2: the head reads the backbone's pooling (MiniLM: the mean), trains at train.head_lr_scale

    def build(self, backbone: Backbone, knob_value: Any) -> nn.Module:
        return PlainClassifier(backbone, self.task.num_labels)

    def stages(self, model: nn.Module, knob_value: Any) -> list[Stage]:
        return [plain_finetune(model.backbone.num_layers)]

    def infer(self, model: nn.Module, batch: Batch, knob_value: Any) -> Output:
        return model(batch)
