"""The evaluation report: one self-contained `report.html` plus the plots as `plots/*.png`.

`render_report` reads the summary dict that `cipo-fast eval` writes to `summary.json` (optionally the same
dict for the model before unlearning, and the per-item rows of `items.jsonl`) and writes

* `plots/leakage.png`: CoT vs answer leak rate per decoding strategy (`leakage_figure`);
* `plots/before_after.png` (with `before`): leak rates before vs after per strategy, and the headline numbers
  (MCS, forget efficacy, model utility, accuracies) as a before → after dumbbell (`comparison_figure`);
* `plots/utility.png` (when a retain / utility / real-authors / world-facts set was evaluated): their
  accuracies, before and after when available (`utility_figure`);
* `report.html`: title, a headline-number table, the strategy × metric table, the plots embedded as base64
  PNG, the forget items that still leak (with `items`) and the run configuration. No scripts, no external
  assets: the file can be mailed or archived on its own.

Figures are built on `matplotlib.figure.Figure` with an explicit Agg canvas, never through pyplot, so
rendering touches no global matplotlib state and is safe in threads and worker processes. Colours are the
Okabe-Ito palette (colour-blind safe); "before" bars are the light, hatched version of the "after" colour, so
the pairing also reads in greyscale. Every bar carries a `gid` (`"cot:greedy"`, `"before:answer:greedy"`,
`"after:retain"`; a missing value is drawn as a hatched band named `"na:<gid>"`, and a pair missing
before and after as one band `"na:cot:<name>"`) so tests can find every bar by name.

A null metric prints as "–" and is left out of the bars. The module does not compute any metric: it only
formats what evaluation.py measured.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from cipo_fast.files import atomic_write, write_text

# Okabe-Ito
BLUE, ORANGE, GREEN, VERMILLION, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#7F7F7F"
PART_COLORS = {"cot": BLUE, "answer": ORANGE}
NA_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"}
DASH = "–"
DPI = 100
MAX_LEAK_ROWS = 20
EXCERPT_CHARS = 320

# (summary key, label) of the accuracy sets; each is `{"accuracy", "n_items", ...}` when present
ACCURACY_SETS = (
    ("retain", "retain"),
    ("utility", "utility (GSM8K)"),
    ("real_authors", "real authors"),
    ("world_facts", "world facts"),
)
# (strategy key, column header) of the strategy table
STRATEGY_COLUMNS = (
    ("leak_cot", "CoT leak"),
    ("leak_answer", "answer leak"),
    ("leak_any", "any leak"),
    ("rouge_answer", "ROUGE-L answer"),
    ("rouge_cot", "ROUGE-L CoT"),
    ("stepwise_cot", "step-wise CoT"),
    ("cosine_answer", "cosine answer"),
)
PLOT_NAMES = ("leakage", "before_after", "utility")


# ----------------------------------------------------------------------------------------------------
# reading the summary
# ----------------------------------------------------------------------------------------------------


def _num(x) -> float | None:
    """A finite number, or None for null / NaN / anything that is not a number."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        return None
    return float(x)


def _pct(x, digits: int = 1) -> str:
    x = _num(x)
    return DASH if x is None else f"{100 * x:.{digits}f}%"


def _arrow(before, after) -> str:
    """ "b → a"; a single dash when neither exists (e.g. CoT leak under ZeroThink before and after)."""
    if _num(before) is None and _num(after) is None:
        return DASH
    return f"{_pct(before)} → {_pct(after)}"


def _strategies(summary: dict, where: str = "summary") -> dict[str, dict]:
    st = summary.get("strategies")
    if not isinstance(st, dict) or not st:
        raise ValueError(
            f"{where}: field 'strategies' must be a non-empty object {{name: metrics}}, got {st!r:.80}"
        )
    for name, m in st.items():
        if not isinstance(m, dict):
            raise ValueError(f"{where}: strategies[{name!r}] must be an object of metrics, got {m!r:.80}")
    return st


def _strategy_names(summary: dict, before: dict | None) -> list[str]:
    """The after-model's strategies in their order, then any that only the before-model has."""
    names = list(_strategies(summary))
    if before is not None:
        names += [n for n in _strategies(before, "before") if n not in names]
    return names


def _metric(summary: dict | None, strategy: str, key: str) -> float | None:
    if summary is None:
        return None
    return _num((summary.get("strategies") or {}).get(strategy, {}).get(key))


def _accuracy(summary: dict | None, key: str) -> float | None:
    section = (summary or {}).get(key)
    return _num(section.get("accuracy")) if isinstance(section, dict) else None


def _accuracy_sets(summary: dict, before: dict | None) -> list[tuple[str, str]]:
    return [
        (k, label)
        for k, label in ACCURACY_SETS
        if isinstance(summary.get(k), dict) or isinstance((before or {}).get(k), dict)
    ]


def _model_name(summary: dict | None) -> str:
    if not summary:
        return "(unnamed)"
    if summary.get("model"):
        return str(summary["model"])
    if summary.get("predictions"):
        return f"predictions {summary['predictions']}"
    return "(unnamed)"


def _short(name: str, limit: int = 48) -> str:
    """The last two path components of a model path, cut to `limit` characters (for plot titles)."""
    parts = [p for p in re.split(r"[/\\]", name) if p]
    short = "/".join(parts[-2:]) if parts else name
    return short if len(short) <= limit else "…" + short[-(limit - 1) :]


def _label(summary: dict | None, default: str) -> str:
    return str((summary or {}).get("label") or default)


# ----------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------


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
        ax.text(x, v + 0.015, _pct(v, digits), ha="center", va="bottom", fontsize=fontsize)


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
    samples = _num(((summary or {}).get("strategies") or {}).get(name, {}).get("samples"))
    return f"{name}\n×{int(samples)} samples" if samples and samples > 1 else name


def leakage_figure(summary: dict) -> Figure:
    """Grouped bars: CoT and answer leak rate per strategy (gids `cot:<name>`, `answer:<name>`)."""
    names = list(_strategies(summary))
    fig = _new_figure(9, 4.8)
    ax = fig.add_subplot()
    w = 0.38
    xs = list(range(len(names)))
    for off, part in ((-w / 2, "cot"), (w / 2, "answer")):
        values = [_metric(summary, n, f"leak_{part}") for n in names]
        color = PART_COLORS[part]
        _bars(
            ax, [x + off for x in xs], values, w, face=color, edge=color, gids=[f"{part}:{n}" for n in names]
        )
    ax.set_xticks(xs, [_tick_label(n, summary) for n in names])
    _x_axis(ax, len(names))
    ax.set_xlabel("decoding strategy")
    _percent_axis(ax, "forget items leaking (%)")
    n_items = {_num(m.get("n_items")) for m in summary["strategies"].values()} - {None}
    sub = [
        f"n = {int(next(iter(n_items)))} forget items" if len(n_items) == 1 else None,
        f"MCS {_pct(summary.get('mcs'))} (items leaking under no strategy)",
        "lower is better",
    ]
    fig.suptitle(
        f"Target-knowledge leakage by decoding strategy: {_short(_model_name(summary))}",
        fontsize=12,
        fontweight="bold",
    )
    ax.set_title(" · ".join(s for s in sub if s), fontsize=9, color="#444444")
    handles = [Patch(color=BLUE, label="CoT leak"), Patch(color=ORANGE, label="answer leak")]
    if any(_metric(summary, n, f"leak_{p}") is None for n in names for p in PART_COLORS):
        handles.append(
            Patch(facecolor="none", edgecolor="#BBBBBB", hatch="xx", label="n/a (CoT fixed by prompt)")
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    return fig


def _dumbbell_rows(before: dict, after: dict) -> list[tuple[str, float | None, float | None]]:
    rows = [
        ("MCS (no leak anywhere)", _num(before.get("mcs")), _num(after.get("mcs"))),
        ("forget efficacy", _num(before.get("forget_efficacy")), _num(after.get("forget_efficacy"))),
        ("model utility", _num(before.get("model_utility")), _num(after.get("model_utility"))),
    ]
    rows += [
        (f"{label} accuracy", _accuracy(before, k), _accuracy(after, k))
        for k, label in _accuracy_sets(after, before)
    ]
    return [r for r in rows if r[1] is not None or r[2] is not None]


def comparison_figure(before: dict, after: dict) -> Figure:
    """Before vs after: CoT and answer leak per strategy (gids `before:cot:<name>`, `after:answer:<name>`),
    and a dumbbell of MCS / forget efficacy / model utility / accuracies (higher is better)."""
    names = _strategy_names(after, before)
    rows = _dumbbell_rows(before, after)
    fig = _new_figure(10, 7.6 if rows else 4.6)
    grid = fig.add_gridspec(
        2 if rows else 1, 2, height_ratios=[1.25, 0.75 + 0.1 * len(rows)] if rows else None
    )
    w = 0.38
    xs = list(range(len(names)))
    b_label, a_label = _label(before, "before"), _label(after, "after")
    for col, part, title in ((0, "cot", "CoT leak"), (1, "answer", "answer leak")):
        ax = fig.add_subplot(grid[0, col])
        color = PART_COLORS[part]
        values = {
            who: [_metric(s, n, f"leak_{part}") for n in names]
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
            ax.text(1.03, y, _arrow(b, a), va="center", fontsize=9, transform=ax.get_yaxis_transform())
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
        f"Before vs after unlearning: {_short(_model_name(before), 36)} → {_short(_model_name(after), 36)}",
        fontsize=12,
        fontweight="bold",
    )
    return fig


def utility_figure(summary: dict, before: dict | None = None) -> Figure:
    """Accuracy per retain-like set (gids `after:<set>`, `before:<set>`); a note when none was evaluated."""
    sets = _accuracy_sets(summary, before)
    fig = _new_figure(8, 3.8)
    ax = fig.add_subplot()
    fig.suptitle(f"Kept abilities: {_short(_model_name(summary))}", fontsize=12, fontweight="bold")
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
        values = [_accuracy(summ, k) for k, _ in sets]
        gids = [f"{who}:{k}" for k, _ in sets]
        _bars(ax, [x + off for x in xs], values, w, face=face, edge=GREEN, hatch=hatch, gids=gids)

    def tick(k: str, label: str) -> str:
        n = _num(((summary.get(k) or (before or {}).get(k)) or {}).get("n_items"))
        return f"{label}\n(n = {int(n)})" if n is not None else label

    ax.set_xticks(xs, [tick(k, label) for k, label in sets])
    _x_axis(ax, len(sets))
    _percent_axis(ax, "accuracy (%)")
    ax.set_title("greedy decoding · higher is better", fontsize=9, color="#444444")
    if before is not None:
        ax.legend(
            handles=[
                Patch(facecolor=_light(GREEN), edgecolor=GREEN, hatch="///", label=_label(before, "before")),
                Patch(color=GREEN, label=_label(summary, "after")),
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


# ----------------------------------------------------------------------------------------------------
# text: console table and HTML
# ----------------------------------------------------------------------------------------------------


def _text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def console_table(summary: dict, before: dict | None = None) -> str:
    """Plain-text summary for the terminal: a row per strategy, then the headline numbers."""
    cell = (lambda b, a: _arrow(b, a)) if before is not None else (lambda b, a: _pct(a))
    rows = [["strategy", "CoT leak", "answer leak", "any leak"]]
    for n in _strategy_names(summary, before):
        rows.append(
            [n]
            + [
                cell(_metric(before, n, k), _metric(summary, n, k))
                for k in ("leak_cot", "leak_answer", "leak_any")
            ]
        )
    lines = [_text_table(rows), ""]
    scalars = [
        ("MCS", lambda s: (s or {}).get("mcs")),
        ("forget efficacy", lambda s: (s or {}).get("forget_efficacy")),
        ("model utility", lambda s: (s or {}).get("model_utility")),
        ("retain accuracy", lambda s: _accuracy(s, "retain")),
        ("utility accuracy", lambda s: _accuracy(s, "utility")),
    ]
    scalars += [
        (f"{label} accuracy", lambda s, k=k: _accuracy(s, k))
        for k, label in ACCURACY_SETS[2:]
        if k in summary or k in (before or {})
    ]
    width = max(len(name) for name, _ in scalars)
    lines += [f"{name.ljust(width)}  {cell(get(before), get(summary))}" for name, get in scalars]
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1040px; margin: 1.5em auto;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.45em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
td.out { font-family: ui-monospace, monospace; font-size: 0.85em; white-space: pre-wrap; word-break: break-word;
         max-width: 36em; }
mark { background: #ffe08a; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _html_table(header: list[str], rows: list[list[str]], num_from: int = 1) -> str:
    """`rows` hold already-escaped cell HTML; columns from `num_from` on are right-aligned numbers."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i >= num_from else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>\n"
        for r in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _delta(before, after) -> str:
    b, a = _num(before), _num(after)
    return DASH if a is None or b is None else f"{100 * (a - b):+.1f} pp"


def _headline_html(summary: dict, before: dict | None) -> str:
    rows = [
        ("MCS (forget items leaking under no strategy)", lambda s: (s or {}).get("mcs")),
        ("forget efficacy", lambda s: (s or {}).get("forget_efficacy")),
        ("model utility", lambda s: (s or {}).get("model_utility")),
    ]
    for k, label in _accuracy_sets(summary, before):
        rows.append((f"{label} accuracy", lambda s, k=k: _accuracy(s, k)))
        if k == "retain":
            rows.append(
                ("retain ROUGE-L answer", lambda s: ((s or {}).get("retain") or {}).get("rouge_answer"))
            )
    if before is None:
        return _html_table(
            ["metric", _label(summary, "value")], [[_e(n), _e(_pct(get(summary)))] for n, get in rows]
        )
    return _html_table(
        ["metric", _label(before, "before"), _label(summary, "after"), "change"],
        [
            [_e(n), _e(_pct(get(before))), _e(_pct(get(summary))), _e(_delta(get(before), get(summary)))]
            for n, get in rows
        ],
    )


def _strategy_html(summary: dict, before: dict | None) -> str:
    names = _strategy_names(summary, before)
    cols = [
        (k, h)
        for k, h in STRATEGY_COLUMNS
        if any(_metric(s, n, k) is not None for s in (summary, before) for n in names)
    ]
    rows = []
    for n in names:
        st = summary["strategies"].get(n, {})
        n_items = _num(st.get("n_items"))
        samples = _num(st.get("samples"))
        row = [
            _e(n),
            _e(DASH if n_items is None else int(n_items)),
            _e(DASH if samples is None else int(samples)),
        ]
        for k, _ in cols:
            a = _metric(summary, n, k)
            row.append(_e(_pct(a) if before is None else _arrow(_metric(before, n, k), a)))
        rows.append(row)
    return _html_table(["strategy", "items", "samples", *(h for _, h in cols)], rows)


def _excerpt(text: str, spans: list[str]) -> str:
    """Escaped HTML: up to EXCERPT_CHARS of `text` around the first leaked span, every span in <mark>."""
    hits = sorted(
        (m.start(), m.end())
        for s in spans
        if s.strip()
        for m in re.finditer(re.escape(s), text, flags=re.IGNORECASE)
    )
    start = max(0, hits[0][0] - EXCERPT_CHARS // 3) if hits else 0
    end = min(len(text), start + EXCERPT_CHARS)
    out, pos = ["…" if start > 0 else ""], start
    for a, b in hits:
        a, b = max(a, pos), min(b, end)
        if a >= b:
            continue
        out += [html.escape(text[pos:a]), f"<mark>{html.escape(text[a:b])}</mark>"]
        pos = b
    out += [html.escape(text[pos:end]), "…" if end < len(text) else ""]
    return "".join(out)


def _leaks_html(summary: dict, items: list[dict]) -> str:
    order = {n: i for i, n in enumerate(summary["strategies"])}
    leaking = [
        r
        for r in items
        if isinstance(r, dict)
        and r.get("set", "forget") == "forget"
        and ((_num(r.get("leak_any")) or 0) > 0 or r.get("leaked_cot") or r.get("leaked_answer"))
    ]
    leaking.sort(
        key=lambda r: (
            -(_num(r.get("leak_any")) or 0),
            order.get(r.get("strategy"), len(order)),
            str(r.get("id")),
        )
    )
    n_forget = sum(1 for r in items if isinstance(r, dict) and r.get("set", "forget") == "forget")
    if not leaking:
        return f"<p>No forget item leaks under any strategy ({n_forget} item × strategy rows checked).</p>\n"
    rows = []
    for r in leaking[:MAX_LEAK_ROWS]:
        cot, ans = list(r.get("leaked_cot") or []), list(r.get("leaked_answer") or [])
        spans = "; ".join(
            f"{part}: {', '.join(map(str, xs))}" for part, xs in (("CoT", cot), ("answer", ans)) if xs
        )
        outputs = r.get("outputs") or ([r["output"]] if r.get("output") else [])
        outputs = [str(o) for o in outputs]
        shown = next(
            (o for o in outputs if any(str(s).lower() in o.lower() for s in cot + ans)),
            outputs[0] if outputs else "",
        )
        rows.append(
            [
                _e(r.get("id", DASH)),
                _e(r.get("strategy", DASH)),
                _e(_pct(r.get("leak_any"), 0)),
                _e(spans or DASH),
                _excerpt(shown, [str(s) for s in cot + ans]),
            ]
        )
    head = (
        f"<p>{len(leaking)} of {n_forget} forget item × strategy rows leak"
        f"{f'; the first {MAX_LEAK_ROWS} are shown' if len(leaking) > MAX_LEAK_ROWS else ''}"
        " (leak rate = share of the strategy's samples that leak).</p>\n"
    )
    body = "".join(
        f'<tr><td>{r[0]}</td><td>{r[1]}</td><td class="num">{r[2]}</td><td>{r[3]}</td>'
        f'<td class="out">{r[4]}</td></tr>\n'
        for r in rows
    )
    return (
        f"{head}<table>\n<tr><th>id</th><th>strategy</th><th>leak rate</th><th>leaked spans</th>"
        f"<th>output excerpt</th></tr>\n{body}</table>\n"
    )


def _figure_html(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>\n"
    )


def render_report(
    out_dir: Path, summary: dict, *, before: dict | None = None, items: list[dict] | None = None
) -> Path:
    """Write `out_dir/report.html` and `out_dir/plots/*.png`; returns the path of the html file."""
    out_dir = Path(out_dir)
    _strategies(summary)
    if before is not None:
        _strategies(before, "before")
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)

    figures = [
        (
            "leakage",
            leakage_figure(summary),
            "Leak rate of the target knowledge per decoding strategy, "
            "in the chain of thought and in the answer; hatched bands: CoT fixed by the prompt.",
        )
    ]
    if before is not None:
        figures.append(
            (
                "before_after",
                comparison_figure(before, summary),
                "Leak rates before (light, hatched) and after (solid) unlearning, and the headline numbers.",
            )
        )
    if _accuracy_sets(summary, before):
        figures.append(
            ("utility", utility_figure(summary, before), "Accuracy on the sets that should be kept.")
        )
    pngs = {name: (png_bytes(fig), caption) for name, fig, caption in figures}
    for name, (png, _) in pngs.items():
        atomic_write(plots_dir / f"{name}.png", lambda p, png=png: p.write_bytes(png))
    for name in set(PLOT_NAMES) - pngs.keys():  # a plot from an earlier render that no longer applies
        (plots_dir / f"{name}.png").unlink(missing_ok=True)

    model = _model_name(summary)
    title = f"cipo-fast report: {model}" + (f" (before: {_model_name(before)})" if before is not None else "")
    sub = [
        f"label: {summary['label']}" if summary.get("label") else "",
        f"compared with {_model_name(before)}" if before is not None else "",
        f"evaluation time {(summary.get('timing') or {}).get('seconds')} s"
        if _num((summary.get("timing") or {}).get("seconds")) is not None
        else "",
    ]
    parts = [
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n"
        f'<p class="sub">{_e(" · ".join(s for s in sub if s))}</p>\n',
        "<h2>Headline numbers</h2>\n",
        _headline_html(summary, before),
        "<h2>Forget set by decoding strategy</h2>\n",
        "<p>Rates are the share of forget items (averaged over a strategy's samples) in which a key fact of "
        "the target knowledge appears; under ZeroThink / LessThink the CoT is fixed by the prompt (–)."
        + (" Cells read before → after." if before is not None else "")
        + "</p>\n",
        _strategy_html(summary, before),
        "<h2>Plots</h2>\n",
    ]
    parts += [_figure_html(png, f"{name} plot", caption) for name, (png, caption) in pngs.items()]
    if not _accuracy_sets(summary, before):
        parts.append("<p>No retain / utility / real-authors / world-facts set was evaluated.</p>\n")
    if items is not None:
        parts += ["<h2>Forget items that still leak</h2>\n", _leaks_html(summary, items)]
    if summary.get("config"):
        parts.append(
            "<details><summary>Run configuration</summary>\n<pre>"
            f"{_e(json.dumps(summary['config'], indent=2, default=str))}</pre></details>\n"
        )
    parts.append("</body>\n</html>\n")
    path = out_dir / "report.html"
    write_text(path, "".join(parts))
    return path
