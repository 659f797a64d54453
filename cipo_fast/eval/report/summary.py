"""Readers of the summary dict that `cipo-fast eval` writes to `summary.json`, shared by the figures, the
console table and the HTML page.

A summary holds `strategies: {name: {leak_cot, leak_answer, leak_any, rouge_*, n_items, samples, ...}}`,
the headline scalars (`mcs`, `forget_efficacy`, `model_utility`) and, when they were evaluated, one section
per accuracy set (`retain`, `utility`, `real_authors`, `world_facts`: `{"accuracy", "n_items", ...}`).
The number readers (`num_or_none`, `metric_of`, `accuracy_of`) return None for a missing key and for a null / NaN /
non-numeric value, and `pct` prints None as "–". Only `strategy_table` is strict: a summary without a non-empty `strategies` object is a
`ValueError` naming the field, since nothing can be reported without it. `model_name`, `shorten` and
`label_of` give the names that titles, legends and table headers show.

Nothing here computes a metric or draws anything; it only reads and formats what evaluation measured.
"""

from __future__ import annotations

import math
import numbers
import re

DASH = "–"

# (summary key, label) of the accuracy sets; each is `{"accuracy", "n_items", ...}` when present
ACCURACY_SETS = (
    ("retain", "retain"),
    ("utility", "utility (GSM8K)"),
    ("real_authors", "real authors"),
    ("world_facts", "world facts"),
)


def num_or_none(x) -> float | None:
    """A finite number, or None for null / NaN / anything that is not a number."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        return None
    return float(x)


def pct(x, digits: int = 1) -> str:
    x = num_or_none(x)
    return DASH if x is None else f"{100 * x:.{digits}f}%"


def arrow(before, after) -> str:
    """ "b → a"; a single dash when neither exists (e.g. CoT leak under ZeroThink before and after)."""
    if num_or_none(before) is None and num_or_none(after) is None:
        return DASH
    return f"{pct(before)} → {pct(after)}"


def strategy_table(summary: dict, where: str = "summary") -> dict[str, dict]:
    st = summary.get("strategies")
    if not isinstance(st, dict) or not st:
        raise ValueError(
            f"{where}: field 'strategies' must be a non-empty object {{name: metrics}}, got {st!r:.80}"
        )
    for name, m in st.items():
        if not isinstance(m, dict):
            raise ValueError(f"{where}: strategies[{name!r}] must be an object of metrics, got {m!r:.80}")
    return st


def strategy_names(summary: dict, before: dict | None) -> list[str]:
    """The after-model's strategies in their order, then any that only the before-model has."""
    names = list(strategy_table(summary))
    if before is not None:
        names += [n for n in strategy_table(before, "before") if n not in names]
    return names


def metric_of(summary: dict | None, strategy: str, key: str) -> float | None:
    if summary is None:
        return None
    return num_or_none((summary.get("strategies") or {}).get(strategy, {}).get(key))


def accuracy_of(summary: dict | None, key: str) -> float | None:
    section = (summary or {}).get(key)
    return num_or_none(section.get("accuracy")) if isinstance(section, dict) else None


def accuracy_sets(summary: dict, before: dict | None) -> list[tuple[str, str]]:
    return [
        (k, label)
        for k, label in ACCURACY_SETS
        if isinstance(summary.get(k), dict) or isinstance((before or {}).get(k), dict)
    ]


def model_name(summary: dict | None) -> str:
    if not summary:
        return "(unnamed)"
    if summary.get("model"):
        return str(summary["model"])
    if summary.get("predictions"):
        return f"predictions {summary['predictions']}"
    return "(unnamed)"


def shorten(name: str, limit: int = 48) -> str:
    """The last two path components of a model path, cut to `limit` characters (for plot titles)."""
    parts = [p for p in re.split(r"[/\\]", name) if p]
    short = "/".join(parts[-2:]) if parts else name
    return short if len(short) <= limit else "…" + short[-(limit - 1) :]


def label_of(summary: dict | None, default: str) -> str:
    return str((summary or {}).get("label") or default)
