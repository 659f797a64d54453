"""The report's matplotlib figures: leak rate per strategy, before vs after, accuracy on the kept sets.

* `leakage_figure(summary)`: CoT vs answer leak rate per decoding strategy, as grouped bars;
* `comparison_figure(before, after)`: the same leak rates before vs after per strategy, and the headline
  numbers (MCS, forget efficacy, model utility, accuracies) as a before → after dumbbell;
* `utility_figure(summary, before=None)`: accuracy per retain / utility / real-authors / world-facts set,
  before and after when `before` is given;
* `png_bytes(fig)`: the figure as PNG at the module's DPI.

Figures are built on `matplotlib.figure.Figure` with an explicit Agg canvas, never through pyplot, so
rendering touches no global matplotlib state and is safe in threads and worker processes. Colours are the
Okabe-Ito palette (colour-blind safe); "before" bars are the light, hatched version of the "after" colour, so
the pairing also reads in greyscale. Every bar carries a `gid` (`"cot:greedy"`, `"before:answer:greedy"`,
`"after:retain"`); a missing value is drawn as a hatched band named `"na:<gid>"`, and a pair missing
before and after as one band `"na:cot:<name>"`, so tests can find every bar by name.

A null metric is left out of the bars. The figures are returned, not saved: writing files is the HTML
page's job (`html.render_report`).
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from cipo_fast.eval.report.summary import (
    accuracy_of,
    accuracy_sets,
    arrow,
    label_of,
    metric_of,
    model_name,
    num_or_none,
    pct,
    shorten,
    strategy_names,
    strategy_table,
)

# Okabe-Ito
BLUE, ORANGE, GREEN, VERMILLION, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#7F7F7F"
PART_COLORS = {"cot": BLUE, "answer": ORANGE}
NA_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"}
DPI = 100


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg for this figure only; pyplot and the global backend are never touched
    return fig


def _light(color: str) -> tuple:
    return to_rgba(color, 0.35)


def _na_band(ax, x: float, width: float, gid: str, text: str = "n/a") -> None:
    """A hatched full-height band where a value does not exist (e.g. CoT under ZeroThink)."""
    ax.bar(x, 1.0, width, color="none", edgecolor="#BBBBBB", hatch="xx", linewidth=0.8, gid=gid)
    ax.text(x, 0.5, text, ha="center", va="center", rotation=90, fontsize=8, color="#555555", bbox=NA_BOX)


def _bars(ax, xs, values, width, *, face, edge, gids, hatch=None, digits=1, fontsize=8) -> None:
    """Bars for the non-null values with a % label on top; a hatched n/a band `na:<gid>` for each null."""
    for x, v, gid in zip(xs, values, gids):
        if v is None:
            _na_band(ax, x, width, f"na:{gid}")
            continue
        ax.bar(x, v, width, color=face, edgecolor=edge, linewidth=0.8, hatch=hatch, gid=gid)
        ax.text(x, v + 0.015, pct(v, digits), ha="center", va="bottom", fontsize=fontsize)


def _x_axis(ax, n: int) -> None:
    """Categories at 0..n-1; fewer than three are centred at the width of three so bars stay slim."""
    pad = max(0.0, (3 - n) / 2)
    ax.set_xlim(-0.6 - pad, n - 0.4 + pad)


def _percent_axis(ax, ylabel: str) -> None:
    ax.set_ylim(0, 1.12)  # headroom for the labels of 100% bars
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def _tick_label(name: str, summary: dict | None) -> str:
    samples = num_or_none(((summary or {}).get("strategies") or {}).get(name, {}).get("samples"))
    return f"{name}\n×{int(samples)} samples" if samples and samples > 1 else name


def leakage_figure(summary: dict) -> Figure:
    """Grouped bars: CoT and answer leak rate per strategy (gids `cot:<name>`, `answer:<name>`)."""
    names = list(strategy_table(summary))
    fig = _new_figure(9, 4.8)
    ax = fig.add_subplot()
    w = 0.38
    xs = list(range(len(names)))
    for off, part in ((-w / 2, "cot"), (w / 2, "answer")):
        values = [metric_of(summary, n, f"leak_{part}") for n in names]
        color = PART_COLORS[part]
        _bars(
            ax, [x + off for x in xs], values, w, face=color, edge=color, gids=[f"{part}:{n}" for n in names]
        )
    ax.set_xticks(xs, [_tick_label(n, summary) for n in names])
    _x_axis(ax, len(names))
    ax.set_xlabel("decoding strategy")
    _percent_axis(ax, "forget items leaking (%)")
    n_items = {num_or_none(m.get("n_items")) for m in summary["strategies"].values()} - {None}
    sub = [
        f"n = {int(next(iter(n_items)))} forget items" if len(n_items) == 1 else None,
        f"MCS {pct(summary.get('mcs'))} (items leaking under no strategy)",
        "lower is better",
    ]
    fig.suptitle(
        f"Target-knowledge leakage by decoding strategy: {shorten(model_name(summary))}",
        fontsize=12,
        fontweight="bold",
    )
    ax.set_title(" · ".join(s for s in sub if s), fontsize=9, color="#444444")
    handles = [Patch(color=BLUE, label="CoT leak"), Patch(color=ORANGE, label="answer leak")]
    if any(metric_of(summary, n, f"leak_{p}") is None for n in names for p in PART_COLORS):
        handles.append(
            Patch(facecolor="none", edgecolor="#BBBBBB", hatch="xx", label="n/a (CoT fixed by prompt)")
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    return fig


def _dumbbell_rows(before: dict, after: dict) -> list[tuple[str, float | None, float | None]]:
    rows = [
        ("MCS (no leak anywhere)", num_or_none(before.get("mcs")), num_or_none(after.get("mcs"))),
        (
            "forget efficacy",
            num_or_none(before.get("forget_efficacy")),
            num_or_none(after.get("forget_efficacy")),
        ),
        ("model utility", num_or_none(before.get("model_utility")), num_or_none(after.get("model_utility"))),
    ]
    rows += [
        (f"{label} accuracy", accuracy_of(before, k), accuracy_of(after, k))
        for k, label in accuracy_sets(after, before)
    ]
    return [r for r in rows if r[1] is not None or r[2] is not None]


def comparison_figure(before: dict, after: dict) -> Figure:
    """Before vs after: CoT and answer leak per strategy (gids `before:cot:<name>`, `after:answer:<name>`),
    and a dumbbell of MCS / forget efficacy / model utility / accuracies (higher is better)."""
    names = strategy_names(after, before)
    rows = _dumbbell_rows(before, after)
    fig = _new_figure(10, 7.6 if rows else 4.6)
    grid = fig.add_gridspec(
        2 if rows else 1, 2, height_ratios=[1.25, 0.75 + 0.1 * len(rows)] if rows else None
    )
    w = 0.38
    xs = list(range(len(names)))
    b_label, a_label = label_of(before, "before"), label_of(after, "after")
    for col, part, title in ((0, "cot", "CoT leak"), (1, "answer", "answer leak")):
        ax = fig.add_subplot(grid[0, col])
        color = PART_COLORS[part]
        values = {
            who: [metric_of(s, n, f"leak_{part}") for n in names]
            for who, s in (("before", before), ("after", after))
        }
        keep = [i for i in xs if values["before"][i] is not None or values["after"][i] is not None]
        for i in set(xs) - set(keep):  # null before and after: one band over the pair
            _na_band(ax, i, 2 * w, f"na:{part}:{names[i]}")
        for off, who, face, hatch in (
            (-w / 2, "before", _light(color), "///"),
            (w / 2, "after", color, None),
        ):
            _bars(
                ax,
                [i + off for i in keep],
                [values[who][i] for i in keep],
                w,
                face=face,
                edge=color,
                hatch=hatch,
                digits=0,
                fontsize=7.5,
                gids=[f"{who}:{part}:{names[i]}" for i in keep],
            )
        tilt = len(names) > 3
        ax.set_xticks(xs, names, rotation=20 if tilt else 0, ha="right" if tilt else "center", fontsize=8.5)
        _x_axis(ax, len(names))
        _percent_axis(ax, "forget items leaking (%)" if col == 0 else "")
        ax.set_ylim(0, 1.3)  # room for the legend above the 100% line
        ax.set_title(f"{title} (lower is better)", fontsize=10)
        handles = [
            Patch(facecolor=_light(color), edgecolor=color, hatch="///", label=b_label),
            Patch(color=color, label=a_label),
        ]
        if None in values["before"] + values["after"]:
            handles.append(Patch(facecolor="none", edgecolor="#BBBBBB", hatch="xx", label="n/a"))
        ax.legend(handles=handles, loc="upper center", ncols=len(handles), fontsize=8, frameon=False)
    if rows:
        ax = fig.add_subplot(grid[1, :])
        ys = list(range(len(rows)))[::-1]
        for y, (_, b, a) in zip(ys, rows):
            if b is not None and a is not None:
                ax.annotate(
                    "",
                    xy=(a, y),
                    xytext=(b, y),
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": "#999999",
                        "lw": 1.5,
                        "shrinkA": 5,
                        "shrinkB": 6,
                    },
                )
            if b is not None:
                ax.plot([b], [y], "o", ms=9, mfc="white", mec=GREY, mew=1.8)
            if a is not None:
                ax.plot([a], [y], "o", ms=9, color=GREEN)
            ax.text(1.03, y, arrow(b, a), va="center", fontsize=9, transform=ax.get_yaxis_transform())
        ax.set_yticks(ys, [r[0] for r in rows], fontsize=9)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlim(-0.02, 1.02)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("score (higher is better)")
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(f"headline numbers: {b_label} → {a_label}", fontsize=10)
        ax.legend(
            handles=[
                ax.plot([], [], "o", mfc="white", mec=GREY, mew=1.8, label=b_label)[0],
                ax.plot([], [], "o", color=GREEN, label=a_label)[0],
            ],
            loc="upper left",
            bbox_to_anchor=(1.0, -0.08),
            fontsize=8,
            frameon=False,
        )
    fig.suptitle(
        f"Before vs after unlearning: {shorten(model_name(before), 36)} → {shorten(model_name(after), 36)}",
        fontsize=12,
        fontweight="bold",
    )
    return fig


def utility_figure(summary: dict, before: dict | None = None) -> Figure:
    """Accuracy per retain-like set (gids `after:<set>`, `before:<set>`); a note when none was evaluated."""
    sets = accuracy_sets(summary, before)
    fig = _new_figure(8, 3.8)
    ax = fig.add_subplot()
    fig.suptitle(f"Kept abilities: {shorten(model_name(summary))}", fontsize=12, fontweight="bold")
    if not sets:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no retain / utility set was evaluated", ha="center", va="center", color="#666666")
        return fig
    xs = list(range(len(sets)))
    series = [("after", summary, GREEN, None)]
    if before is not None:
        series.insert(0, ("before", before, _light(GREEN), "///"))
    w = 0.7 / len(series)
    for i, (who, summ, face, hatch) in enumerate(series):
        off = (i - (len(series) - 1) / 2) * w
        values = [accuracy_of(summ, k) for k, _ in sets]
        gids = [f"{who}:{k}" for k, _ in sets]
        _bars(ax, [x + off for x in xs], values, w, face=face, edge=GREEN, hatch=hatch, gids=gids)

    def tick(k: str, label: str) -> str:
        n = num_or_none(((summary.get(k) or (before or {}).get(k)) or {}).get("n_items"))
        return f"{label}\n(n = {int(n)})" if n is not None else label

    ax.set_xticks(xs, [tick(k, label) for k, label in sets])
    _x_axis(ax, len(sets))
    _percent_axis(ax, "accuracy (%)")
    ax.set_title("greedy decoding · higher is better", fontsize=9, color="#444444")
    if before is not None:
        ax.legend(
            handles=[
                Patch(
                    facecolor=_light(GREEN), edgecolor=GREEN, hatch="///", label=label_of(before, "before")
                ),
                Patch(color=GREEN, label=label_of(summary, "after")),
            ],
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
            fontsize=9,
        )
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
