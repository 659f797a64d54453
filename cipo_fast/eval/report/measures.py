"""The report's sections for the measures beside leakage: R-TOFU's aggregates, fluency, membership inference.

* `rtofu_html`: answer-level forget efficacy and model utility, CoT forget efficacy and their terms, with
  the terms each mean could not use (entailment needs an NLI model);
* `fluency_html`: per strategy (and the retain set) the mean repetition rate, token entropy and mean
  log-prob of the outputs under the original model;
* `mia_html` + `roc_figure`: per attack the AUC of forget vs holdout items (1.0: the forget set looks
  memorized, 0.5: indistinguishable from unseen items) at the answer and the CoT level, and the ROC curves
  drawn from the per-item scores (loss-like: a higher score means less likely a member).

Cells read before → after when a `before` summary is given. Nothing here computes a measure.
"""

from __future__ import annotations

from html import escape

from matplotlib.figure import Figure

from cipo_fast.eval.report.figures import DPI
from cipo_fast.eval.report.summary import DASH, label_of, num_or_none, pct

ATTACK_NAMES = {
    "loss": "LOSS",
    "zlib": "zlib",
    "min_k": "Min-K%",
    "min_k_plus_plus": "Min-K%++",
    "reference": "reference",
}


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>\n" for r in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _pair(after, before, fmt) -> str:
    a = DASH if num_or_none(after) is None else fmt(after)
    if before is None:
        return a
    b = DASH if num_or_none(before) is None else fmt(before)
    return f"{b} → {a}"


def _num(x, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def rtofu_html(summary: dict, before: dict | None) -> str:
    r, b = summary.get("rtofu") or {}, (before or {}).get("rtofu")
    rows = []
    for key, name in (
        ("forget_efficacy", "answer forget efficacy (R-TOFU)"),
        ("cot_forget_efficacy", "CoT forget efficacy (step-wise)"),
        ("model_utility", "model utility (R-TOFU)"),
        ("stepwise_rouge", "step-wise ROUGE-L of the CoT"),
        ("stepwise_cosine", "step-wise cosine of the CoT"),
    ):
        if key in r:
            missing = ", ".join(r.get(f"{key}_missing") or [])
            rows.append([escape(name), _pair(r[key], (b or {}).get(key), pct), escape(missing or DASH)])
    if not rows:
        return "<p>No R-TOFU measure was computed.</p>\n"
    return _table(["measure", "value", "terms it could not use"], rows)


def fluency_html(summary: dict, before: dict | None) -> str:
    f, b = summary.get("fluency") or {}, (before or {}).get("fluency") or {}
    if not f:
        return "<p>Fluency was not scored.</p>\n"
    rows = [
        [
            escape(group),
            _pair(
                v.get("repetition_rate"),
                (b.get(group) or {}).get("repetition_rate") if before else None,
                _num,
            ),
            _pair(
                v.get("token_entropy"), (b.get(group) or {}).get("token_entropy") if before else None, _num
            ),
            _pair(v.get("mean_logprob"), (b.get(group) or {}).get("mean_logprob") if before else None, _num),
        ]
        for group, v in f.items()
    ]
    return _table(["outputs", "3-gram repetition", "token entropy", "mean log-prob (original model)"], rows)


def mia_html(summary: dict, before: dict | None) -> str:
    m, b = summary.get("mia") or {}, (before or {}).get("mia") or {}
    rows = []
    for part in ("answer", "cot"):
        for attack, entry in (m.get(part) or {}).get("attacks", {}).items():
            old = ((b.get(part) or {}).get("attacks") or {}).get(attack, {}) if before else {}
            rows.append(
                [
                    part,
                    escape(ATTACK_NAMES.get(attack, attack)),
                    _pair(entry["auc"], old.get("auc") if before else None, _num),
                    _pair(
                        entry.get("privleak"), old.get("privleak") if before else None, lambda x: f"{x:.1f}"
                    ),
                ]
            )
    if not rows:
        return "<p>Membership inference needs a holdout set (<code>--holdout</code>).</p>\n"
    return _table(["tokens", "attack", "AUC forget vs holdout", "privleak"], rows)


def roc_points(forget: list[float], holdout: list[float]) -> tuple[list[float], list[float]]:
    """(false positive rate, true positive rate) with forget items as the positives of a detector that
    calls an item a member when its (loss-like) score is at most a threshold."""
    thresholds = sorted({*forget, *holdout})
    fpr, tpr = [0.0], [0.0]
    for t in thresholds:
        tpr.append(sum(x <= t for x in forget) / len(forget))
        fpr.append(sum(x <= t for x in holdout) / len(holdout))
    return fpr, tpr


def roc_figure(summary: dict, before: dict | None = None) -> Figure | None:
    """ROC curves per attack, one panel per granularity (dashed: before)."""
    m = summary.get("mia") or {}
    parts = [p for p in ("answer", "cot") if (m.get(p) or {}).get("attacks")]
    if not parts:
        return None
    fig = Figure(figsize=(4.2 * len(parts), 3.8), dpi=DPI)
    for k, part in enumerate(parts):
        ax = fig.add_subplot(1, len(parts), k + 1)
        for s, style in (((before or {}).get("mia"), "--"), (m, "-")):
            for attack, entry in ((s or {}).get(part) or {}).get("attacks", {}).items():
                fpr, tpr = roc_points(entry["forget"], entry["holdout"])
                ax.plot(
                    fpr,
                    tpr,
                    style,
                    label=f"{ATTACK_NAMES.get(attack, attack)} {entry['auc']:.2f}" if style == "-" else None,
                )
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(
            xlabel="holdout items called members",
            ylabel="forget items called members",
            title=f"{part} tokens",
        )
        ax.legend(fontsize=7, title=label_of(summary, "after") + " AUC", title_fontsize=7)
    fig.tight_layout()
    return fig
