"""Batched decoding on this CPU: cipo-fast's generation loop against transformers' `generate` and the
limits of a decode step.

Question: how fast does cipo-fast sample the rows of a CiPO round or an evaluation (SmolLM2-135M, a batch
of `--batch` chat prompts, `--new` new tokens each), in fp32 and under bf16 autocast, how does that compare
with transformers' own `generate` on the same batch, and how far is a decode step from what the machine
allows?

Method: the demo's synthetic forget questions, chat-formatted with the demo's system prompt, repeated to
`--batch` rows and left-padded as `generate_many` pads them (12 distinct prompts, as a CiPO round's
samples of its 12 forget items: cipo-fast prefills each distinct prompt once, `decode(share_prefill=True)`;
the "every row prefilled" row turns that off, as transformers' `generate` does). Every system decodes greedily for exactly
`--new` tokens (EOS ignored: cipo-fast's `decode` with an EOS id that never occurs, transformers with
`min_new_tokens`), so all do the same work; each is timed `--repeats` times after one warm-up call and
the median is reported. Limits of one decode step of B rows: reading the weights once (their bytes / the
measured memory read bandwidth, a large fp32 tensor summed; half the bytes in bf16) and computing
`2 * P * B` FLOPs (P: the parameters a token passes through, the LM head included) at the GEMM rate
measured at M = B rows (in bf16 for the bf16 row). The fp32 greedy tokens are compared with
transformers' row by row.

    python bench/generation.py                 # writes bench/out/generation.json and the README table
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, ModelShape, gemm_rate, machine, resolve_model, save_and_publish


def prompts(tok, n: int) -> list[str]:
    """`n` chat-formatted demo forget questions (repeated as needed)."""
    from cipo_fast import synthetic
    from cipo_fast.data.io import read_jsonl
    from cipo_fast.demo import SYSTEM_PROMPT

    with tempfile.TemporaryDirectory() as d:
        items = read_jsonl(synthetic.build(Path(d), seed=0)["forget"])
    qs = [it["question"] for _, it in items]
    msgs = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}] for q in qs]
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    return [texts[i % len(texts)] for i in range(n)]


def padded_prompts(tok, n: int):
    """(ids, mask, pad id) of `n` demo prompts, left-padded as `generate_many` pads them."""
    from cipo_fast.model.generation import left_pad

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in prompts(tok, n)]
    return *left_pad(enc, pad), pad


def read_bandwidth_gb_s(nbytes: int = 2**30, repeats: int = 5) -> float:
    import torch

    x = torch.ones(nbytes // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    return nbytes / statistics.median(times) / 1e9


def timed(fn, repeats: int) -> tuple[list[float], object]:
    """(seconds of each timed call, the last call's result), after one warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def run(a: argparse.Namespace) -> dict:
    import torch

    from cipo_fast.model.generation import decode
    from cipo_fast.model.loading import ModelOptions, load_model
    from cipo_fast.train.precision import cpu_bf16_units

    work = Path(tempfile.mkdtemp(prefix="cipo-gen-"))
    path = resolve_model(a.model, work)
    model, tok = load_model(str(path), ModelOptions())
    model.eval()
    ids, mask, pad = padded_prompts(tok, a.batch)
    width = ids.shape[1]
    greedy = torch.zeros(a.batch)

    def ours(dtype, share=True):
        def go():
            ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
            with ctx:
                out = decode(model, ids, mask, greedy, a.new, eos_id=-1, pad_id=pad, share_prefill=share)
            assert out.shape == (a.batch, a.new), out.shape
            return out

        return go

    @torch.no_grad()
    def transformers_generate():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=a.new,
            min_new_tokens=a.new,
            do_sample=False,
            pad_token_id=pad,
        )
        assert out.shape == (a.batch, width + a.new), out.shape
        return out

    systems = {
        "cipo-fast (fp32)": ours(None),
        "cipo-fast (fp32, every row prefilled)": ours(None, share=False),
        "transformers generate (fp32)": transformers_generate,
    }
    if cpu_bf16_units() or a.bf16:
        systems["cipo-fast (bf16 autocast)"] = ours(torch.bfloat16)
    rows, outputs = [], {}
    for name, fn in systems.items():
        times, outputs[name] = timed(fn, a.repeats)
        s = statistics.median(times)
        rows.append({"system": name, "median_s": s, "times_s": times, "tokens_per_s": a.batch * a.new / s})
        print(json.dumps(rows[-1]), flush=True)
    ours32, theirs = outputs["cipo-fast (fp32)"], outputs["transformers generate (fp32)"][:, width:]
    differ = ours32 != theirs  # [B, new]: where the two greedy decodings disagree
    first = [int(row.nonzero()[0]) for row in differ if bool(row.any())]
    shape = ModelShape.from_dir(path)
    p = sum(i * o * c for _, i, o, c in shape.linears())
    bw = read_bandwidth_gb_s()
    rate = gemm_rate(shape, a.batch)["flop_weighted_median_gflop_per_s"]
    weight_bytes = 4 * shape.params()
    limits = {
        "params_per_token": p,
        "weight_bytes": weight_bytes,
        "read_bandwidth_gb_s": bw,
        "gemm_gflop_per_s_at_batch": rate,
        "step_s_weights_once": weight_bytes / bw / 1e9,
        "step_s_compute": 2 * p * a.batch / rate / 1e9,
    }
    if any("bf16" in name for name in systems):  # its own limit: bf16 GEMMs, bf16 weight copies
        rate16 = gemm_rate(shape, a.batch, dtype="bfloat16")["flop_weighted_median_gflop_per_s"]
        limits["gemm_gflop_per_s_at_batch_bf16"] = rate16
        limits["step_s_compute_bf16"] = 2 * p * a.batch / rate16 / 1e9
    return {
        "batch": a.batch,
        "prompt_tokens_max": width,
        "new_tokens": a.new,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "greedy_rows_equal_to_transformers": sum(not bool(row.any()) for row in differ),
        "greedy_first_difference_at": first,  # new-token index of each differing row's first difference
        "limits": limits,
    }


def table(r: dict, facts: dict) -> str:
    lim = r["limits"]

    def bound(system):
        compute = lim.get("step_s_compute_bf16") if "bf16" in system else lim["step_s_compute"]
        weights = lim["step_s_weights_once"] / (2 if "bf16" in system else 1)
        return max(weights, compute) if compute is not None else None

    lines = [
        f"Greedy decoding of {r['batch']} rows (the demo's forget questions, chat prompts of up to "
        f"{r['prompt_tokens_max']} tokens, left-padded), {r['new_tokens']} new tokens each, SmolLM2-135M; "
        f"{facts['cores']} cores ({facts['cpu']}), torch {facts['torch']}, transformers {facts['transformers']}. "
        f"Median of the timed calls after a warm-up.",
        "",
        "| system | s per call | s per decode step | tokens/s | step ÷ its limit |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        step, limit = row["median_s"] / r["new_tokens"], bound(row["system"])
        ratio = f"{step / limit:.1f}×" if limit else "–"
        lines.append(
            f"| {row['system']} | {row['median_s']:.1f} | {step:.3f} | {row['tokens_per_s']:.0f} | {ratio} |"
        )
    lines += [
        "",
        f"Limits of one fp32 decode step of {r['batch']} rows: reading the weights once "
        f"({lim['weight_bytes'] / 1e6:.0f} MB at {lim['read_bandwidth_gb_s']:.0f} GB/s) "
        f"{1e3 * lim['step_s_weights_once']:.0f} ms; computing 2·P·B = "
        f"{2 * lim['params_per_token'] * r['batch'] / 1e9:.1f} GFLOP at the fp32 GEMM rate at M = {r['batch']} "
        f"({lim['gemm_gflop_per_s_at_batch']:.0f} GFLOP/s) {1e3 * lim['step_s_compute']:.0f} ms; attention over "
        f"the cache not counted"
        + (
            f"; in bf16 the compute limit is {1e3 * lim['step_s_compute_bf16']:.0f} ms "
            f"({lim['gemm_gflop_per_s_at_batch_bf16']:.0f} GFLOP/s). "
            if "step_s_compute_bf16" in lim
            else ". "
        )
        + f"cipo-fast's fp32 greedy tokens equal transformers' in {r['greedy_rows_equal_to_transformers']} "
        f"of {r['batch']} rows"
        + (
            f"; the others part at new token {min(r['greedy_first_difference_at'])} at the earliest "
            f"(median {statistics.median(r['greedy_first_difference_at']):.0f}): float rounding of two "
            "attention paths (a preallocated cache and its mask against a growing one) tips a near-tie."
            if r["greedy_first_difference_at"]
            else "."
        ),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | an HF model directory")
    ap.add_argument("--batch", type=int, default=128, help="rows per batch (cipo-fast's gen_batch_size)")
    ap.add_argument("--new", type=int, default=128, help="new tokens per row (the demo's max_new_tokens)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="run bf16 autocast even without bf16 units")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    a = ap.parse_args(argv)
    facts = machine()
    r = run(a)
    save_and_publish(a.out, "generation.json", facts, r, "bench-generation", table(r, facts), a.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
