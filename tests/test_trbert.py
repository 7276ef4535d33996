"""TR-BERT (METHODS.md §5h): the policy removes exactly the tokens it rejects, keeps [CLS], and the rest runs
as the short sequence would; FLOPs with the policies counted; the REINFORCE loss's advantages and sign."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dynbench.backbone import load_backbone
from dynbench.errors import DynbenchError
from dynbench.flops import CostModel, count_flops
from dynbench.method import get_method
from dynbench.runner import load_data, run, trained_model
from methods.full import final_output
from methods.trbert import Decision, action_nll, policy_loss, reinforce_loss, selection_forward, selection_layers
from tests.conftest import make_config, random_batch


def _model(layers: int = 4):
    cfg = make_config("method=trbert", "model=tiny", f"model.random.num_hidden_layers={layers}")
    torch.manual_seed(0)
    return get_method("trbert")(cfg.method, cfg.task).build(load_backbone(cfg.model, 0), 1.0).eval()


class Fixed(nn.Module):
    """A stand-in policy that keeps the tokens at the given positions of the sequence it sees."""

    def __init__(self, keep: list[int]) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        probs = torch.full(mask.shape, 0.1)
        probs[:, [k for k in self.keep if k < mask.shape[1]]] = 0.9
        return probs


def test_selection_layers_follow_the_reference_rule() -> None:
    assert selection_layers(12) == [1, 6] and selection_layers(6) == [1, 3] and selection_layers(2) == [1]


def test_rejected_tokens_leave_and_the_rest_runs_as_the_short_sequence() -> None:
    model = _model()
    model.policies[0] = Fixed([3, 5])  # [CLS] is kept anyway
    model.policies[1] = Fixed([0, 1, 2])  # keeps everything that is left
    seen = []
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
             for layer in model.backbone.model.encoder.layer]
    batch = random_batch([8])
    with torch.no_grad():
        out = selection_forward(model, batch, sample=False)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        bb = model.backbone
        h = bb.layer(0, bb.embed(batch["input_ids"]), batch["attention_mask"])[:, [0, 3, 5]]
        for i in (1, 2, 3):
            h = bb.layer(i, h, torch.ones(1, 3))
        direct = model.head(h, torch.ones(1, 3))
    assert seen == [(1, 8, 32), (1, 3, 32), (1, 3, 32), (1, 3, 32)]
    assert out.decisions[0].keep[0].nonzero().flatten().tolist() == [0, 3, 5]
    assert out.trace.layer_tokens.tolist() == [[8, 3, 3, 3]]
    assert out.trace.heads("policies.0").tolist() == [8] and out.trace.heads("policies.1").tolist() == [3]
    torch.testing.assert_close(out.logits, direct, rtol=1e-5, atol=1e-6)


def test_copies_sharing_the_first_layers_equal_running_the_repeated_batch() -> None:
    model = _model()
    for policy in model.policies:
        nn.init.zeros_(policy.net[2].bias)  # π near 0.5: some tokens of each example go, some stay
    batch = random_batch([9, 6])
    repeated = {k: v.repeat_interleave(3, 0) for k, v in batch.items()}
    with torch.no_grad():
        shared = selection_forward(model, batch, sample=False, copies=3)
        direct = selection_forward(model, repeated, sample=False)
    seen = []
    hook = model.backbone.model.encoder.layer[0].register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    with torch.no_grad():
        selection_forward(model, batch, sample=False, copies=3)
    hook.remove()
    assert seen == [2]  # layer 0 ran once per example, not per copy
    assert torch.allclose(shared.logits, direct.logits, atol=1e-5)
    assert shared.trace.equal(direct.trace)
    assert all(torch.equal(a.keep, b.keep) for a, b in zip(shared.decisions, direct.decisions))
    assert not shared.decisions[0].keep[shared.decisions[0].present].all()


def test_flops_with_policies_equal_the_counter() -> None:
    model = _model()
    with torch.no_grad():
        model.policies[0].net[2].weight.normal_(0, 3.0)  # a policy that keeps some tokens and drops others
        model.policies[0].net[2].bias.fill_(0.0)
    cost = CostModel(model)
    removed = []
    for n in (5, 9, 12):
        batch = random_batch([n])
        with torch.no_grad(), model.backbone.eager_attention():
            out = selection_forward(model, batch, sample=False)
            counted = count_flops(lambda: selection_forward(model, batch, sample=False))
        assert cost.flops(out.trace).item() == pytest.approx(counted, rel=0.01)
        removed.append(int(out.trace.layer_tokens[0, 1]) < n)
    assert any(removed)  # some tokens really left


def test_keeping_everything_is_the_plain_model() -> None:
    model = _model()  # the policies start at pi = sigmoid(3) for every token
    batch = random_batch([10, 7, 3])
    with torch.no_grad():
        selected = selection_forward(model, batch, sample=False)
        plain = final_output(model, batch)
    assert torch.equal(selected.logits, plain.logits) and selected.trace.layer_tokens.equal(plain.trace.layer_tokens)


def test_advantages_are_rewards_less_the_mean_of_the_copies() -> None:
    nll = torch.ones(6, requires_grad=True)
    reinforce_loss(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 3.0]), nll, copies=3).backward()
    assert (nll.grad * 6).tolist() == pytest.approx([-1.0, 0.0, 1.0, -1.0, -1.0, 2.0])


def test_descending_the_loss_makes_the_better_rewarded_action_more_likely() -> None:
    logit = torch.zeros(1, requires_grad=True)
    probs = torch.sigmoid(logit).expand(2, 2)  # two copies of one example with one token beside [CLS]
    present = torch.ones(2, 2, dtype=torch.bool)
    keep = torch.tensor([[True, True], [True, False]])  # copy 1 kept the token, copy 2 dropped it
    loss = reinforce_loss(torch.tensor([1.0, -1.0]), action_nll([Decision(probs, keep, present)]), copies=2)
    loss.backward()
    assert logit.grad.item() < 0  # a descent step raises the keep probability: keeping was rewarded


def test_the_policy_stage_trains_only_the_policies() -> None:
    model = _model().train()
    policy_loss(model, random_batch([9, 6]), alpha=1.0, copies=4).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.policies.parameters())


def test_policies_train_at_their_lr_scale_in_both_rl_stages() -> None:
    from dynbench.train import _param_groups

    model = _model()
    cfg = make_config("method=trbert")
    for stage in get_method("trbert")(cfg.method, cfg.task).stages(model, 0.1)[1:]:
        groups = _param_groups(model, stage.trainable(model), 0.01, 5e-5, stage.lr_scales, stage.no_decay, 20.0)
        policy_ids = {id(p) for p in model.policies.parameters()}
        for group in groups:
            on_policies = {id(p) in policy_ids for p in group["params"]}
            assert len(on_policies) == 1
            if on_policies == {True}:
                assert group["lr"] == pytest.approx(5e-3)


def test_bad_knobs_fail_at_config_time() -> None:
    with pytest.raises(DynbenchError, match="length penalties alpha must be finite and >= 0"):
        make_config("method=trbert", "method.knobs=[-1]")
    with pytest.raises(DynbenchError, match="need >= 2 copies"):
        make_config("method=trbert", "method.samples=1")
    with pytest.raises(DynbenchError, match="method.policy_lr_scale: must be > 0"):
        make_config("method=trbert", "method.policy_lr_scale=0")
    with pytest.raises(DynbenchError, match="need >= 2 copies"):
        make_config("method=trbert", "method.joint_samples=1")
    with pytest.raises(DynbenchError, match="method.temperature: must be > 0"):
        make_config("method=trbert", "method.temperature=0")


def test_a_run_trains_three_stages_and_records_the_tokens_its_policy_keeps(config) -> None:
    """On the 2-layer model the policy decides once, before layer 2, from each token's state after layer 1: an
    example of n tokens runs layer 2 on [CLS] and its other tokens with π ≥ 0.5, so the record's tokens_mean
    is the dev mean of (n + that count) / 2, computed here one example at a time. At 3000× the lr the smoke
    steps teach alpha = 1 to drop most tokens."""
    cfg = config("method=trbert", "task=rte", "eval.timing=false", "method.knobs=[1.0]", "method.policy_lr_scale=3000")
    [record] = run(cfg)
    assert [s["name"] for s in record["stages"]] == ["plain_finetune", "trbert_policy", "trbert_joint"]
    data = load_data(cfg)
    _, model = trained_model(cfg, data, 1.0)
    backbone, means = model.backbone, []
    with torch.no_grad():
        for example in data.dev["validation"]:
            ids, types = torch.tensor([example["input_ids"]]), torch.tensor([example["token_type_ids"]])
            h = backbone.layer(0, backbone.embed(ids, types), torch.ones_like(ids))
            kept = 1 + int((model.policies[0](h, torch.ones_like(ids))[0, 1:] >= 0.5).sum())
            means.append((ids.shape[1] + kept) / 2)
    assert record["tokens_mean"] == pytest.approx(sum(means) / len(means), rel=1e-12)
    assert 1 < record["tokens_per_layer"][1] < record["tokens_per_layer"][0]  # some tokens left, not all
