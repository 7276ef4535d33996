"""TR-BERT: learned token selection trained with REINFORCE (Ye et al. 2021; METHODS.md §5).

Before layer 2 and before layer ⌊L/2⌋ + 1 (0-based indices 1 and ⌊L/2⌋: after layers 1 and 6 of BERT-base,
1 and 3 of MiniLM, the reference's rule for any depth), a policy MLP (d → 32, GELU, → 1, sigmoid) gives every
token present a keep probability π; unkept tokens leave the sequence for all later layers; ``[CLS]`` is
always kept, and the classifier reads the backbone's pooling of the tokens still present at the end (the
reference reads ``[CLS]``; dynbench pools as the checkpoint was trained, ``model.pooling``: for MiniLM the mean
over the kept tokens). Inference is deterministic: keep iff π ≥ 0.5.

Stages, as the reference code orders them:
1. the plain fine-tune (cached, shared with ``full``);
2. policies only (backbone and classifier frozen): each example is replicated ``samples`` times, each copy
   samples its keep actions; reward ``R = −task loss − alpha · mean over selection points of (kept / n)``,
   baseline the mean reward of the copies of the same example, loss ``mean((R − b) · NLL(actions))``;
3. everything together: distillation to the stage-1 model (soft cross-entropy, or MSE for STS-B) plus the
   same policy loss.

Departures (dynbench): no imitation warm-up from the reference's gradient-based token scores (stage 2
starts from policies initialised to keep, bias 3: π ≈ 0.95); the policies read the hidden states detached,
so only the policy loss trains them; stage 2 samples ``samples`` copies (default 4, not 8) and stage 3
``joint_samples`` (default 2): on CPU each copy costs a forward pass (and in stage 3 a backward pass), and
at 8 copies the policy stage alone took 37 min on MRPC; the copies of one example share the layers before
the first selection point (computed once, so in training they also share its dropout); the policies train
at ``policy_lr_scale`` (100) × the lr: the reference's 3e-5 moves them by imitation, and without it, in
version 1 (1×), 312 policy steps on MRPC left them where they started (π ≈ 0.95, nothing removed at
inference, alpha = 0.5); the NLL of a selection point is averaged over the tokens it decided on (present,
less ``[CLS]``) and summed over the points, where the reference divides by n, and the reward's kept
fraction counts ``[CLS]``; the default alpha grid packs 0.1..0.5, where MiniLM on GLUE changes, and reaches 1
(``ALPHA_GRID``), not METHODS.md's {0.1, 0.5, 1, 2, 5}; STS-B is our extension (reward with −MSE).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from dynbench.backbone import Backbone
from dynbench.config import MethodConfig, check_knob_grids, nonnegative
from dynbench.live import LiveBatch
from dynbench.method import Batch, Knob, Method, Output, Stage, register_method, task_loss
from methods.full import PlainClassifier, final_output, plain_finetune

# dropping every token gains alpha in reward and costs about 0.3 in loss on MRPC (fine-tuned ~0.35, majority
# class 0.63). Measured (version 3, MiniLM): at 0.1 MRPC keeps 97% of its tokens and RTE all of them; at 0.5
# MRPC keeps a fifth, then a tenth, and answers near the majority class; at 1 both keep 1-2 tokens. So the
# benchmark's grid packs 0.1..0.5 and reaches 1.
# The benchmark's grid (experiment=glue): four values spanning the curve, chosen on the calibration split (held-out
# train) of the previous protocol's records in results/superseded/, never on dev; spread first, so that a run
# stopped part-way has covered the range. Calibration FLOPs speed-ups there (MRPC, RTE, SST-2): alpha
# 0.1 1.0-1.15x, 0.2 1.3-3.8x, 0.5 2.1-4.8x, 1 2.9-5.4x.
ALPHA_GRID = [0.2, 1.0, 0.1, 0.5]


@dataclass
class TrBertConfig(MethodConfig):
    samples: int = 4  # copies per example in the policy-only stage (the reference's K is 8)
    joint_samples: int = 2  # copies per example in the joint stage
    temperature: float = 1.0  # of the distillation to the stage-1 model
    policy_lr_scale: float = 100.0  # the policies' lr over the backbone's (see the module docstring)

    def __post_init__(self) -> None:
        check_knob_grids(self, nonnegative, "length penalties alpha must be finite and >= 0")
        if self.samples < 2 or self.joint_samples < 2:
            raise ValueError("method.samples and method.joint_samples: need >= 2 copies per example for the baseline")
        if not self.temperature > 0:
            raise ValueError(f"method.temperature: must be > 0, got {self.temperature}")
        if not self.policy_lr_scale > 0:
            raise ValueError(f"method.policy_lr_scale: must be > 0, got {self.policy_lr_scale}")


class Policy(nn.Module):
    """Keep probability of every token: Linear(d → 32), GELU, Linear(32 → 1), sigmoid (on detached states)."""

    def __init__(self, hidden: int, width: int = 32, keep_bias: float = 3.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, 1))
        nn.init.constant_(self.net[2].bias, keep_bias)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(h.detach())).squeeze(-1)


def selection_layers(num_layers: int) -> list[int]:
    """0-based layers before which tokens are selected."""
    return sorted({1, num_layers // 2} & set(range(1, num_layers)))


class SelectingClassifier(PlainClassifier):
    """The plain classifier (calling it runs without selection) plus ``policies``, one per selection layer."""

    def __init__(self, backbone: Backbone, num_labels: int) -> None:
        super().__init__(backbone, num_labels)
        self.points = selection_layers(backbone.num_layers)
        self.policies = nn.ModuleList([Policy(backbone.hidden_size) for _ in self.points])


@dataclass
class Decision:
    """One selection point: keep probabilities, the actions taken and the tokens present, each ``[b, t]``."""

    probs: torch.Tensor
    keep: torch.Tensor
    present: torch.Tensor


@dataclass
class SelectionOutput(Output):
    decisions: list[Decision]


def selection_forward(model: SelectingClassifier, batch: Batch, sample: bool, copies: int = 1) -> SelectionOutput:
    """Sampled (training) or deterministic (π ≥ 0.5) selection; unkept tokens leave the sequence. With
    ``copies``, each example becomes that many consecutive rows at the first selection point: the layers
    before it, the same for every copy, run once per example."""
    live = LiveBatch(model.backbone, batch)
    decisions = []
    while not live.done:
        if live.next_layer == model.points[0] and copies > 1:
            live.repeat_rows(copies)
        if live.next_layer in model.points:
            k = model.points.index(live.next_layer)
            probs = live.run_head(f"policies.{k}", model.policies[k])
            keep = torch.bernoulli(probs.detach()).bool() if sample else probs >= 0.5
            present = live.mask.bool()
            keep = (keep & present) | (torch.arange(present.shape[1], device=keep.device) == 0)
            decisions.append(Decision(probs, keep, present))
            live.keep_tokens(keep)
        live.run_layer()
    return SelectionOutput(live.run_head("head", model.head), live.trace, decisions)


def kept_fraction(decisions: list[Decision], lengths: torch.Tensor) -> torch.Tensor:
    """``[b]`` mean over selection points of the tokens kept over the example's length."""
    return torch.stack([d.keep.sum(1) / lengths for d in decisions]).mean(0)


def action_nll(decisions: list[Decision]) -> torch.Tensor:
    """``[b]`` negative log-likelihood of the actions taken, per token present (``[CLS]`` is not an action)."""
    total = 0.0
    for d in decisions:
        chosen = torch.where(d.keep, d.probs, 1 - d.probs).clamp_min(1e-8).log()
        acted = d.present.clone()
        acted[:, 0] = False
        total = total - (chosen * acted).sum(1) / acted.sum(1).clamp_min(1)
    return total


def reinforce_loss(reward: torch.Tensor, nll: torch.Tensor, copies: int) -> torch.Tensor:
    """``mean((R − b) · NLL)`` with ``b`` the mean reward over the ``copies`` consecutive rows of one example:
    descending it makes better-than-average actions more likely."""
    advantage = reward - reward.view(-1, copies).mean(1).repeat_interleave(copies)
    return (advantage.detach() * nll).mean()


def policy_loss(model: SelectingClassifier, batch: Batch, alpha: float, copies: int,
                teacher: Optional[nn.Module] = None, temperature: float = 1.0) -> torch.Tensor:
    """The REINFORCE loss on ``copies`` sampled selections per example; with a ``teacher``, plus the
    distillation of the (selected) model to it (stage 3)."""
    out = selection_forward(model, batch, sample=True, copies=copies)
    lengths = batch["attention_mask"].sum(1).repeat_interleave(copies)
    labels = batch["labels"].repeat_interleave(copies)
    reward = -task_loss(out.logits.detach(), labels, reduction="none") - alpha * kept_fraction(out.decisions, lengths)
    loss = reinforce_loss(reward, action_nll(out.decisions), copies)
    if teacher is not None:
        with torch.no_grad():
            target = final_output(teacher, batch).logits.repeat_interleave(copies, 0)
        loss = loss + distillation(out.logits, target, temperature)
    return loss


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft cross-entropy to the teacher's distribution at ``temperature`` (× T², the usual scale), or MSE
    for one regression output."""
    if student.shape[-1] == 1:
        return nn.functional.mse_loss(student, teacher)
    soft = (teacher / temperature).softmax(-1)
    return -(soft * (student / temperature).log_softmax(-1)).sum(-1).mean() * temperature ** 2


@register_method("trbert", config=TrBertConfig)
class TrBert(Method):
    # 2: the policies train at policy_lr_scale x the lr (at 1x they barely moved from keep-all); 3: the copies
    # share the layers before the first selection point, and the policy stage samples 4 copies, not 8; 4: the
    # classifier reads the backbone's pooling of the kept tokens and trains at train.head_lr_scale; 5: both RL
    # stages train train.followup_epochs, not train.epochs
    version = 5
    knob = Knob("alpha", at="train")

    def default_knobs(self, num_layers: int) -> list[Any]:
        return list(ALPHA_GRID)

    def build(self, backbone: Backbone, knob_value: Any) -> nn.Module:
        return SelectingClassifier(backbone, self.task.num_labels)

    def stages(self, model: nn.Module, alpha: Any) -> list[Stage]:
        cfg, alpha = self.cfg, float(alpha)
        teacher: list[nn.Module] = []  # the stage-1 model (its backbone and head), copied when stage 3 starts

        def keep_teacher(m: nn.Module) -> None:
            teacher[:] = [copy.deepcopy(m).eval().requires_grad_(False)]

        # both RL stages keep their last epoch: picking by score alone would favour the epochs that prune least
        signature = {"alpha": alpha, "samples": cfg.samples, "policy_lr_scale": cfg.policy_lr_scale, "v": self.version}
        fast = {"policies": cfg.policy_lr_scale}
        return [
            plain_finetune(model.backbone.num_layers),
            Stage(name="trbert_policy", signature={"stage": "trbert_policy", **signature},
                  trainable=lambda m: list(m.policies.parameters()),
                  loss=lambda m, batch: policy_loss(m, batch, alpha, cfg.samples), saves=("policies.",),
                  lr_scales=fast),
            Stage(name="trbert_joint", signature={"stage": "trbert_joint", "joint_samples": cfg.joint_samples,
                                                  "temperature": cfg.temperature, **signature},
                  trainable=lambda m: list(m.parameters()),
                  loss=lambda m, batch: policy_loss(m, batch, alpha, cfg.joint_samples, teacher[0], cfg.temperature),
                  setup=keep_teacher, lr_scales=fast),
        ]

    def infer(self, model: nn.Module, batch: Batch, knob_value: Any) -> Output:
        out = selection_forward(model, batch, sample=False)
        return Output(out.logits, out.trace)
