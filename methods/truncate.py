"""Static truncation: keep the pretrained embeddings and layers 1..k, fine-tune that k-layer model, one
model per k (METHODS.md §7; ElasticBERT's static usage, on a backbone not pre-trained with exits)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from dynbench.backbone import Backbone
from dynbench.config import MethodConfig, check_knob_grids, positive_integer
from dynbench.errors import DynbenchError
from dynbench.method import Batch, Knob, Method, Output, Stage, register_method
from methods.full import PlainClassifier, plain_finetune


@dataclass
class TruncateConfig(MethodConfig):
    def __post_init__(self) -> None:
        check_knob_grids(self, positive_integer, "layer counts k must be integers >= 1")


@register_method("truncate", config=TruncateConfig)
class Truncate(Method):
    version = 2  # 2: the head reads the backbone's pooling and trains at train.head_lr_scale
    knob = Knob("layers", at="train")

    def default_knobs(self, num_layers: int) -> list[Any]:
        return list(range(1, num_layers + 1))

    def knob_values(self, num_layers: int) -> list[Any]:
        values = super().knob_values(num_layers)
        too_deep = [k for k in values if k > num_layers]
        if too_deep:  # checked before anything trains
            raise DynbenchError(f"method.knobs: k={too_deep[0]} exceeds the backbone's {num_layers} layers")
        return values

    def build(self, backbone: Backbone, knob_value: Any) -> nn.Module:
        backbone.truncate(knob_value)
        return PlainClassifier(backbone, self.task.num_labels)

    def stages(self, model: nn.Module, knob_value: Any) -> list[Stage]:
        # the same stage as `full` with fewer layers: at k = L the two share one checkpoint
        return [plain_finetune(model.backbone.num_layers)]

    def infer(self, model: nn.Module, batch: Batch, knob_value: Any) -> Output:
        return model(batch)
