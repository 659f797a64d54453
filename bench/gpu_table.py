"""The README table of `make gpu-check` (`bench/gpu_check.py`), rendered from `bench/out/gpu.json`.

python bench/gpu_table.py [bench/out/gpu.json]        # print it
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OP_BACKENDS = ("textbook", "triton", "chunked", "fused", "liger", "cce")


def _ms(row: dict | None) -> str:
    if row is None:
        return "–"
    if "median_s" not in row:
        return row.get("status", "failed")
    rate = f", {row['tflops']:.3g} TFLOP/s" if row.get("tflops") is not None else ""
    peak = f" ({100 * row['of_peak']:.0f} %)" if row.get("of_peak") is not None else ""
    mem = f", {row['extra_gb']:.2f} GB" if row.get("extra_gb") is not None else ""
    return f"{1e3 * row['median_s']:.1f} ms{rate}{peak}{mem}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def environment_lines(report: dict) -> list[str]:
    env = report.get("environment", {})
    gpu = env.get("gpu", "no GPU")
    cap = (
        f" (sm_{env['capability'].replace('.', '')}, {env.get('sms')} SMs, {env.get('memory_gib')} GiB)"
        if env.get("capability")
        else ""
    )
    peers = ", ".join(f"{k} {v}" for k, v in env.get("peers", {}).items())
    kernels = report.get("kernels") or {}
    lines = [
        f"`make gpu-check` on {gpu}{cap}, {env.get('date', '?')}: torch {env.get('torch')}, Triton "
        f"{env.get('triton')}, transformers {env.get('transformers')}; peers: {peers or 'none'}. "
        f"Whole check {report.get('wall_s', 0):.0f} s.",
        "",
        (
            "Kernel tests compiled on the GPU (fp32, fp16, bf16): "
            if env.get("gpu")
            else "Kernel tests (Triton's interpreter, no GPU): "
        )
        + kernels.get("summary", "not run")
        + (f" ({kernels['wall_s']:.0f} s)." if "wall_s" in kernels else "."),
    ]
    if report.get("failures"):
        lines += ["", "**Failed:** " + "; ".join(report["failures"])]
    return lines


def op_table(ops: dict) -> list[str]:
    rows = {(p["n"], p["backend"]): p for p in ops.get("points", [])}
    sizes = sorted({n for n, _ in rows})
    backends = [b for b in OP_BACKENDS if any(b == k for _, k in rows)]
    lines = [
        f"Fused LM-head log-prob op + DPO loss, forward + backward, {ops.get('dtype')} (d = {ops.get('d')}, "
        f"V = {ops.get('v')}): median time, TFLOP/s of the 6 N d V FLOPs (share of the "
        f"{ops.get('peak_bf16_tflops') or '?'} TFLOP/s bf16 peak), GPU memory beyond the inputs; last "
        "column: textbook time / Triton time.",
        "",
        "| N | " + " | ".join(backends) + " | textbook / triton |",
        "|---" * (len(backends) + 2) + "|",
    ]
    for n in sizes:
        cells = [_ms(rows.get((n, b))) for b in backends]
        t, k = rows.get((n, "textbook"), {}), rows.get((n, "triton"), {})
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {_ratio(t.get('median_s'), k.get('median_s'))} |")
    absent = ops.get("absent") or {}
    if absent:
        lines += ["", "Not run: " + "; ".join(f"{b} ({why})" for b, why in absent.items()) + "."]
    return lines


def step_table(steps: dict) -> list[str]:
    rows = {(p["model"], p["length"], p["system"]): p for p in steps.get("points", [])}
    keys = sorted({(m, n) for m, n, _ in rows}, key=lambda k: (k[0], k[1]))
    lines = [
        "One DPO step (one pair, fp32 master weights, bf16 autocast, checkpointing), cipo-fast vs the textbook "
        "step TRL's DPOTrainer runs by default (reference model forward every step, full logits); "
        "`loss in the op`: cipo-fast with `--backend chunked` (`ops.fused_loss`, 3 GEMMs):",
        "",
        "| model | tokens / side | cipo-fast | textbook | time ratio | cipo-fast GB | textbook GB | memory ratio "
        "| cipo-fast model TFLOP/s | loss in the op | its time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, length in keys:
        c, t = rows.get((model, length, "cipo-fast"), {}), rows.get((model, length, "textbook"), {})
        f = rows.get((model, length, "cipo-fast-fused"), {})

        def sec(r):
            return f"{r['median_s']:.3f} s" if "median_s" in r else r.get("status", "–")

        def gb(r):
            return f"{r['peak_gb']:.1f}" if r.get("peak_gb") is not None else "–"

        rate = f"{c['model_tflops']:.3g}" if c.get("model_tflops") is not None else "–"
        lines.append(
            f"| {model} | {length} | {sec(c)} | {sec(t)} | {_ratio(c.get('median_s'), t.get('median_s'))} "
            f"| {gb(c)} | {gb(t)} | {_ratio(c.get('peak_gb'), t.get('peak_gb'))} | {rate} "
            f"| {sec(f)} | {_ratio(f.get('median_s'), t.get('median_s'))} |"
        )
    return lines


def table(report: dict) -> str:
    lines = environment_lines(report)
    if report.get("ops", {}).get("points"):
        lines += ["", *op_table(report["ops"])]
    if report.get("steps", {}).get("points"):
        lines += ["", *step_table(report["steps"])]
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "out" / "gpu.json"
    print(table(json.loads(path.read_text())))
