"""The README table and the figure of `bench/memory_scaling.py`, rendered from its report (what it writes
as memory_scaling.json).

The table has one row per pair length L: each system's peak RSS and step time (or why the point has
none: OOM, timeout, skipped), the TRL / cipo-fast memory ratio and the analytic loss-path estimates; then
the fitted bytes-per-token slopes against d·4, d·4·(layers+1) and V·4, and where each system ran out of
memory or time. The figure plots peak RSS against L, with the OOM points at the cap and the points killed
by the time limit as dotted lines (they have no memory value). Formatting only: every number is already
in the report.
"""

from __future__ import annotations

from pathlib import Path

from common import GiB, gb


def table(report: dict, systems: list[str]) -> str:
    s = report["shape"]
    lines = [
        f"One DPO step (1 pair, batch 1) on {report['model']} (d = {s['d']}, {s['layers']} layers, "
        f"V = {s['vocab']}), fp32; L completion tokens per side + a {report['prompt_tokens']}-token prompt; "
        f"peak RSS of a fresh process capped at {report['mem_limit_gib']:g} GiB.",
        "",
        "| L per side | tokens in step | "
        + " | ".join(f"{n} peak (GB) | {n} step (s)" for n in systems)
        + " | TRL ÷ cipo-fast memory | loss-path estimate: cipo-fast / TRL fused head / unfused (GB) |",
        "|" + "---:|" * (3 + 2 * len(systems)) + "---|",
    ]
    for r in report["rows"]:
        cells = []
        for n in systems:
            p = r[n]
            if p["status"] == "ok":
                cells += [gb(p["peak_rss_bytes"]), f"{p['step_time_s']:.1f}"]
            else:
                cells += [p["status"], "–"]
        both = all(r[n]["status"] == "ok" for n in ("cipo-fast", "trl-default") if n in systems)
        rat = (
            f"{r['trl-default']['peak_rss_bytes'] / r['cipo-fast']['peak_rss_bytes']:.2f}×"
            if both and {"cipo-fast", "trl-default"} <= set(systems)
            else "–"
        )
        e = r["loss_path_estimate_bytes"]
        est = (
            f"{gb(e['cipo_fast']['total'])} / {gb(e['trl_fused_head']['total'])} / {gb(e['unfused_logits'])}"
        )
        lines.append(f"| {r['length']} | {r['tokens']} | {' | '.join(cells)} | {rat} | {est} |")
    ref = report["reference_bytes_per_token"]
    notes = []
    for n, f in report["fits"].items():
        if f:
            notes.append(
                f"{n}: {f['slope_bytes_per_token'] / 1e3:.1f} kB/token (last two points "
                f"{f['last_two_slope'] / 1e3:.1f}) = {f['vs_hidden_row']:.0f} × d·4, "
                f"{f['vs_checkpointed_activations']:.2f} × d·4·(layers+1), {f['vs_logits_row']:.2f} × V·4"
            )
    if notes:
        lines += [
            "",
            f"Fitted peak-memory slope (d·4 = {ref['hidden_row_d_x_4']} B, d·4·(layers+1) = "
            f"{ref['checkpointed_activations_d_x_4_x_(layers+1)']} B, V·4 = {ref['logits_row_V_x_4']} B per "
            f"token): {'; '.join(notes)}.",
        ]
    oom = report["first_oom_length"]
    lines += [
        "",
        "Out of memory: "
        + ", ".join(
            f"{n} first at L = {v}"
            if v
            else f"{n} not reached: killed at L = {t} after the {report['timeout_s']:g} s limit per point"
            if (t := report.get("first_timeout_length", {}).get(n))
            else f"{n} none up to L = {report['rows'][-1]['length']}"
            for n, v in oom.items()
        )
        + f". The {report['mem_limit_gib']:g} GiB cap is on address space, which exceeds the peak RSS by "
        + ", ".join(f"{gb(v)} GB ({n})" for n, v in report["address_space_minus_rss_bytes"].items())
        + " (median over the points; library reservations), so that much less RSS is available.",
    ]
    return "\n".join(lines)


def plot(report: dict, systems: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    limit = report["mem_limit_gib"] * GiB / 1e9
    for name, marker in zip(systems, "os^"):
        ok = [
            (r["length"], r[name]["peak_rss_bytes"] / 1e9)
            for r in report["rows"]
            if r[name]["status"] == "ok"
        ]
        if ok:
            ax.plot(*zip(*ok), marker=marker, label=name)
        oom = [r["length"] for r in report["rows"] if r[name]["status"] == "OOM"]
        if oom:
            ax.plot(oom, [limit] * len(oom), "x", color="red", markersize=10, label=f"{name}: OOM")
        for k, length in enumerate(r["length"] for r in report["rows"] if r[name]["status"] == "timeout"):
            ax.axvline(  # no memory value: the point was killed by the time limit
                length,
                linestyle=":",
                color=ax.lines[-1].get_color() if ok else "grey",
                label=f"{name}: killed at {report['timeout_s']:g} s (no value)" if k == 0 else None,
            )
    ax.axhline(
        limit,
        linestyle="--",
        color="grey",
        linewidth=0.8,
        label=f"address-space cap ({report['mem_limit_gib']:g} GiB)",
    )
    ax.set_xscale("log", base=2)
    lengths = [r["length"] for r in report["rows"]]
    ax.set_xticks(lengths, labels=[str(n) for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("completion tokens per side (L)")
    ax.set_ylabel("peak RSS of the process (GB)")
    ax.set_title(f"One DPO step, {report['model']}, fp32, CPU")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120)
