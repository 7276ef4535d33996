"""FastBERT: self-distilled student classifiers; exit once the normalised entropy ("uncertainty") is below
the speed threshold (Liu et al. 2020; METHODS.md §4).

Stage 1 fine-tunes the backbone with the teacher, the classifier on the last layer; stage 2 freezes both and
distils the students from the teacher with KL divergence, labels unused. Students train at
``train.head_lr_scale`` × the lr, the rule for parameters the checkpoint did not train (the reference trains
them at 10×). Departures: the teacher is the plain fine-tune's head, so stage 1 is ``full``'s fine-tune, shared
through the stage cache (the reference's teacher has the students' shape: on MiniLM that head, trained with the
backbone, stayed at the majority answer on CoLA, calibration MCC 0 after each of 3 epochs at 20× and at 5× the
lr and with a variance-preserving init, and on RTE; results/superseded/glue_fastbert_v3/NOTES.md); dynbench's
shared epoch budget for the distillation (the reference distils for 5 epochs); exit when ``u < speed`` (the pip
version's boundary), so speed 0 is exactly the full model; a student attends from ``[CLS]`` only, the one
position it reads (same outputs as the reference's attention from every position; its FLOPs are linear in n:
``FastBertStudent``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dynbench import exits
from dynbench.backbone import Backbone
from dynbench.config import MethodConfig, check_knob_grids
from dynbench.heads import FastBertStudent, PoolerHead
from dynbench.method import Batch, Knob, Stage, register_method
from methods.full import plain_finetune


@dataclass
class FastbertConfig(MethodConfig):
    def __post_init__(self) -> None:
        check_knob_grids(self, lambda speed: 0 <= speed <= 1, "speed values must lie in [0, 1]")


def distillation_loss(model: exits.MultiExitModel, batch: Batch) -> torch.Tensor:
    """``Σ_{i<L} KL(p_teacher ‖ p_i)``, batch-mean; the teacher is the last layer's head, held fixed."""
    zs, _ = exits.all_logits(model, batch)
    teacher = zs[-1].detach().softmax(-1)
    return sum(nn.functional.kl_div(z.log_softmax(-1), teacher, reduction="batchmean") for z in zs[:-1])


@register_method("fastbert", config=FastbertConfig)
class Fastbert(exits.ExitMethod):
    # 2: students (and teacher) attend from [CLS] only: same outputs, fewer FLOPs; heads train at
    # train.head_lr_scale (the teacher at 1x stayed at the majority class on MRPC); 3: the distillation
    # trains train.followup_epochs, not train.epochs; 4: the teacher is the plain fine-tune's head (stage 1 is
    # full's), since the students' shape as teacher did not learn on CoLA and RTE
    version = 4
    knob = Knob("speed", at="infer")
    classification_only = True
    rule = exits.StatelessRule(lambda z, speed: exits.normalised_entropy(z) < speed)

    def default_knobs(self, num_layers: int) -> list[Any]:
        return [round(0.1 * i, 1) for i in range(11)]

    def build(self, backbone: Backbone, knob_value: Any) -> nn.Module:
        return exits.MultiExitModel(backbone, lambda b: PoolerHead(b, self.task.num_labels),
                                    lambda b: FastBertStudent(b, self.task.num_labels))

    def stages(self, model: nn.Module, knob_value: Any) -> list[Stage]:
        return [
            plain_finetune(model.backbone.num_layers),
            exits.exit_heads_stage("self_distillation", {"stage": "fastbert_distillation", "v": self.version},
                                   distillation_loss),
        ]
