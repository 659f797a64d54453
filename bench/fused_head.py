"""Kernel micro-benchmark: the fused LM-head log-prob op + DPO loss, forward + backward, on this CPU.

Question: at SmolLM2 shapes (d = 576, V = 49152), how much time and memory does the loss path cost with
cipo-fast's loss inside the op (`fused`: `cipo_fast.ops.fused_loss`, 3 GEMMs, what the trainer runs on
CPU), its two-pass `chunked` op with the loss outside (4 GEMMs), the textbook `reference` (full fp32
logits), and Liger's `LigerFusedLinearDPOLoss` (chunked PyTorch, torch.compile)?

Each point runs in a fresh process (so peak RSS is that point's own): it builds hidden states for N tokens
as DPO pairs of 512-token sequences (all tokens are completion tokens), runs warm-up calls (Liger's first
call compiles; its compile time is reported apart), then times `repeats` forward + backward calls and
reports the median. Memory is the process's peak RSS minus its RSS after the inputs were built (the op's own
peak), and the total peak RSS. Reference log-probs are given as precomputed numbers to all three (Liger runs
with `use_ref_model=False` and the same result, so no side computes a reference forward).

    python bench/fused_head.py                  # N in 1k, 4k, 16k; writes bench/out/kernels.json + README table
    python bench/fused_head.py --point chunked 4096   # one point (what the driver runs in a subprocess)

On a CPU with bf16 units (`cipo_fast.train.precision.cpu_bf16_units`) it also runs `fused-bf16` and
`liger-bf16`: the same job on bf16 hidden states and head weight, as `--cpu-autocast bf16` hands them to
the head (cipo-fast: logits GEMM in fp32, dH / dW GEMMs in bf16; Liger: its own ops in bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from common import OUT, machine, publish

D, V, SEQ = 576, 49152, 512
BACKENDS = ("fused", "chunked", "reference", "liger")
# bf16 inputs (hidden states and head weight as under `--cpu-autocast bf16`), for CPUs with bf16 units:
# cipo-fast's fused op with its dH / dW GEMMs in bf16 (logits GEMM fp32), Liger's loss on the same inputs
BF16_BACKENDS = ("fused-bf16", "liger-bf16")


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def point(backend: str, n: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    pairs = n // (2 * SEQ)
    dtype = torch.bfloat16 if backend.endswith("-bf16") else torch.float32
    backend = backend.removesuffix("-bf16")
    hidden = (torch.randn(n, D) * 0.5).to(dtype).requires_grad_()
    weight = (torch.randn(V, D) * 0.05).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (n,))
    seq_ids = torch.arange(n) // SEQ  # sequence s = tokens [s*SEQ, (s+1)*SEQ); pair p = (2p, 2p+1)
    mask = torch.ones(n, dtype=torch.bool)
    ref = torch.randn(2 * pairs) - 300.0
    beta = 0.1

    if backend == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

        loss_fn = LigerFusedLinearDPOLoss(beta=beta, use_ref_model=False)
        # Liger's layout: [2B, T, d], chosen rows first; no shift (we pass already-aligned targets)
        h3 = hidden.view(2 * pairs, SEQ, D)
        order = torch.cat([torch.arange(0, 2 * pairs, 2), torch.arange(1, 2 * pairs, 2)])
        t2 = targets.view(2 * pairs, SEQ)[order]

        def step():
            loss, _ = loss_fn(weight, h3[order], t2)
            return loss
    elif backend == "fused":
        from cipo_fast.ops.fused_loss import fused_group_loss

        bounds = [(2 * p * SEQ, 2 * (p + 1) * SEQ) for p in range(pairs)]  # a pair = a group

        def loss_of(sel, s):
            c, r = 2 * sel, 2 * sel + 1
            return (-F.logsigmoid(beta * ((s[c] - ref[c]) - (s[r] - ref[r])))).sum() / pairs

        grad_dtype = torch.bfloat16 if dtype == torch.bfloat16 else None

        def step():
            return fused_group_loss(
                hidden, weight, targets, mask, seq_ids, 2 * pairs, bounds, loss_of, grad_dtype=grad_dtype
            )[0]
    else:
        from cipo_fast.ops.logprobs import sequence_logprobs

        def step():
            s = sequence_logprobs(hidden, weight, targets, seq_ids, mask, 2 * pairs, backend=backend)
            c, r = s[0::2], s[1::2]
            return -F.logsigmoid(beta * ((c - ref[0::2]) - (r - ref[1::2]))).mean()

    base_rss = rss_gb()
    t = time.perf_counter()
    step().backward()
    first = time.perf_counter() - t
    hidden.grad = weight.grad = None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step().backward()
        times.append(time.perf_counter() - t)
        hidden.grad = weight.grad = None
    return {
        "backend": backend if dtype == torch.float32 else f"{backend}-bf16",
        "n": n,
        "d": D,
        "v": V,
        "median_s": statistics.median(times),
        "times_s": times,
        "first_call_s": first,
        "op_peak_gb": peak_gb() - base_rss,
        "peak_rss_gb": peak_gb(),
        "threads": torch.get_num_threads(),
    }


def run_point(backend: str, n: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--point", backend, str(n), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"backend": backend, "n": n, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    by = {(r["backend"], r["n"]): r for r in rows}
    ns = sorted({r["n"] for r in rows})
    lines = [
        "| N tokens | backend | fwd+bwd median (s) | op peak memory (GB) | time vs reference | memory vs reference |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in ns:
        ref = by.get(("reference", n))
        for b in BACKENDS + BF16_BACKENDS:
            r = by.get((b, n))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {n} | {b} | error: {r['error']} | | | |")
                continue
            tr = f"{r['median_s'] / ref['median_s']:.2f}x" if ref and "error" not in ref else "–"
            mr = (
                f"1/{ref['op_peak_gb'] / r['op_peak_gb']:.0f}"
                if ref and "error" not in ref and b != "reference"
                else "–"
            )
            lines.append(f"| {n} | {b} | {r['median_s']:.2f} | {r['op_peak_gb']:.2f} | {tr} | {mr} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--point", nargs=2, metavar=("BACKEND", "N"))
    ap.add_argument("--sizes", default="1024,4096,16384")
    ap.add_argument(
        "--backends", default=None, help="default: all; the -bf16 ones only on a CPU with bf16 units"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    args = ap.parse_args(argv)
    if args.point:
        print(json.dumps(point(args.point[0], int(args.point[1]), args.repeats)))
        return 0
    facts = machine()  # before anything runs (it records the load average)
    if args.backends is None:
        from cipo_fast.train.precision import cpu_bf16_units

        args.backends = ",".join(BACKENDS + (BF16_BACKENDS if cpu_bf16_units() else ()))
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        for b in args.backends.split(","):
            r = run_point(b, n, args.repeats)
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "times_s"}), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kernels.json").write_text(json.dumps({"machine": facts, "rows": rows}, indent=2))
    publish("bench-kernels", table(rows), args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
