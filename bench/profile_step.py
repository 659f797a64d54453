"""Where the time of a cipo-fast DPO training step goes, on this CPU (torch.profiler, one fresh process).

Question: of the wall time of a training step (SmolLM2-135M, R-TOFU pairs, cipo-fast defaults), how much
is matrix multiplication of the decoder layers, how much the fused LM-head log-prob op, attention,
elementwise work (norms, activations, RoPE, residuals; recomputed ones included), the layers' matmuls
recomputed under activation checkpointing, copies and the optimizer -- and what rate do the layers' matmuls reach inside training, against the same machine's
GEMM rate at the same shapes measured alone?

Method: `cipo-fast train --method dpo` runs under `torch.profiler` (CPU activities, shapes recorded). The
trainer marks each optimizer step with `record_function("cipo_fast.train_step")`; only ops inside those
ranges are counted, the first step (warm-up) dropped. Each op's *self* time goes to the first category
that matches on the way up its call stack: `_TokenLogprobs` or `_FusedGroupLoss` (the fused LM head, forward or backward; the loss inside it) >
the optimizer > by op name (mm/addmm/bmm: GEMM -- "recompute" when it is a forward-style `aten::linear`
called inside a backward node, which is what non-reentrant checkpointing does; scaled_dot_product:
attention; copy/cat/index/...: data movement; everything else: elementwise). Profiling adds overhead; the shares matter more than the sum.

    python bench/profile_step.py                 # SmolLM2-135M, 6 R-TOFU pairs, batch 2, 3 steps
    python bench/profile_step.py --checkpoint-every 0
    python bench/profile_step.py --length 4096 --batch 1 --steps 2 --out bench/out/profile-4k --marker bench-profile-long
    python bench/profile_step.py --cpu-autocast bf16 --out bench/out/profile-bf16 --marker bench-profile-bf16

The JSON also lists the ops with the most self time in each category (`top_ops`). With `--cpu-autocast
bf16` the isolated GEMM rate it compares against is measured in bf16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import OUT, ModelShape, cipo_dpo_config, gemm_rate, machine, publish, resolve_model
from rtofu_pairs import rtofu_pairs

GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm")
MOVE_OPS = (
    "aten::copy_",
    "aten::cat",
    "aten::index",
    "aten::index_select",
    "aten::index_add_",
    "aten::index_copy_",
    "aten::embedding",
    "aten::embedding_dense_backward",
    "aten::clone",
    "aten::contiguous",
    "aten::to",
    "aten::_to_copy",
    "aten::zero_",
    "aten::fill_",
    "aten::empty",
    "aten::empty_strided",
    "aten::scatter_add_",
    "aten::gather",
)
TOP_OPS = 10  # ops listed per category in the JSON
CATEGORIES = (
    "layer GEMMs",
    "layer GEMMs (recompute)",
    "attention",
    "elementwise / norms",
    "data movement",
    "fused LM head (log-probs)",
    "optimizer + clipping",
)


def gemm_flops(name: str, shapes: list) -> int:
    """FLOPs of one mm / addmm / bmm call from its recorded input shapes (0 if they are missing)."""
    try:
        if name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            return 2 * m * k * n
        if name == "aten::addmm":
            (m, k), (_, n) = shapes[1], shapes[2]
            return 2 * m * k * n
        if name == "aten::bmm":
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return 2 * b * m * k * n
    except (IndexError, TypeError, ValueError):
        pass
    return 0


def categorize(event) -> str | None:
    """The category of an op event by its call stack; None outside a train step."""
    in_step, backward, linear, lm_head, optimizer = False, False, False, False, False
    parent = event.cpu_parent
    while parent is not None:
        n = parent.name
        if n == "cipo_fast.train_step":
            in_step = True
        elif "_TokenLogprobs" in n or "_FusedGroupLoss" in n:
            lm_head = True
        elif n.startswith("Optimizer.") or "clip_grad" in n or "_foreach_norm" in n:
            optimizer = True
        elif n.startswith("autograd::engine::evaluate_function"):
            backward = True
        elif n in ("aten::linear", "aten::matmul"):
            linear = True
        parent = parent.cpu_parent
    # a forward-style linear called while the backward runs is activation-checkpoint recomputation
    # (backward nodes call aten::mm directly)
    recompute = backward and linear
    if not in_step:
        return None
    if lm_head:
        return "fused LM head (log-probs)"
    if optimizer or event.name.startswith(("aten::_fused_adamw", "aten::_foreach")):
        return "optimizer + clipping"
    if event.name in GEMM_OPS:
        return "layer GEMMs (recompute)" if recompute else "layer GEMMs"
    if "scaled_dot_product" in event.name or "flash_attention" in event.name:
        return "attention"
    if event.name in MOVE_OPS:
        return "data movement"
    return "elementwise / norms"


def profile(a: argparse.Namespace) -> dict:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from cipo_fast.trainers.preference import main as train

    work = Path(tempfile.mkdtemp(prefix="cipo-profile-"))
    model_path = resolve_model(a.model, work)
    data = work / "pairs.jsonl"
    if a.length:  # one long synthetic pair (bench/memory_scaling.py's), a step each
        from memory_scaling import synthetic_pair
        from transformers import AutoTokenizer

        pairs = [synthetic_pair(AutoTokenizer.from_pretrained(model_path), a.length)]
    else:
        pairs = rtofu_pairs(a.pairs)
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    over = {} if a.checkpoint_every is None else {"checkpoint_every": a.checkpoint_every}
    if a.length:
        over["max_length"] = a.length + 64  # nothing cut: the prompt is 10 tokens
    if a.cpu_autocast:
        over["cpu_autocast"] = a.cpu_autocast
    if a.checkpoint_attention:
        over["checkpoint_attention"] = a.checkpoint_attention
    job = dict(batch_size=a.batch, max_steps=a.steps, epochs=10, lr=1e-6)
    cfg = cipo_dpo_config(model_path, data, work, **job, **over)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        train(cfg)
    steps = sorted(
        (e for e in prof.events() if e.name == "cipo_fast.train_step"), key=lambda e: e.time_range.start
    )
    warm_end = steps[0].time_range.end if len(steps) > 1 else None
    counted = steps[1:] or steps
    wall_us = sum(e.time_range.elapsed_us() for e in counted)
    per_cat = dict.fromkeys(CATEGORIES, 0.0)
    per_op = {k: {} for k in CATEGORIES}  # category -> op name -> [self us, calls]
    gemm_us, gemm_flop = 0.0, 0
    for e in prof.events():
        if e.name == "cipo_fast.train_step" or (warm_end is not None and e.time_range.start < warm_end):
            continue
        cat = categorize(e)
        if cat is None:
            continue
        per_cat[cat] += e.self_cpu_time_total
        op = per_op[cat].setdefault(e.name, [0.0, 0])
        op[0] += e.self_cpu_time_total
        op[1] += 1
        if cat == "layer GEMMs":
            gemm_us += e.self_cpu_time_total
            gemm_flop += gemm_flops(e.name, e.input_shapes)
    metrics = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    tokens = [m["tokens"] for m in metrics if "loss" in m][1:] or [metrics[0]["tokens"]]
    shape = ModelShape.from_dir(model_path)
    m = min(int(statistics.median(tokens)), cfg.token_budget)
    isolated = gemm_rate(shape, m, dtype="bfloat16" if cfg.cpu_autocast == "bf16" else "float32")
    keys = (
        "batch_size",
        "token_budget",
        "checkpoint_every",
        "checkpoint_attention",
        "backend",
        "cpu_autocast",
    )
    n = len(counted)
    top_ops = {  # the ops with the most self time in each category, per step
        cat: [
            {"op": name, "s_per_step": us / 1e6 / n, "calls_per_step": calls / n}
            for name, (us, calls) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:TOP_OPS]
        ]
        for cat, ops in per_op.items()
    }
    return {
        "config": {k: getattr(cfg, k) for k in keys},
        "steps_counted": len(counted),
        "step_wall_s": wall_us / 1e6 / len(counted),
        "tokens_per_step": statistics.mean(tokens),
        "categories_s_per_step": {k: v / 1e6 / len(counted) for k, v in per_cat.items()},
        "top_ops": top_ops,
        "layer_gemm_gflop_per_s_in_training": gemm_flop / gemm_us / 1e3 if gemm_us else None,
        "isolated_gemm": {k: v for k, v in isolated.items() if k != "shapes"},
        "threads": torch.get_num_threads(),
    }


def table(r: dict, length: int = 0) -> str:
    c = r["config"]
    data = f"one synthetic pair of {length} tokens per side" if length else "R-TOFU pairs"
    wall = r["step_wall_s"]
    bf16 = ", bf16 autocast" if c.get("cpu_autocast") == "bf16" else ""
    if c.get("checkpoint_every") and c.get("checkpoint_attention") == "recompute":
        bf16 += ", attention recomputed"
    lines = [
        f"Where a cipo-fast DPO step goes (`bench/profile_step.py`, torch.profiler, SmolLM2-135M, {data}, "
        f"batch {c['batch_size']}, token budget {c['token_budget']}, checkpointing every "
        f"{c['checkpoint_every']} layer(s){bf16}; {r['tokens_per_step']:.0f} tokens/step, {wall:.2f} s/step under "
        f"the profiler, mean of {r['steps_counted']} steps after the first). Self time of the ops inside the step:",
        "",
        "| category | s/step | share of step |",
        "|---|---:|---:|",
    ]
    for k, v in r["categories_s_per_step"].items():
        lines.append(f"| {k} | {v:.3f} | {100 * v / wall:.0f}% |")
    rest = wall - sum(r["categories_s_per_step"].values())
    lines.append(f"| Python / framework overhead (not in an op) | {rest:.3f} | {100 * rest / wall:.0f}% |")
    if r["layer_gemm_gflop_per_s_in_training"]:
        iso = r["isolated_gemm"]
        lines += [
            "",
            f"The layers' matmuls run at {r['layer_gemm_gflop_per_s_in_training']:.0f} GFLOP/s inside training "
            f"vs {iso['flop_weighted_median_gflop_per_s']:.0f} GFLOP/s alone at the same shapes "
            f"in {'bf16' if iso.get('dtype') == 'bfloat16' else 'fp32'} "
            f"(M = {iso['m_tokens']} tokens).",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | an HF model directory")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=None, help="default: cipo-fast's default")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    ap.add_argument("--length", type=int, default=0, help="one synthetic pair of L tokens per side instead")
    ap.add_argument("--marker", default="bench-profile", help="the README table to regenerate")
    ap.add_argument("--cpu-autocast", choices=("bf16", "off"), default=None, help="default: cipo-fast's")
    ap.add_argument(
        "--checkpoint-attention", choices=("keep", "recompute"), default=None, help="default: cipo-fast's"
    )
    a = ap.parse_args(argv)
    facts = machine()
    r = profile(a)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "profile_step.json").write_text(json.dumps({"machine": facts, **r}, indent=2))
    publish(a.marker, table(r, a.length), a.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
