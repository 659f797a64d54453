"""Where a decode step's time goes: cipo-fast's generation loop under the PyTorch profiler.

Question: `bench/generation.py` finds a fp32 decode step of 128 rows several times slower than its
compute limit (2 P B FLOPs at the GEMM rate at M = B). Which ops take the rest?

Method: the same batch as `bench/generation.py` (the demo's forget questions, chat prompts, left-padded,
greedy, `--new` tokens each, EOS ignored), one warm-up call, then one call under `torch.profiler`. The
model's forward is wrapped in `record_function` ranges (the first call of `decode` is the prefill, the
rest are decode steps) and so is `pick_tokens`, so every op's self time lands in one category:

    prefill                 everything under the first forward (the prompt's tokens in one pass)
    layer GEMMs             mm / addmm / bmm / linear of the decoder layers in a decode step
    LM head                 the same ops whose output width is the vocabulary
    attention               scaled_dot_product_attention and its kernels
    elementwise / norms     every other op of a decode step (RMSNorm, rotary, SiLU, residual adds, the
                            mask transformers builds each step, cache index_copy_)
    sampling                pick_tokens: argmax, and for T > 0 softmax / cumsum / searchsorted
    outside ops             the call's wall time minus all ops' self time: Python, transformers'
                            dispatch, the loop itself

    python bench/decode_profile.py              # writes bench/out/decode_profile.json and the README table
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, ModelShape, gemm_rate, machine, resolve_model, save_and_publish
from generation import padded_prompts

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")
CATEGORIES = (
    "prefill",
    "layer GEMMs",
    "LM head",
    "attention",
    "elementwise / norms",
    "sampling",
    "outside ops",
)
TOP_OPS = 8


def categorize(event, vocab: int) -> str:
    ranges, parent = set(), event.cpu_parent
    while parent is not None:
        ranges.add(parent.name)
        parent = parent.cpu_parent
    if "cipo_fast.prefill" in ranges:
        return "prefill"
    if "cipo_fast.pick_tokens" in ranges:
        return "sampling"
    if "scaled_dot_product" in event.name or "flash_attention" in event.name:
        return "attention"
    if event.name in GEMMS:
        shapes = [s for s in event.input_shapes or [] if isinstance(s, list)]
        return "LM head" if any(vocab in s for s in shapes) else "layer GEMMs"
    return "elementwise / norms"


def run(a: argparse.Namespace) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from cipo_fast.model import generation
    from cipo_fast.model.loading import ModelOptions, load_model

    work = Path(tempfile.mkdtemp(prefix="cipo-decode-prof-"))
    path = resolve_model(a.model, work)
    model, tok = load_model(str(path), ModelOptions())
    model.eval()
    ids, mask, pad = padded_prompts(tok, a.batch)
    width = ids.shape[1]

    forward, pick, calls = model.forward, generation.pick_tokens, [0]

    def marked_forward(*args, **kwargs):
        calls[0] += 1
        with record_function("cipo_fast.prefill" if calls[0] == 1 else "cipo_fast.decode_step"):
            return forward(*args, **kwargs)

    def marked_pick(*args, **kwargs):
        with record_function("cipo_fast.pick_tokens"):
            return pick(*args, **kwargs)

    def call():
        calls[0] = 0
        return generation.decode(model, ids, mask, torch.zeros(a.batch), a.new, eos_id=-1, pad_id=pad)

    model.forward, generation.pick_tokens = marked_forward, marked_pick
    try:
        call()  # warm-up
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            start = time.perf_counter()
            out = call()
            wall = time.perf_counter() - start
    finally:
        model.forward, generation.pick_tokens = forward, pick
    assert out.shape == (a.batch, a.new), out.shape
    shape = ModelShape.from_dir(path)
    per_cat = dict.fromkeys(CATEGORIES, 0.0)
    per_op: dict[str, dict[str, list]] = {k: {} for k in CATEGORIES}
    for e in prof.events():
        if e.name.startswith("cipo_fast."):
            continue
        cat = categorize(e, shape.vocab)
        per_cat[cat] += e.self_cpu_time_total / 1e6
        op = per_op[cat].setdefault(e.name, [0.0, 0])
        op[0] += e.self_cpu_time_total / 1e6
        op[1] += 1
    per_cat["outside ops"] = max(0.0, wall - sum(per_cat.values()))
    steps = a.new - 1  # decode steps after the prefill
    p = sum(i * o * c for _, i, o, c in shape.linears())
    rate = gemm_rate(shape, a.batch)["flop_weighted_median_gflop_per_s"]
    return {
        "batch": a.batch,
        "prompt_tokens_max": width,
        "new_tokens": a.new,
        "threads": torch.get_num_threads(),
        "wall_s": wall,
        "categories_s": per_cat,
        "per_decode_step_ms": {k: 1e3 * v / steps for k, v in per_cat.items() if k != "prefill"},
        "top_ops": {
            cat: [
                {"op": name, "s": s, "calls": n}
                for name, (s, n) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:TOP_OPS]
            ]
            for cat, ops in per_op.items()
        },
        "compute_limit_ms_per_step": 2 * p * a.batch / rate / 1e6,
        "gemm_gflop_per_s_at_batch": rate,
    }


def table(r: dict, facts: dict) -> str:
    step_ms = sum(r["per_decode_step_ms"].values())
    lines = [
        f"One greedy decode call of {r['batch']} rows x {r['new_tokens']} new tokens (prompts of up to "
        f"{r['prompt_tokens_max']} tokens), fp32, SmolLM2-135M, under the profiler ({facts['cpu']}, "
        f"{r['threads']} threads; `python bench/decode_profile.py`): {r['wall_s']:.1f} s, of which a decode "
        f"step {step_ms:.0f} ms against a compute limit of {r['compute_limit_ms_per_step']:.0f} ms (2·P·B at "
        f"{r['gemm_gflop_per_s_at_batch']:.0f} GFLOP/s).",
        "",
        "| category | s in the call | ms per decode step | share | top ops |",
        "|---|---:|---:|---:|---|",
    ]
    for cat, s in r["categories_s"].items():
        ms = r["per_decode_step_ms"].get(cat)
        top = ", ".join(
            f"{o['op'].removeprefix('aten::')} {o['s']:.2f} s" for o in r["top_ops"].get(cat, [])[:3]
        )
        lines.append(
            f"| {cat} | {s:.2f} | {'–' if ms is None else f'{ms:.1f}'} | {100 * s / r['wall_s']:.0f} % | {top} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | an HF model directory")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    a = ap.parse_args(argv)
    facts = machine()
    r = run(a)
    save_and_publish(
        a.out, "decode_profile.json", facts, r, "bench-decode-profile", table(r, facts), a.readme
    )
    print(table(r, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
