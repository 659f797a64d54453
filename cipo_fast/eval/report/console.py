"""The plain-text summary `cipo-fast eval` prints to the terminal (`console_table`).

A row per decoding strategy (CoT / answer / any leak), then the headline numbers and the accuracy sets, in
aligned columns. Given the summary of the model before unlearning, every cell reads "before → after";
a value missing on both sides is a single "–".

Then R-TOFU's aggregates and the Min-K% membership-inference AUC (open-unlearning's privleak attack)
when they were computed. It is plain text only (no colours, no terminal control codes) and has no
per-item detail or secondary metrics such as ROUGE-L or fluency; the HTML page has those.
"""

from __future__ import annotations

from cipo_fast.eval.mia import HEADLINE_ATTACK
from cipo_fast.eval.report.summary import ACCURACY_SETS, accuracy_of, arrow, metric_of, pct, strategy_names


def _auc(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _mia_auc(summary: dict | None, part: str):
    entry = (((summary or {}).get("mia") or {}).get(part) or {}).get("attacks", {}).get(HEADLINE_ATTACK)
    return None if entry is None else entry["auc"]


def _text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def console_table(summary: dict, before: dict | None = None) -> str:
    """Plain-text summary for the terminal: a row per strategy, then the headline numbers."""
    cell = (lambda b, a: arrow(b, a)) if before is not None else (lambda b, a: pct(a))
    rows = [["strategy", "CoT leak", "answer leak", "any leak"]]
    for n in strategy_names(summary, before):
        rows.append(
            [n]
            + [
                cell(metric_of(before, n, k), metric_of(summary, n, k))
                for k in ("leak_cot", "leak_answer", "leak_any")
            ]
        )
    lines = [_text_table(rows), ""]
    scalars = [
        ("MCS", lambda s: (s or {}).get("mcs")),
        ("forget efficacy", lambda s: (s or {}).get("forget_efficacy")),
        ("model utility", lambda s: (s or {}).get("model_utility")),
        ("retain accuracy", lambda s: accuracy_of(s, "retain")),
        ("utility accuracy", lambda s: accuracy_of(s, "utility")),
    ]
    scalars += [
        (f"{label} accuracy", lambda s, k=k: accuracy_of(s, k))
        for k, label in ACCURACY_SETS[2:]
        if k in summary or k in (before or {})
    ]
    rtofu = [("R-TOFU forget efficacy", "forget_efficacy"), ("CoT forget efficacy", "cot_forget_efficacy")]
    rtofu += [("R-TOFU model utility", "model_utility")]
    scalars += [
        (name, lambda s, k=k: ((s or {}).get("rtofu") or {}).get(k))
        for name, k in rtofu
        if k in summary.get("rtofu", {})
    ]
    for part in ("answer", "cot"):
        if HEADLINE_ATTACK in ((summary.get("mia") or {}).get(part) or {}).get("attacks", {}):
            scalars.append(
                (f"MIA AUC, {part} (Min-K%)", lambda s, p=part: _mia_auc(s, p)),
            )
    width = max(len(name) for name, _ in scalars)
    for name, get in scalars:
        if name.startswith("MIA AUC"):  # an AUC, not a share: 0.50 = chance
            b, a = get(before), get(summary)
            text = _auc(a) if before is None else f"{_auc(b)} → {_auc(a)}"
        else:
            text = cell(get(before), get(summary))
        lines.append(f"{name.ljust(width)}  {text}")
    return "\n".join(lines)
