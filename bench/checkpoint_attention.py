"""Checkpointing with attention's outputs kept vs recomputed (`cipo_fast.model.checkpointing`), A/B in one process.

Question: how much of a checkpointed layer's forward + backward does keeping the SDPA kernel's outputs save
at long sequences, and what does it cost in memory? A whole DPO step at 4k tokens per side varies by more
than the saving between runs on this noisy host (bench/memory_scaling.py), so this times the decoder
layers alone: SmolLM2-135M's layer shapes (d 576, 9 heads, 3 KV heads, MLP 1536; random weights) cut to
`--layers` layers, one packed sequence of T tokens, forward + backward of a scalar of the last hidden state,
the two settings alternating, the first round dropped, median of the rest. The SDPA forward of one layer
alone is timed beside it: keeping saves about that per checkpointed layer. Memory: the saved outputs,
4 T (d + heads) bytes per layer (counted, not measured).

    python bench/checkpoint_attention.py                    # T = 1024, 2048, 4096; 4 layers; 4 rounds
    python bench/checkpoint_attention.py --lengths 256 --layers 2 --rounds 2 --d 64 --heads 4 --kv-heads 2  # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import OUT, machine, publish


def measure(a: argparse.Namespace, length: int) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from cipo_fast.model.attention import packed_kwargs, register_varlen_attention
    from cipo_fast.model.checkpointing import checkpoint_kwargs

    register_varlen_attention()
    cfg = LlamaConfig(
        vocab_size=1024,
        hidden_size=a.d,
        intermediate_size=a.ffn,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        attn_implementation="cipo_varlen",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.train()
    ids = torch.randint(0, cfg.vocab_size, (1, length))
    pos = torch.arange(length)[None]
    kw = packed_kwargs(torch.tensor([0, length]), length)
    times = {"keep": [], "recompute": []}
    for rnd in range(a.rounds + 1):
        for name in times:
            if model.is_activation_checkpointing:
                model.activation_checkpointing_disable()
            model.activation_checkpointing_enable(checkpoint_kwargs(name == "keep"), every_n_layers=1)
            t = time.perf_counter()
            model.model(input_ids=ids, position_ids=pos, **kw).last_hidden_state.pow(2).mean().backward()
            dt = time.perf_counter() - t
            model.zero_grad(set_to_none=True)
            if rnd:
                times[name].append(dt)
    hd = a.d // a.heads
    q = torch.randn(1, a.heads, length, hd)
    k, v = torch.randn(1, a.kv_heads, length, hd), torch.randn(1, a.kv_heads, length, hd)
    sdpa = []
    for _ in range(a.rounds + 1):
        t = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=a.heads != a.kv_heads)
        sdpa.append(time.perf_counter() - t)
    keep, recompute = (statistics.median(times[n]) for n in ("keep", "recompute"))
    return {
        "length": length,
        "keep_s": keep,
        "recompute_s": recompute,
        "keep_vs_recompute": keep / recompute,
        "saved_s_per_layer": (recompute - keep) / a.layers,
        "sdpa_forward_s_per_layer": statistics.median(sdpa[1:]),
        "kept_bytes_per_layer": 4 * length * (a.d + a.heads),
        "times_s": times,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="1024,2048,4096")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    a = ap.parse_args(argv)
    facts = machine()
    rows = []
    for length in (int(x) for x in a.lengths.split(",")):
        rows.append(measure(a, length))
        r = rows[-1]
        print(
            f"T = {length}: keep {r['keep_s']:.2f} s, recompute {r['recompute_s']:.2f} s "
            f"({r['keep_vs_recompute']:.2f}x); saved {r['saved_s_per_layer'] * 1e3:.0f} ms per layer, "
            f"SDPA forward alone {r['sdpa_forward_s_per_layer'] * 1e3:.0f} ms",
            flush=True,
        )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(a, k) for k in ("layers", "rounds", "d", "ffn", "heads", "kv_heads")}
    report = {"machine": facts, "settings": settings, "rows": rows}
    (out / "checkpoint_attention.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'checkpoint_attention.json'}")
    publish("bench-checkpoint-attention", table(report), a.readme)
    return 0


def table(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"{s['layers']} decoder layers of d {s['d']}, {s['heads']} / {s['kv_heads']} heads, MLP {s['ffn']}, one "
        f"sequence of T tokens, forward + backward, median of {s['rounds']} alternating rounds "
        f"({report['machine'].get('cpu', '?')}, {report['machine'].get('cores', '?')} cores):",
        "",
        "| T | attention kept (s) | recomputed (s) | kept / recomputed | saved per layer (ms) | "
        "SDPA forward per layer (ms) | kept per layer (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['length']} | {r['keep_s']:.2f} | {r['recompute_s']:.2f} | {r['keep_vs_recompute']:.2f}x | "
            f"{r['saved_s_per_layer'] * 1e3:.0f} | {r['sdpa_forward_s_per_layer'] * 1e3:.0f} | "
            f"{r['kept_bytes_per_layer'] / 1e6:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
