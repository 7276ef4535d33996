"""The exit family's contract, for every exit method: sweep == infer, rows really leave, FLOPs counted."""
from __future__ import annotations

import pytest
import torch

from dynbench import exits
from dynbench.backbone import load_backbone, load_tokenizer
from dynbench.data import load_task
from dynbench.flops import CostModel, count_flops
from dynbench.method import get_method, list_methods
from tests.conftest import GLUE, make_config, spread_exit_heads

EXIT_METHODS = [m for m in list_methods() if issubclass(get_method(m), exits.ExitMethod)]


def test_the_exit_family_is_registered() -> None:
    assert {"pabee", "deebert", "fastbert", "dact"} <= set(EXIT_METHODS)


def _setup(name: str, tmp_path, layers: int = 4):
    """A 4-layer random model whose classifiers are spread on the data (``spread_exit_heads``), so that
    examples exit at different layers. Returns the grid that ``sweep`` takes: the inference knob's."""
    cfg = make_config(f"method={name}", "model=tiny", f"model.random.num_hidden_layers={layers}")
    method = get_method(name)(cfg.method, cfg.task)
    torch.manual_seed(0)
    model = method.build(load_backbone(cfg.model, 0), None).eval()
    data = load_task(cfg.task, load_tokenizer(cfg.model), 128, str(GLUE), str(tmp_path / "cache"), limit_eval=24)
    spread_exit_heads(model, next(iter(data.loader(data.dev["validation"], 24))), cfg.task.num_labels)
    return method, model, data, method.infer_knob_values() if method.infer_knob else method.knob_values(layers)


@pytest.mark.parametrize("name", EXIT_METHODS)
def test_sweep_equals_infer_exactly_at_batch_size_one(name: str, tmp_path) -> None:
    method, model, data, knobs = _setup(name, tmp_path)
    exit_layers = set()
    with torch.no_grad():
        for batch in data.loader(data.dev["validation"].select(range(12)), 1):
            for knob, swept in zip(knobs, method.sweep(model, batch, knobs)):
                real = method.infer(model, batch, knob)
                assert torch.equal(real.logits, swept.logits), (knob, real.logits, swept.logits)
                assert real.trace.equal(swept.trace), knob
                exit_layers.add(int(real.trace.exit_layer))
    assert len(exit_layers) > 1  # the test exercised exits at several layers


@pytest.mark.parametrize("name", EXIT_METHODS)
def test_sweep_equals_infer_on_a_batch_and_rows_really_leave(name: str, tmp_path) -> None:
    method, model, data, knobs = _setup(name, tmp_path)
    rows_seen: list[int] = []
    hooks = [layer.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[0]))
             for layer in model.backbone.model.encoder.layer]
    batch = next(iter(data.loader(data.dev["validation"], 24)))
    mixed = False
    with torch.no_grad():
        for knob, swept in zip(knobs, method.sweep(model, batch, knobs)):
            rows_seen.clear()
            real = method.infer(model, batch, knob)
            assert torch.equal(real.logits.argmax(-1), swept.logits.argmax(-1))
            torch.testing.assert_close(real.logits, swept.logits, atol=1e-3, rtol=1e-3)  # batch shapes differ
            assert real.trace.equal(swept.trace)
            leaving = torch.bincount(real.trace.exit_layer, minlength=5)[1:]
            assert rows_seen == [24 - int(leaving[:i].sum()) for i in range(len(rows_seen))]  # a layer sees fewer rows
            mixed |= (leaving > 0).sum().item() > 1
    for h in hooks:
        h.remove()
    assert mixed  # some knob made examples of one batch exit at different layers


@pytest.mark.parametrize("name", EXIT_METHODS)
def test_trace_flops_equal_the_counter_around_the_real_exit_forward(name: str, tmp_path) -> None:
    method, model, data, knobs = _setup(name, tmp_path)
    cost = CostModel(model)
    seen = set()
    with torch.no_grad(), model.backbone.eager_attention():
        for i, batch in enumerate(data.loader(data.dev["validation"], 1)):
            knob = knobs[i % len(knobs)]
            out = method.infer(model, batch, knob)
            counted = count_flops(lambda: method.infer(model, batch, knob))
            assert cost.flops(out.trace).item() == pytest.approx(counted, rel=0.01)
            ran = [n for n, t in out.trace.head_tokens.items() if t.item() > 0]
            assert len(ran) == int(out.trace.exit_layer)  # one head per visited layer, counted
            seen.add(int(out.trace.exit_layer))
    assert len(seen) > 1


def test_replay_with_a_never_exiting_rule_is_the_full_multi_exit_forward(tmp_path) -> None:
    method, model, data, _ = _setup("deebert", tmp_path)
    batch = next(iter(data.loader(data.dev["validation"], 8)))
    with torch.no_grad():
        [out] = method.sweep(model, batch, [0.0])  # entropy is never < 0
        zs, trace = exits.all_logits(model, batch)
    assert torch.equal(out.logits, zs[-1]) and out.trace.equal(trace)


@pytest.mark.parametrize("name", ["deebert", "fastbert"])
def test_the_exit_heads_stage_trains_the_exit_heads_only(name: str, config) -> None:
    """Through the runner's training loop: the backbone and the final head (FastBERT's teacher) are bit for
    bit what stage 1 left, the exit heads moved, and the backward reached exactly the exit heads' parameters
    (the loop freezes the rest, so no gradient is even computed for it)."""
    from dynbench.loggers import Logger
    from dynbench.train import train_stages

    cfg = config(f"method={name}", "task=rte")
    method = get_method(name)(cfg.method, cfg.task)
    model = method.build(load_backbone(cfg.model, 0), None)
    data = load_task(cfg.task, load_tokenizer(cfg.model), 64, cfg.data_dir, cfg.cache_dir, 16, 8)
    stage1, stage2 = method.stages(model, None)
    train_stages(model, [stage1], data, cfg.train, {}, cfg.cache_dir, 1, Logger(), False, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reached: set[str] = set()
    hooks = [p.register_post_accumulate_grad_hook(lambda p, n=n: reached.add(n)) for n, p in model.named_parameters()]
    [result] = train_stages(model, [stage1, stage2], data, cfg.train, {}, cfg.cache_dir, 1, Logger(), False, 8)[1:]
    for hook in hooks:
        hook.remove()
    after = model.state_dict()
    assert not result.reused and result.steps > 0
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("exits."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("exits."))
    assert reached == {n for n, _ in model.named_parameters() if n.startswith("exits.")}
