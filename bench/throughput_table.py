"""The README table of `bench/throughput.py`, rendered from its report (what it writes as throughput.json).

One row per system: real tokens per step, seconds per step, steady-state and end-to-end tokens/s, peak
RSS, final loss, and the ratios to the baseline that `throughput.compare` put into the report; then the
model-FLOP efficiency against this machine's GEMM rate, and the same-job check (final-loss differences,
tokens per step, tokenization). Formatting only: every number is already in the report.
"""

from __future__ import annotations

from common import gb


def table(report: dict, systems: dict[str, tuple[str, dict]], baseline: str) -> str:
    """`systems`: throughput.SYSTEMS (name -> (trainer, settings beyond the job)); `baseline`: the system
    the ratios are to."""
    job, gemm, results = report["job"], report["gemm"], report["systems"]
    m = report["machine"]
    lines = [
        f"DPO on {job['model']} ({job['params'] / 1e6:.1f}M params, fp32 weights): {job['pairs']} R-TOFU pairs "
        f"({job['sequence_tokens']['min']}–{job['sequence_tokens']['max']} tokens per side), "
        f"{job['batch_pairs']} pair(s) per step, {job['optimizer_steps']} steps, lr {job['lr']:g} linear, fused "
        f"AdamW; {m['cores']} cores ({m['cpu']}), torch {m['torch']}, trl {m['trl']}. Tokens are real "
        "(non-padding) tokens, prompt counted in both rows; tokens/s is the median over steps 2+; end to end "
        "includes imports, model load(s) and the reference pass; memory is the process's peak RSS.",
        "",
        "| system | settings | tokens/step | s/step | tokens/s | end-to-end s (tokens/s) | peak RSS (GB) "
        "| final loss | cipo-fast speed-up | cipo-fast memory ÷ this |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {describe(name, r, systems)} | failed: `{r['error']}` | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {describe(name, r, systems)} | {r['tokens_per_step_mean']:.0f} "
            f"| {r['step_time_median_s']:.2f} | {r['tokens_per_s_median']:.0f} "
            f"| {r['e2e_s']:.1f} ({r['e2e_tokens_per_s']:.0f}) | {gb(r['peak_rss_bytes'])} "
            f"| {r['final_loss']:.6f} | {ratio(r, 'cipo_fast_speedup')} "
            f"| {ratio(r, 'cipo_fast_memory_ratio')} |"
        )
    base = results.get(baseline, {})
    if "efficiency_vs_gemm" in base:
        lines += [
            "",
            f"Efficiency: this CPU's fp32 GEMM rate at the model's matmul shapes (M = {gemm['m_tokens']} tokens, "
            f"forward / input-gradient / weight-gradient, FLOP-weighted median) is "
            f"{gemm['flop_weighted_median_gflop_per_s']:.0f} GFLOP/s. cipo-fast trains at "
            f"{base['model_gflop_per_s']:.1f} model GFLOP/s ({report['flops']['per_token'] / 1e9:.3f} GFLOP per "
            f"token × {base['tokens_per_s_median']:.0f} tokens/s) = **{100 * base['efficiency_vs_gemm']:.0f}%** "
            f"of it. FLOPs per token = 6·P + 12·n_layers·(n_heads·head_dim)·c̄ (c̄ = mean causal context, "
            f"{report['flops']['mean_causal_context']:.0f} here); recomputation under activation checkpointing "
            "and the reference forward are not counted.",
        ]
    agree = [
        f"{n}: {r['final_loss_diff_vs_cipo_fast']:+.1e}"
        for n, r in results.items()
        if "final_loss_diff_vs_cipo_fast" in r and n != baseline
    ]
    if agree:
        same = all(
            r.get("same_tokens_per_step_as_cipo_fast", True) for r in results.values() if "error" not in r
        )
        lines += [
            "",
            f"Same job: final-loss difference to cipo-fast {', '.join(agree)}; tokens per step "
            f"{'identical on every step' if same else 'DIFFER (different batches)'}; tokenization "
            f"{'identical' if job['tokenization']['identical'] else 'DIFFERS'} on every sequence.",
        ]
    return "\n".join(lines)


def describe(name: str, r: dict, systems: dict[str, tuple[str, dict]]) -> str:
    """The settings cell: what the system changes from its trainer's defaults (a failed run has no
    recorded settings; then its entry in `systems` says)."""
    s = r.get("settings", {})
    if name.startswith("cipo-fast"):
        ce = s.get("checkpoint_every", systems[name][1].get("checkpoint_every", 1))
        ckpt = "no activation checkpointing" if ce == 0 else f"checkpointing every {ce} layer(s)"
        shared = ", common prompt prefix once" if s.get("share_prefix") else ""
        bf16 = ", bf16 autocast" if systems[name][1].get("cpu_autocast") == "bf16" else ""
        return (
            f"packed{shared}, token budget {s.get('token_budget', 4096)}, {ckpt}, reference precomputed{bf16}"
        )
    return {
        "trl-default": "defaults: gradient checkpointing, reference model run every step, padded",
        "trl-precompute-nogc": "precompute_ref_log_probs, no gradient checkpointing",
        "trl-liger": "use_liger_kernel",
        "trl-bf16": "defaults, bf16=True (autocast)",
    }[name]


def ratio(r: dict, key: str) -> str:
    return f"{r[key]:.2f}×" if key in r else "–"
