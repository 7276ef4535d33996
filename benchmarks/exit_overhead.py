"""The per-example cost of an adaptive method's bookkeeping at batch 1 (heads, exit rule, moving rows and the
trace), measured with every transformer layer replaced by the identity, beside the full model's (embedding,
trace and head). Wall-clock speed-ups at batch 1 fall short of FLOPs speed-ups by about this cost over a
layer's time.

    python benchmarks/exit_overhead.py --methods pabee deebert fastbert dact --length 50
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dynbench.backbone import load_backbone
from dynbench.cli import load_config
from dynbench.method import get_method

KNOB = {"pabee": 5, "deebert": 0.0, "fastbert": 0.0, "dact": 0.0, "full": None}  # late or no exits (layers printed)


def per_example_ms(method_name: str, length: int, repeats: int, calls: int) -> tuple[float, int]:
    """Median milliseconds per call, and the layers the example went through (random heads may exit early)."""
    cfg = load_config(f"method={method_name}", "task=mrpc", "model=minilm")
    method = get_method(method_name)(cfg.method, cfg.task)
    model = method.build(load_backbone(cfg.model, 0), 0.0 if method.knob and method.knob.at == "train" else None)
    model.eval().backbone.layer = lambda i, h, mask: h  # the layers cost nothing: what is left is bookkeeping
    ids = torch.randint(1000, 20000, (1, length), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    times = []
    with torch.no_grad():
        for _ in range(calls):  # warm-up
            out = method.infer(model, batch, KNOB[method_name])
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                method.infer(model, batch, KNOB[method_name])
            times.append((time.perf_counter() - start) / calls)
    return 1000 * statistics.median(times), int(out.trace.layers_run[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["pabee", "deebert", "fastbert", "dact"])
    ap.add_argument("--length", type=int, default=50, help="tokens per example (MRPC dev: 53 on average)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in ["full", *args.methods]:
        ms, layers = per_example_ms(name, args.length, args.repeats, args.calls)
        print(f"{name:10s} {ms:6.2f} ms per example ({layers} layers)", flush=True)


if __name__ == "__main__":
    main()
