"""Token reduction (METHODS.md §1h): tokens really leave the sequence, exactly the ones the gates
close, [CLS] stays, the short sequence gives what running it directly gives, FLOPs match the counter, the
bi-modal regularizer on hand-made gates, all-open gates are the plain model, bad knobs."""
from __future__ import annotations

import pytest
import torch

from dynbench import tokens
from dynbench.backbone import load_backbone, load_tokenizer
from dynbench.data import load_task
from dynbench.errors import DynbenchError
from dynbench.flops import CostModel, count_flops
from dynbench.live import LiveBatch
from dynbench.loggers import Logger
from dynbench.method import get_method
from dynbench.runner import load_data, run, trained_model
from dynbench.train import train_stages
from methods.full import final_output
from methods.token_gates import FLOOR, gated_forward, gates_loss, straight_through
from tests.conftest import make_config, random_batch


def _model(layers: int = 3):
    cfg = make_config("method=token_gates", "model=tiny", f"model.random.num_hidden_layers={layers}")
    torch.manual_seed(0)
    return get_method("token_gates")(cfg.method, cfg.task).build(load_backbone(cfg.model, 0), 0.1).eval()


def test_keep_tokens_gathers_the_kept_tokens_in_order_keeps_cls_and_never_padding() -> None:
    model = _model()
    live = LiveBatch(model.backbone, random_batch([8, 5], width=10))
    before = live.h.clone()
    keep = torch.zeros(2, 10, dtype=torch.bool)
    keep[0, [2, 5, 7]] = True  # row 0: [CLS] is added
    keep[1, [1, 3, 6, 9]] = True  # row 1: 6 and 9 are padding
    live.keep_tokens(keep)
    assert live.h.shape == (2, 4, before.shape[-1])  # the longest row keeps 4 tokens
    assert live.positions[0].tolist() == [0, 2, 5, 7] and live.mask[0].tolist() == [1, 1, 1, 1]
    assert live.positions[1, :3].tolist() == [0, 1, 3] and live.mask[1].tolist() == [1, 1, 1, 0]
    assert torch.equal(live.h[0], before[0, [0, 2, 5, 7]])


def test_closed_gates_remove_exactly_their_tokens_and_the_rest_runs_as_a_short_sequence(monkeypatch) -> None:
    model = _model()
    # forced scores: token i of each row scores -i, so ranks follow positions; layer-2 gates open ranks 0..2
    monkeypatch.setattr(tokens, "attention_received",
                        lambda attention, mask, weights: (-torch.arange(mask.shape[1], dtype=torch.float)).expand(mask.shape)
                        .masked_fill(~mask.bool(), float("-inf")).clone())
    with torch.no_grad():
        model.gates[0, 3:] = 0.0  # the input of layer 2: three tokens go on
        model.gates[1, 2:] = 0.2  # the input of layer 3: two of those (0.2 < 0.5 closes)
    seen = []
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
             for layer in model.backbone.model.encoder.layer]
    batch = random_batch([8, 2], width=10)
    with torch.no_grad():
        out = gated_forward(model, batch, hard=True)
    for h in hooks:
        h.remove()
    assert seen == [(2, 10, 32), (2, 3, 32), (2, 2, 32)]  # the batch is padded to 10
    assert out.trace.layer_tokens.tolist() == [[8, 3, 2], [2, 2, 2]]
    assert out.trace.padded_slots() == 2 * 8 + 2 * 3 + 2 * 2  # rows x the longest row, per layer (19 real)
    # the same layers run directly on tokens 0..2 (then 0..1) of row 0 give the same answer
    with torch.no_grad():
        bb = model.backbone
        h = bb.layer(0, bb.embed(batch["input_ids"][:1, :8]), torch.ones(1, 8))[:, :3]
        h = bb.layer(1, h, torch.ones(1, 3))[:, :2]
        direct = model.head(bb.layer(2, h, torch.ones(1, 2)), torch.ones(1, 2))
    torch.testing.assert_close(out.logits[:1], direct, rtol=1e-5, atol=1e-6)


def test_the_tokens_kept_are_the_best_ranked_ones_wherever_they_stand(monkeypatch) -> None:
    model = _model()
    scores = torch.tensor([[float("inf"), 0.7, 0.1, 0.9, 0.2, 0.8, 0.0, 0.3]])  # best first: [CLS], 3, 5, 1, ...
    monkeypatch.setattr(tokens, "attention_received", lambda attention, mask, weights: scores.clone())
    with torch.no_grad():
        model.gates[0, 3:] = 0.0  # the input of layer 2: ranks 0..2 go on, i.e. tokens 0, 3 and 5
    batch = random_batch([8])
    with torch.no_grad():
        out = gated_forward(model, batch, hard=True)
        bb = model.backbone
        h = bb.layer(0, bb.embed(batch["input_ids"]), batch["attention_mask"])[:, [0, 3, 5]]  # in input order
        for i in (1, 2):
            h = bb.layer(i, h, torch.ones(1, 3))
        direct = model.head(h, torch.ones(1, 3))
    assert out.trace.layer_tokens.tolist() == [[8, 3, 3]]
    torch.testing.assert_close(out.logits, direct, rtol=1e-5, atol=1e-6)


def test_trace_flops_equal_the_counter_when_tokens_leave(monkeypatch) -> None:
    model = _model()
    with torch.no_grad():
        model.gates[0, 4:] = 0.0
        model.gates[1, 2:] = 0.0
    cost = CostModel(model)
    for lengths in ([9], [4], [10]):
        batch = random_batch(lengths, width=lengths[0])  # no padding: the counter counts padded lengths
        with torch.no_grad(), model.backbone.eager_attention():
            out = gated_forward(model, batch, hard=True)
            counted = count_flops(lambda: gated_forward(model, batch, hard=True))
        assert out.trace.layer_tokens[0].tolist() == [lengths[0], min(4, lengths[0]), min(2, lengths[0])]
        assert cost.flops(out.trace).item() == pytest.approx(counted, rel=0.01)


def test_a_ranking_that_closes_no_token_present_is_the_plain_model(monkeypatch) -> None:
    """Gates closed from rank 8, which no row reaches (lengths 7, 5, 3) but the batch's width (10) does: the
    layer before layer 2 keeps its attention, the tokens are ranked and gathered, and only the padding goes.
    Equal to rounding, not bit for bit: the gathered sequence runs 7 wide where the plain model runs 10 wide,
    and how a CPU's kernels block a matrix depends on its width (an AVX2 machine differs by 4e-9 here, while
    closing one real token moves the logits by 2e-2)."""
    model = _model()
    with torch.no_grad():
        model.gates[:, 8:] = 0.0
    ranked = []
    with_attention = model.backbone.layer_with_attention
    monkeypatch.setattr(model.backbone, "layer_with_attention", lambda i, h, mask: ranked.append(i) or with_attention(i, h, mask))
    batch = random_batch([7, 5, 3], width=10)
    with torch.no_grad(), model.backbone.eager_attention():
        gated = gated_forward(model, batch, hard=True)
        plain = final_output(model, batch)
    assert ranked == [0]  # then the sequence is 7 long, and a gate closed from rank 8 needs no ranking
    assert gated.trace.equal(plain.trace)
    torch.testing.assert_close(gated.logits, plain.logits, rtol=1e-6, atol=1e-7)


def test_all_open_gates_in_training_rank_every_layer_and_still_give_the_plain_model() -> None:
    model = _model()  # eval mode: no dropout, so the training path (ranking, key weights) is deterministic
    batch = random_batch([10, 6, 3], width=10)
    with model.backbone.eager_attention():
        gated = gated_forward(model, batch, hard=False)
        with torch.no_grad():
            plain = final_output(model, batch)
    assert len(gated.kept) == 2 and all(torch.equal(k, torch.ones(3)) for k in gated.kept)  # both gated layers ranked
    assert torch.equal(gated.logits, plain.logits)  # key weights of 1 add log 1 = 0


def test_bimodal_and_cost_terms_on_hand_made_gates() -> None:
    model = _model(layers=2)  # one gated layer
    with torch.no_grad():
        model.gates[0, :4] = torch.tensor([0.3, 0.5, 0.25, 1.0])  # rank 0 is [CLS]: always 1
    batch = random_batch([4], width=10)
    out = gated_forward(model, batch, hard=False)
    # the three non-[CLS] tokens take gates of ranks 1..3 (in some order): 0.5, 0.25, 1.0
    assert out.kept[0].item() == pytest.approx((1 + 0.5 + 0.25 + 1.0) / 4)
    assert out.bimodal[0].item() == pytest.approx((0.25 + 0.1875) / 4)
    model.zero_grad()
    gates_loss(model, batch, lam=0.0, beta=1.0).backward()
    task_only = _model(layers=2)
    with torch.no_grad():
        task_only.gates[0, :4] = torch.tensor([0.3, 0.5, 0.25, 1.0])
    gates_loss(task_only, batch, lam=0.0, beta=0.0).backward()
    bimodal_grad = model.gates.grad[0, 1:4] - task_only.gates.grad[0, 1:4]
    # d/dg of g (1 − g) / n = (1 − 2g) / 4
    assert bimodal_grad.tolist() == pytest.approx([0.0, 0.125, -0.25], abs=1e-6)


@pytest.mark.parametrize("lam", [0.01, 0.03, 0.1])
def test_the_regularizers_pull_on_an_open_gate(lam) -> None:
    """docs/methods.md's reading of the lambda grid rests on this: at g = 1 the two terms pull a gate of layer l by
    (lambda · S_l − beta) / n, S_l = l + … + L (a token shut before layer l is gone from every later layer)."""
    model, task_only = _model(layers=6), _model(layers=6)
    batch = random_batch([5], width=8)
    gates_loss(model, batch, lam=lam, beta=0.1).backward()
    gates_loss(task_only, batch, lam=0.0, beta=0.0).backward()
    pull = (model.gates.grad - task_only.gates.grad)[:, 1:5]  # the 4 non-[CLS] tokens' ranks, layers 2..6
    later = torch.tensor([sum(range(l, 7)) for l in range(2, 7)], dtype=pull.dtype)[:, None].expand_as(pull)
    torch.testing.assert_close(pull, (lam * later - 0.1) / 5, atol=1e-6, rtol=0)


def test_bad_knobs_fail_at_config_time() -> None:
    with pytest.raises(DynbenchError, match="lambda must be finite and >= 0"):
        make_config("method=token_gates", "method.knobs=[-1]")
    with pytest.raises(DynbenchError, match="method.gate_lr_scale: must be > 0"):
        make_config("method=token_gates", "method.gate_lr_scale=0")
    with pytest.raises(DynbenchError, match="method.beta: must be finite and >= 0"):
        make_config("method=token_gates", "method.beta=-0.1")


def test_a_run_trains_both_stages_and_records_the_tokens_its_gates_keep(config) -> None:
    """On the 2-layer model, an example of n tokens runs layer 1 on n and layer 2 on [CLS] plus the tokens of
    ranks 1..n − 1 whose gates are open, whatever the ranking: the record's tokens_mean is the dev mean of
    that count's average with n. A gate lr of 1 per step lets lambda = 1 close gates within the smoke steps."""
    cfg = config("method=token_gates", "task=rte", "eval.timing=false", "method.knobs=[0.0,1.0]",
                 "method.gate_lr_scale=20000")
    records = run(cfg)
    assert [r["knob_value"] for r in records] == [0.0, 1.0]
    assert [s["name"] for s in records[0]["stages"]] == ["plain_finetune", "token_gates"]
    assert records[1]["stages"][0]["reused"]
    data = load_data(cfg)
    lengths = torch.tensor([sum(x["attention_mask"]) for x in data.dev["validation"]])
    for record in records:
        _, model = trained_model(cfg, data, record["knob_value"])
        kept = torch.tensor([1 + int((model.gates[0, 1:n] >= 0.5).sum()) for n in lengths])
        assert record["tokens_mean"] == pytest.approx(((lengths + kept) / 2).double().mean().item(), rel=1e-12)
    assert 1 < records[1]["tokens_mean"] < lengths.double().mean().item()  # lambda = 1 removed tokens


def test_training_clips_the_gates_to_0_1(config) -> None:
    """Gates at a lr of 1 per step, lambda = 1 pushing them shut (or the task pushing them open): through the
    runner's training loop they end in [0, 1], the pushed ones at a bound, where AdamW alone takes them past."""
    cfg = config("method=token_gates", "task=rte", "method.gate_lr_scale=20000", "method.two_stage=false")
    method = get_method("token_gates")(cfg.method, cfg.task)
    model = method.build(load_backbone(cfg.model, 0), 1.0)
    data = load_task(cfg.task, load_tokenizer(cfg.model), 64, cfg.data_dir, cfg.cache_dir, 16, 8)
    train_stages(model, method.stages(model, 1.0), data, cfg.train, {}, cfg.cache_dir, 1, Logger(), False, 8)
    assert 0 <= model.gates.min().item() and model.gates.max().item() <= 1
    assert (model.gates == 0).any()


def test_binary_gates_train_the_model_that_runs_and_closed_gates_still_learn() -> None:
    model = _model(layers=4)
    with torch.no_grad():
        model.gates[:, :12] = torch.tensor([[1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1],
                                            [1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1],
                                            [1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1]], dtype=torch.float)
    batch = random_batch([10, 7, 4], width=10)
    soft = gated_forward(model, batch, hard=False)
    with torch.no_grad():
        hard = gated_forward(model, batch, hard=True)
    # soft: closed tokens keep a 1e-3 weight as keys and no vote in later rankings; hard: they are gone
    torch.testing.assert_close(soft.logits, hard.logits, atol=5e-3, rtol=0)
    # the soft share of tokens going on after each gate is the hard count entering the next layer
    torch.testing.assert_close(torch.stack(soft.kept).detach().double(),
                               (hard.trace.layer_tokens[:, 1:].T / hard.trace.embed_tokens).double(), atol=0.01, rtol=0)
    task = torch.nn.functional.cross_entropy(soft.logits, batch["labels"])
    task.backward()
    closed = model.gates.grad[:, :10][model.gates.detach()[:, :10] == 0]
    assert (closed != 0).any()  # the task still reaches closed gates: they can reopen


def test_straight_through_weights_are_hard_with_the_soft_gradient_of_log_g() -> None:
    g = torch.tensor([1.0, 0.7, 0.5, 0.3, 0.0005], requires_grad=True)
    w = straight_through(g)
    assert w.tolist() == pytest.approx([1, 1, 1, FLOOR, FLOOR])
    w.log().sum().backward()
    assert g.grad.tolist() == pytest.approx([1, 1 / 0.7, 2, 1 / 0.3, 1 / FLOOR])  # d log max(g, FLOOR) / d g


def test_gates_anywhere_in_0_1_train_the_model_that_runs() -> None:
    """Version 1 trained soft weights g and thresholded at inference; gates that settled near 0.5 then
    removed tokens that training still weighed at ~0.45. Straight through, training runs the hard model."""
    model = _model(layers=4)
    with torch.no_grad():
        model.gates[:, :12] = torch.rand(3, 12, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2
    batch = random_batch([10, 7, 4], width=10)
    soft = gated_forward(model, batch, hard=False)
    with torch.no_grad():
        hard = gated_forward(model, batch, hard=True)
    assert (hard.trace.layer_tokens[:, -1] < hard.trace.layer_tokens[:, 0]).all()  # tokens did leave
    torch.testing.assert_close(soft.logits, hard.logits, atol=5e-3, rtol=0)


def test_inference_ranks_only_before_gates_that_can_close_a_token(monkeypatch) -> None:
    model = _model()
    with torch.no_grad():
        model.gates[1, 5:] = 0.0  # layer 2's gates all open; layer 3's close ranks 5 and beyond
    ranked = []
    with_attention = model.backbone.layer_with_attention
    monkeypatch.setattr(model.backbone, "layer_with_attention", lambda i, h, mask: ranked.append(i) or with_attention(i, h, mask))
    with torch.no_grad():
        long = gated_forward(model, random_batch([8, 6], width=8), hard=True)
        assert ranked == [1] and long.trace.layer_tokens[:, 2].tolist() == [5, 5]  # attention kept for layer 3's ranks
        ranked.clear()
        batch = random_batch([5, 3], width=5)  # at most 5 tokens: nothing can close, nothing is ranked
        short = gated_forward(model, batch, hard=True)
        assert ranked == [] and torch.equal(short.logits, final_output(model, batch).logits)


def _gates_stage(model, cfg):
    return get_method("token_gates")(cfg.method, cfg.task).stages(model, 0.1)[-1]


def test_gates_train_faster_than_the_backbone_and_without_weight_decay() -> None:
    from dynbench.train import _param_groups

    model = _model()
    stage = _gates_stage(model, make_config("method=token_gates"))
    groups = _param_groups(model, stage.trainable(model), 0.01, 5e-5, stage.lr_scales, stage.no_decay, 20.0)
    [gates] = [g for g in groups if any(p is model.gates for p in g["params"])]
    assert gates["lr"] == pytest.approx(2e-2) and gates["weight_decay"] == 0.0 and len(gates["params"]) == 1
    assert sorted({g["lr"] for g in groups if g is not gates}) == pytest.approx([5e-5, 1e-3])  # backbone, head


def test_a_gate_pushed_one_way_crosses_0_1_within_rtes_steps() -> None:
    """Adam moves a gate by at most about its lr per step: with training's own optimiser and schedule, a gate
    under a steady push must be able to close (and reopen) within RTE's 213 steps, or the step budget, not
    lambda, decides which gates close (version 2's 5e-3 moved every gate from 1 to 0.57 there)."""
    from dynbench.train import optimizer_and_schedule

    cfg, model = make_config("method=token_gates"), _model()
    stage = _gates_stage(model, cfg)
    optimizer, schedule = optimizer_and_schedule(model, stage.trainable(model), stage, cfg.train, total=213)
    for _ in range(213):
        model.gates.grad = torch.ones_like(model.gates)  # only the gates move: the rest has no gradient
        optimizer.step()
        schedule.step()
    assert model.gates.max().item() < -0.5  # travelled more than 1.5 from 1
