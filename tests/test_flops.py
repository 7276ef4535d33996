"""The cost model: calibrated by FlopCounterMode with eager attention, quadratic in n, and equal to the
counter wrapped around the real forward at batch 1."""
from __future__ import annotations

import pytest
import torch

from dynbench.backbone import load_backbone
from dynbench.flops import CostModel, count_flops
from dynbench.method import get_method
from tests.conftest import make_config, random_batch, spread_exit_heads


def _model(model: str, method: str = "full", knob=None):
    cfg = make_config(f"model={model}", f"method={method}")
    torch.manual_seed(0)
    m = get_method(method)(cfg.method, cfg.task).build(load_backbone(cfg.model), knob)
    return m.eval()


def _batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1000, 2000, (1, n), generator=g),
            "attention_mask": torch.ones(1, n, dtype=torch.long), "token_type_ids": torch.zeros(1, n, dtype=torch.long)}


def test_minilm_layer_cost_matches_the_analytic_formula() -> None:
    cost = CostModel(_model("minilm"))
    for n in (1, 37, 128):  # METHODS.md §0.3: 2n(4d² + 2d·d_ff) + 4n²d = 3,538,944·n + 1,536·n²
        assert cost.layer_flops(0, n) == 3_538_944 * n + 1_536 * n * n
    assert cost.layer_flops(0, 128) == pytest.approx(478.2e6, rel=1e-3)


def test_minilm_full_model_flops_at_128_tokens_include_attention() -> None:
    model = _model("minilm")
    cost = CostModel(model)
    with torch.no_grad():
        trace = model(_batch(128)).trace
        with model.backbone.eager_attention():
            counted = count_flops(lambda: model(_batch(128)))
        sdpa = count_flops(lambda: model(_batch(128)))
    assert cost.flops(trace).item() == counted
    assert counted - sdpa == 4 * 128 * 128 * 384 * 6  # SDPA on CPU counts attention as 0: the pitfall
    assert counted == pytest.approx(2.869e9, rel=1e-3)


@pytest.mark.parametrize("method, knob", [("full", None), ("truncate", 1), ("truncate", 2)])
@pytest.mark.parametrize("n", [5, 23, 64])
def test_trace_flops_equal_flop_counter_around_the_real_forward(method: str, knob, n: int) -> None:
    model = _model("tiny", method, knob)
    cost = CostModel(model)
    with torch.no_grad(), model.backbone.eager_attention():
        out = model(_batch(n, seed=n))
        counted = count_flops(lambda: model(_batch(n, seed=n)))
    assert out.trace.layers_run.item() == model.backbone.num_layers
    assert cost.flops(out.trace).item() == pytest.approx(counted, rel=0.01)


def test_layer_cost_grows_quadratically() -> None:
    cost = CostModel(_model("tiny"))
    f = [cost.layer_flops(0, n) for n in (10, 20, 40)]
    second_differences = (f[2] - f[1]) / 20 - (f[1] - f[0]) / 10
    assert second_differences > 0  # the n² term is there
    assert cost.layer_flops(0, 0) == 0.0


def _varied(name: str):
    """The method, a 4-layer model of it whose examples of lengths 3, 7 and 12 leave at different layers or
    keep different counts of tokens, and the knob values its ``infer`` takes."""
    cfg = make_config(f"method={name}", "model=tiny", "model.random.num_hidden_layers=4")
    method = get_method(name)(cfg.method, cfg.task)
    torch.manual_seed(0)
    model = method.build(load_backbone(cfg.model, 0), None).eval()
    if name == "token_gates":
        with torch.no_grad():
            for row, first_closed in enumerate((5, 3, 2)):
                model.gates[row, first_closed:] = 0.0
        return method, model, [None]
    spread_exit_heads(model, random_batch([3, 7, 12]), cfg.task.num_labels)
    return method, model, method.knob_values(4)


def _alone(batch: dict[str, torch.Tensor], i: int, n: int) -> dict[str, torch.Tensor]:
    """Row ``i`` of ``batch`` as a batch of its own, cut to its ``n`` tokens."""
    return {k: v[i : i + 1, :n] if v.dim() == 2 else v[i : i + 1] for k, v in batch.items()}


@pytest.mark.parametrize("name", ["deebert", "fastbert", "token_gates"])  # FastBERT's students cost more with n
def test_a_mixed_length_batch_charges_each_example_what_it_costs_alone(name: str) -> None:
    """Lengths 3, 7 and 12 right-padded into one batch, one adaptive forward: each example's FLOPs are those of
    its own forward at batch 1, for every knob value (padding is never charged; rows and tokens that leave
    are charged to their own example only)."""
    method, model, knobs = _varied(name)
    lengths = [3, 7, 12]
    batch, cost, traces = random_batch(lengths), CostModel(model), []
    with torch.no_grad():
        for knob in knobs:
            out = method.infer(model, batch, knob)
            alone = [cost.flops(method.infer(model, _alone(batch, i, n), knob).trace).item() for i, n in enumerate(lengths)]
            assert cost.flops(out.trace).tolist() == alone, knob
            traces.append(out.trace)
    if name == "token_gates":
        assert traces[0].layer_tokens.tolist() == [[3, 3, 3, 2], [7, 5, 3, 2], [12, 5, 3, 2]]
    else:
        assert any(len(set(t.exit_layer.tolist())) > 1 for t in traces)  # the examples left at different layers
