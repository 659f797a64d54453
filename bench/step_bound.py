"""How fast can one long DPO step be, on this CPU, for cipo-fast and for TRL's default step? A bound from
pass counts and measured kernel rates, beside the measured step times of `bench/memory_scaling.py`.

Question: issue 15 asks for cipo-fast <= 0.75x TRL's step time at every length from 2k tokens per side.
At long sequences both trainers spend their time in the same kernels (the layers' GEMMs, the CPU flash
attention, the LM head), so the ratio is bounded by how many passes of each kernel a step runs:

    pass counts per sequence       layer GEMMs (fwd units)   attention           LM-head GEMMs
    cipo-fast (checkpointing,      fwd + recompute + bwd     fwd + bwd           logits + dH + dW
      attention outputs kept)      = 1 + 1 + 2 = 4                               (the loss inside: 3)
    cipo-fast-recompute            4                         2 fwd + bwd         3
    cipo-fast-no-ckpt              1 + 2 = 3                 fwd + bwd           3
    TRL default (gradient          policy fwd + recompute    3 fwd + bwd         policy logits + dH + dW
      checkpointing, reference     + bwd + reference fwd                         + reference logits = 4
      model every step)            = 5

(a backward of a linear layer is 2 forward units: dgrad + wgrad). Times: the layers' GEMMs at this CPU's
measured fp32 rate at the model's matmul shapes with M = the sequence's tokens (`common.gemm_rate`, the
FLOP-weighted median), the LM head at its own measured rate, attention as measured (SDPA forward, and
forward + backward, with the model's heads at that length; causal). The bound is the sum -- what a step
would take if nothing else (norms, activations, residual adds, casts, the optimizer, Python) cost
anything; elementwise work and the optimizer are the same for both trainers up to the recomputation.
cipo-fast's reference log-probs are computed once before training (not per step) and are not counted,
nor is TRL's padding (none here: both sides have the same length).

    python bench/step_bound.py --lengths 2048,4096 --measured docs/results/epyc-2026-12-03/memory_scaling_attention.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import OUT, ModelShape, emit, gemm_rate, machine, publish, resolve_model, weighted_median

PROMPT = 10  # memory_scaling's prompt tokens, per side
PASSES = {  # (layer GEMM forward units, attention forwards, attention backwards, LM-head GEMMs)
    "cipo-fast": (4, 1, 1, 3),
    "cipo-fast-recompute": (4, 2, 1, 3),
    "cipo-fast-no-ckpt": (3, 1, 1, 3),
    "trl-default": (5, 3, 1, 4),
}


def attention_times(shape: ModelShape, t: int, repeats: int) -> tuple[float, float]:
    """(forward, forward + backward) seconds of one layer's causal SDPA over one sequence of t tokens."""
    import torch
    import torch.nn.functional as F

    hd = shape.head_dim
    q = torch.randn(1, shape.heads, t, hd, requires_grad=True)
    k = torch.randn(1, shape.kv_heads, t, hd, requires_grad=True)
    v = torch.randn(1, shape.kv_heads, t, hd, requires_grad=True)
    gqa = shape.heads != shape.kv_heads
    fwd, both = [], []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        fwd.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        out.backward(torch.ones_like(out))
        both.append(time.perf_counter() - start)
        q.grad = k.grad = v.grad = None
    return statistics.median(fwd[1:]), statistics.median(both[1:])


def head_rate(shape: ModelShape, t: int, repeats: int) -> float:
    """GFLOP/s of the LM head's logits GEMM [t, d] x [d, V] (the op's other two GEMMs have the same FLOPs)."""
    import torch

    h, w = torch.randn(t, shape.d), torch.randn(shape.vocab, shape.d)
    out = torch.empty(t, shape.vocab)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(h, w.T, out=out)
        times.append(time.perf_counter() - start)
    return 2 * t * shape.d * shape.vocab / statistics.median(times[1:]) / 1e9


def bound(shape: ModelShape, length: int, repeats: int) -> dict:
    t = PROMPT + length
    rows = [r for r in gemm_rate(shape, t, repeats)["shapes"] if not r["op"].startswith("lm_head")]
    layer_rate = weighted_median([r["gflop_per_s"] for r in rows], [r["weight"] for r in rows])
    head = head_rate(shape, t, repeats)
    attn_fwd, attn_both = attention_times(shape, t, repeats)
    layer_flop = sum(2 * k * n * c for name, k, n, c in shape.linears() if name != "lm_head") * t  # 1 fwd
    head_flop = 2 * t * shape.d * shape.vocab
    per_unit = {
        "layer_gemm_s": layer_flop / (layer_rate * 1e9),
        "attention_fwd_s": attn_fwd * shape.layers,
        "attention_bwd_s": (attn_both - attn_fwd) * shape.layers,
        "head_gemm_s": head_flop / (head * 1e9),
    }
    systems = {}
    for name, (units, fwds, bwds, heads) in PASSES.items():
        parts = {
            "layer_gemms": units * per_unit["layer_gemm_s"],
            "attention": fwds * per_unit["attention_fwd_s"] + bwds * per_unit["attention_bwd_s"],
            "head": heads * per_unit["head_gemm_s"],
        }
        systems[name] = {"parts_s": {k: 2 * v for k, v in parts.items()}, "bound_s": 2 * sum(parts.values())}
    return {
        "length": length,
        "tokens_per_sequence": t,
        "layer_gemm_gflops": layer_rate,
        "head_gemm_gflops": head,
        "attention_fwd_s_per_layer": attn_fwd,
        "attention_fwd_bwd_s_per_layer": attn_both,
        "per_sequence_units_s": per_unit,
        "systems": systems,
    }


def measured_steps(path: Path | None) -> dict[tuple[str, int], float]:
    if path is None:
        return {}
    out = {}
    for row in json.loads(path.read_text())["rows"]:
        for system in PASSES:
            step = (row.get(system) or {}).get("step_time_s")
            if step is not None:
                out[(system, int(row["length"]))] = step
    return out


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if not x else f"{x:.{digits}f}"


def table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Step bound (`python bench/step_bound.py`), {m.get('cpu', '?')}, {m.get('cores', '?')} cores: pass "
        "counts x measured kernel rates (module docstring); `measured`: one step of `bench/memory_scaling.py`"
        + (f" ({result['measured_from']})" if result.get("measured_from") else "")
        + ".",
        "",
        "| tokens / side | system | layer GEMMs s | attention s | LM head s | bound s | measured s "
        "| measured ÷ bound | bound ÷ TRL's bound | measured ÷ TRL's measured |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in result["points"]:
        trl = point["systems"]["trl-default"]
        for name, s in point["systems"].items():
            p = s["parts_s"]
            meas, trl_meas, b = s.get("measured_s"), trl.get("measured_s"), s["bound_s"]
            lines.append(
                f"| {point['length']} | {name} | {p['layer_gemms']:.1f} | {p['attention']:.1f} | {p['head']:.1f} "
                f"| {b:.1f} | {_num(meas, 1)} | {_num(meas and meas / b)} | {b / trl['bound_s']:.2f} "
                f"| {_num(meas and trl_meas and meas / trl_meas)} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[2048, 4096, 8192])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--measured", type=Path, help="a bench/memory_scaling.py JSON whose step times to show")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--no-readme", action="store_true")
    a = p.parse_args(argv)
    shape = ModelShape.from_dir(resolve_model(a.model, a.out / "models"))
    measured = measured_steps(a.measured)
    result = {"machine": machine(), "model": a.model, "prompt": PROMPT, "points": []}
    if a.measured:
        result["measured_from"] = str(a.measured)
    for length in a.lengths:
        point = bound(shape, length, a.repeats)
        for name, s in point["systems"].items():
            s["measured_s"] = measured.get((name, length))
        result["points"].append(point)
        print(f"[step_bound] L={length}: " + ", ".join(
            f"{k} {v['bound_s']:.1f} s" for k, v in point["systems"].items()), flush=True)  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "step_bound.json").write_text(json.dumps(result, indent=1))
    publish("bench-step-bound", table(result), not a.no_readme)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
