"""On paper, for GPU users: a roofline estimate of the fused log-prob kernels on an H100, and their
register / spill / shared-memory table from the GPU check. Nothing here runs on a GPU: every time below is
an ESTIMATE from FLOP and byte counts and published peak rates, not a measurement.

Question: for the LM-head log-prob op at a given (tokens N, hidden d, vocabulary V) in bf16, which resource
bounds each kernel -- tensor-core FLOPs, HBM bytes, L2 traffic (tile re-loads and fp32 atomics) or the
exponential unit -- and what is the best time it could reach?

Counts, per kernel, for the tile sizes the launcher picks on sm_90 (`pick_config`):

* forward: logits recomputed tile by tile, 2 N V d FLOPs; N V exponentials; every program re-loads its
  [BLOCK_N, d] hidden block per vocabulary tile and the [BLOCK_V, d] weight tile per token block (L2 -> SM
  bytes); HBM sees each input once when concurrently running programs share weight tiles in L2 (they sweep
  the vocabulary in the same order), plus the [N] outputs;
* backward (dH and dW, no tile filtering): recompute 2 N V d, dH = dZ W 2 N V d, dW = dZ^T H 2 N V d;
  N V exponentials; H and W tiles loaded twice per tile; fp32 atomic adds into dH (N d per vocabulary
  tile) and dW (V d per token tile), counted as 4 bytes of L2 traffic each. With CCE-style filtering
  (bf16/fp16), tiles whose softmax is below output precision skip the two gradient matmuls and their
  atomics; the saving depends on how peaked the model's distribution is, so it is not counted here.

Bound = max(compute, HBM, L2, exp) time; the sum would be the pessimistic no-overlap time.

    python bench/roofline.py                 # estimates + GPU-check table (compiles, ~1-2 min on 2 cores)
    python bench/roofline.py --no-compile    # estimates only
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from common import OUT, machine, publish

# NVIDIA H100 SXM5 datasheet (dense, no sparsity), plus two figures NVIDIA does not publish: the L2
# bandwidth (microbenchmarks report ~5.5 TB/s) and the exp rate (16 MUFU ex2 per clock per SM).
H100 = {
    "name": "H100 SXM5",
    "sms": 132,
    "clock_hz": 1.83e9,
    "bf16_flops": 989.4e12,
    "tf32_flops": 494.7e12,
    "hbm_bytes_s": 3.35e12,
    "l2_bytes_s": 5.5e12,  # assumed (not in the datasheet)
    "exp_per_s": 132 * 16 * 1.83e9,  # assumed MUFU ex2 throughput
}
SHAPES = {  # name -> (d, V)
    "SmolLM2-135M": (576, 49152),
    "Qwen2.5-7B / R1-Distill-7B": (3584, 152064),
    "Llama-3.1-8B": (4096, 128256),
}
TOKENS = (16384,)


def kernel_counts(kernel: str, n: int, d: int, v: int, elem: int = 2) -> dict:
    """FLOPs, exponentials, compulsory HBM bytes and L2->SM bytes of one kernel launch (bf16 inputs)."""
    import torch

    from cipo_fast.csrc_triton import logprobs as lk

    cfg = lk.pick_config(kernel, d, torch.bfloat16, (9, 0))
    tok_blocks, voc_blocks = math.ceil(n / cfg.BLOCK_N), math.ceil(v / cfg.BLOCK_V)
    h_bytes, w_bytes = n * d * elem, v * d * elem
    if kernel == "forward":
        flops = 2 * n * v * d
        hbm = h_bytes + w_bytes + n * (4 + 4 + 8)  # H, W, targets (int64), logp + lse outputs (fp32)
        l2 = h_bytes * voc_blocks + w_bytes * tok_blocks
    else:
        flops = 3 * 2 * n * v * d
        # inputs once; dH and dW fp32 buffers zeroed, accumulated in L2, written back once
        hbm = h_bytes + w_bytes + 2 * 4 * (n * d + v * d)
        tile_loads = 2 * (h_bytes * voc_blocks + w_bytes * tok_blocks)
        atomics = 4 * (n * d * voc_blocks + v * d * tok_blocks)
        l2 = tile_loads + atomics
    return {
        "config": f"N{cfg.BLOCK_N} V{cfg.BLOCK_V} D{cfg.BLOCK_D} w{cfg.num_warps} s{cfg.num_stages}",
        "flops": flops,
        "exps": n * v,
        "hbm_bytes": hbm,
        "l2_bytes": l2,
    }


def estimate(counts: dict, gpu: dict = H100) -> dict:
    t = {
        "compute_ms": counts["flops"] / gpu["bf16_flops"] * 1e3,
        "hbm_ms": counts["hbm_bytes"] / gpu["hbm_bytes_s"] * 1e3,
        "l2_ms": counts["l2_bytes"] / gpu["l2_bytes_s"] * 1e3,
        "exp_ms": counts["exps"] / gpu["exp_per_s"] * 1e3,
    }
    bound = max(t, key=t.get)
    return t | {
        "bound": bound.removesuffix("_ms"),
        "time_ms": t[bound],
        "intensity_hbm": counts["flops"] / counts["hbm_bytes"],
        "intensity_l2": counts["flops"] / counts["l2_bytes"],
        "tflops_at_bound": counts["flops"] / t[bound] / 1e9,
    }


def unfused_logits_bytes(n: int, v: int) -> int:
    """Memory the textbook path holds for one forward + backward: fp32 logits and their gradient."""
    return 2 * 4 * n * v


def roofline_rows() -> list[dict]:
    rows = []
    for model, (d, v) in SHAPES.items():
        for n in TOKENS:
            for kernel in ("forward", "backward"):
                c = kernel_counts(kernel, n, d, v)
                rows.append({"model": model, "d": d, "V": v, "N": n, "kernel": kernel} | c | estimate(c))
    return rows


def roofline_table(rows: list[dict]) -> str:
    lines = [
        f"Estimated on paper for an {H100['name']} in bf16 (not measured; peak rates from the datasheet, L2 "
        f"{H100['l2_bytes_s'] / 1e12:.1f} TB/s and exp rate assumed). `bound` is the resource with the "
        "largest time; the textbook path would also hold 2 x N x V fp32 logits (last column).",
        "",
        "| model (d, V) | N | kernel | tiles | GFLOP | compute ms | HBM ms | L2 ms | exp ms | bound "
        "| est. TFLOP/s | unfused logits + grad |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        logits = f"{unfused_logits_bytes(r['N'], r['V']) / 1e9:.1f} GB" if r["kernel"] == "forward" else ""
        lines.append(
            f"| {r['model']} ({r['d']}, {r['V']}) | {r['N']} | {r['kernel']} | {r['config']} "
            f"| {r['flops'] / 1e9:.0f} | {r['compute_ms']:.2f} | {r['hbm_ms']:.3f} | {r['l2_ms']:.2f} "
            f"| {r['exp_ms']:.2f} | {r['bound']} | {r['tflops_at_bound']:.0f} | {logits} |"
        )
    return "\n".join(lines)


def check_table(rows: list[dict]) -> str:
    """One line per (kernel, config, dtype, target): the worst over the backward's flag combinations."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["config"], r["params"], r["dtype"], r["target"]), []).append(r)
    lines = [
        f"GPU check (`cipo-fast kernels --check`: compiled here with Triton's ptxas, no GPU): {len(rows)} "
        f"kernel variants, {sum(r['ok'] for r in rows)} ok. One line per config; registers and shared memory "
        "are the maximum over the backward's flag combinations (dH/dW/filter); `bench/out/roofline.json` has "
        "every variant.",
        "",
        "| kernel | config | tiles | dtype | target | variants | registers | spills | shared KiB | limit KiB |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (kernel, config, params, dtype, target), g in groups.items():
        lines.append(
            f"| {kernel} | {config} | {params} | {dtype} | {target} | {len(g)} "
            f"| {max(r['registers'] for r in g)} | {max(r['spills'] for r in g)} "
            f"| {max(r['shared_bytes'] for r in g) / 1024:.1f} | {g[0]['shared_limit'] / 1024:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the GPU-check table")
    ap.add_argument("--targets", default="sm_80,sm_90a", help="GPU-check targets")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    a = ap.parse_args(argv)

    rows = roofline_rows()
    report = {"machine": machine(), "gpu": H100, "estimates": rows}
    if a.compile:
        from cipo_fast.ops.kernel_check import check

        report["gpu_check"] = check(targets=tuple(a.targets.split(",")), jobs=a.jobs)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "roofline.json").write_text(json.dumps(report, indent=2))
    publish("bench-roofline", roofline_table(rows), a.readme)
    if a.compile:
        publish("bench-gpu-check", check_table(report["gpu_check"]), a.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
