"""The self-contained HTML report: `render_report` writes `report.html` and `plots/*.png`.

`render_report(out_dir, summary, before=None, items=None)` validates the summary (and `before`), draws the
figures of `figures.py`, writes each as `plots/<name>.png` (leakage always; before_after with `before`;
utility when an accuracy set was evaluated) and removes a plot an earlier render left that no longer
applies. It then writes `report.html`: title, a headline-number table (separate before / after / change
columns with `before`), the strategy × metric table (cells "before → after"), the plots embedded as base64
PNG, the forget items that still leak (with `items`, at most MAX_LEAK_ROWS, each with an excerpt of the
output around the leaked span, marked) and the run configuration. Every file is written atomically.

Every value taken from the summary or the items is HTML-escaped. The page has no scripts and no external
assets, so it can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from cipo_fast.data.io import atomic_write, write_text
from cipo_fast.eval.report.figures import comparison_figure, leakage_figure, png_bytes, utility_figure
from cipo_fast.eval.report.measures import fluency_html, mia_html, roc_figure, rtofu_html
from cipo_fast.eval.report.summary import (
    DASH,
    accuracy_of,
    accuracy_sets,
    arrow,
    label_of,
    metric_of,
    model_name,
    num_or_none,
    pct,
    strategy_names,
    strategy_table,
)

MAX_LEAK_ROWS = 20
EXCERPT_CHARS = 320
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
PLOT_NAMES = ("leakage", "before_after", "utility", "roc")

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
    b, a = num_or_none(before), num_or_none(after)
    return DASH if a is None or b is None else f"{100 * (a - b):+.1f} pp"


def _headline_html(summary: dict, before: dict | None) -> str:
    rows = [
        ("MCS (forget items leaking under no strategy)", lambda s: (s or {}).get("mcs")),
        ("forget efficacy", lambda s: (s or {}).get("forget_efficacy")),
        ("model utility", lambda s: (s or {}).get("model_utility")),
    ]
    for k, label in accuracy_sets(summary, before):
        rows.append((f"{label} accuracy", lambda s, k=k: accuracy_of(s, k)))
        if k == "retain":
            rows.append(
                ("retain ROUGE-L answer", lambda s: ((s or {}).get("retain") or {}).get("rouge_answer"))
            )
    if before is None:
        return _html_table(
            ["metric", label_of(summary, "value")], [[_e(n), _e(pct(get(summary)))] for n, get in rows]
        )
    return _html_table(
        ["metric", label_of(before, "before"), label_of(summary, "after"), "change"],
        [
            [_e(n), _e(pct(get(before))), _e(pct(get(summary))), _e(_delta(get(before), get(summary)))]
            for n, get in rows
        ],
    )


def _strategy_html(summary: dict, before: dict | None) -> str:
    names = strategy_names(summary, before)
    cols = [
        (k, h)
        for k, h in STRATEGY_COLUMNS
        if any(metric_of(s, n, k) is not None for s in (summary, before) for n in names)
    ]
    rows = []
    for n in names:
        st = summary["strategies"].get(n, {})
        n_items = num_or_none(st.get("n_items"))
        samples = num_or_none(st.get("samples"))
        row = [
            _e(n),
            _e(DASH if n_items is None else int(n_items)),
            _e(DASH if samples is None else int(samples)),
        ]
        for k, _ in cols:
            a = metric_of(summary, n, k)
            row.append(_e(pct(a) if before is None else arrow(metric_of(before, n, k), a)))
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
        and ((num_or_none(r.get("leak_any")) or 0) > 0 or r.get("leaked_cot") or r.get("leaked_answer"))
    ]
    leaking.sort(
        key=lambda r: (
            -(num_or_none(r.get("leak_any")) or 0),
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
                _e(pct(r.get("leak_any"), 0)),
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
    strategy_table(summary)
    if before is not None:
        strategy_table(before, "before")
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
    if accuracy_sets(summary, before):
        figures.append(
            ("utility", utility_figure(summary, before), "Accuracy on the sets that should be kept.")
        )
    if (roc := roc_figure(summary, before)) is not None:
        figures.append(
            (
                "roc",
                roc,
                "Membership inference, forget vs holdout items: ROC curves per attack (solid; dashed: before).",
            )
        )
    pngs = {name: (png_bytes(fig), caption) for name, fig, caption in figures}
    for name, (png, _) in pngs.items():
        atomic_write(plots_dir / f"{name}.png", lambda p, png=png: p.write_bytes(png))
    for name in set(PLOT_NAMES) - pngs.keys():  # a plot from an earlier render that no longer applies
        (plots_dir / f"{name}.png").unlink(missing_ok=True)

    model = model_name(summary)
    title = f"cipo-fast report: {model}" + (f" (before: {model_name(before)})" if before is not None else "")
    sub = [
        f"label: {summary['label']}" if summary.get("label") else "",
        f"compared with {model_name(before)}" if before is not None else "",
        f"evaluation time {(summary.get('timing') or {}).get('seconds')} s"
        if num_or_none((summary.get("timing") or {}).get("seconds")) is not None
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
        "<h2>R-TOFU's measures</h2>\n",
        rtofu_html(summary, before),
        "<h2>Fluency of the outputs</h2>\n",
        "<p>Per decoding strategy (forget set) and for the retain answers: the share of repeated word 3-grams, "
        "R-TOFU's normalized token entropy, and the mean per-token log-prob under the model before unlearning."
        "</p>\n",
        fluency_html(summary, before),
        "<h2>Membership inference</h2>\n",
        mia_html(summary, before),
        "<h2>Plots</h2>\n",
    ]
    parts += [_figure_html(png, f"{name} plot", caption) for name, (png, caption) in pngs.items()]
    if not accuracy_sets(summary, before):
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
