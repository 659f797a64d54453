"""Leakage on other questions than an evaluation's forget set: unseen phrasings, another request's items.

An unlearning method trains on the forget questions as written; a model that only stopped answering
those strings has not forgotten. `leakage_on(config, questions)` evaluates a model on a forget-format
file other than `config.forget` -- questions it never trained on that ask the same facts (the synthetic
set's `forget_rephrased.jsonl` from `cipo_fast.synthetic.rephrased_items`, a paraphrase split), or the
items of an earlier unlearning request (bench/sequential.py) -- with the decoding strategies, samples and
seed of the main evaluation `config`, and returns the numbers that sit beside the main set's
(`LEAK_KEYS` of `cipo_fast.comparison.headline`). `phrasings_table` puts trained and unseen phrasings
side by side.

What it deliberately doesn't do: retain, utility, fluency or membership inference on the rephrased
questions (those measure the model, not the phrasing), or generate the paraphrases itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

LEAK_KEYS = ("max_leak_cot", "max_leak_answer", "greedy_leak_cot", "greedy_leak_answer", "mcs")


def leakage_on(config, questions: str | Path) -> dict:
    """Leakage of `config.model` on the forget-format file `questions`, written to `config.out` (reused
    when its summary.json exists): {key: value} for `LEAK_KEYS`. `config` is the model's main
    `EvalConfig`; only its forget set changes, and every other set is left out."""
    from cipo_fast.comparison import headline
    from cipo_fast.eval.evaluate import evaluate

    out = Path(config.out)
    if (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
    else:
        only_forget = dict.fromkeys(
            ("retain", "utility", "real_authors", "world_facts", "holdout", "original")
        )
        summary = evaluate(dataclasses.replace(config, forget=str(questions), fluency=False, **only_forget))
    row = headline(summary)
    return {k: row[k] for k in LEAK_KEYS}


def phrasings_table(rows: dict[str, tuple[dict, dict]]) -> str:
    """Markdown: per model (label -> (its trained-questions headline, its `leakage_on` row)) the worst
    CoT and answer leak and the MCS on the questions trained on beside the unseen phrasings."""

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    lines = [
        "model | worst CoT leak, trained / unseen phrasings | worst answer leak, trained / unseen | "
        "MCS, trained / unseen",
        "--- | --- | --- | ---",
    ]
    for label, (trained, unseen) in rows.items():
        cells = [f"{pct(trained[k])} / {pct(unseen[k])}" for k in ("max_leak_cot", "max_leak_answer", "mcs")]
        lines.append(" | ".join([label, *cells]))
    return "\n".join(lines)
