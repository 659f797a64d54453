"""Does a generated text leak the target knowledge of a forget item?

A forget item is a question and its gold answer; its key facts (`cipo_fast.eval.key_facts`) are the spans
of the answer that the question does not already give away. A text leaks when one of those facts, in any
of its surface forms (`cipo_fast.eval.facts`), shows up in it. The caller splits a generation into chain of
thought and final answer (`cipo_fast.data.reasoning.split_reasoning`) and checks each part on its own.

* `find_leaks(text, facts)` normalizes `text` once and looks for every string variant as whole tokens; for
  a date fact it also reads every date written in the text (and every month-day) and compares readings.
* `stepwise_leakage(cot, facts)` is the share of the CoT's sentences (`cipo_fast.eval.text.split_sentences`)
  that leak at least one fact: how much of the reasoning carries the knowledge, not just whether it does.

What it deliberately does not do: understand paraphrase. Descriptive answers (writing style, themes) have
few or no extractable facts; for those the evaluation relies on `cipo_fast.eval.rouge.rouge_l_recall` and,
optionally, the `cipo_fast.eval.embedder.Embedder` cosine.
"""

from __future__ import annotations

from cipo_fast.eval.dates import find_dates, month_days
from cipo_fast.eval.facts import Fact
from cipo_fast.eval.text import contains_tokens, normalize, split_sentences


def find_leaks(text: str, facts: list[Fact]) -> list[str]:
    """Texts of the facts that `text` reveals (each once, in the order of `facts`)."""
    padded = f" {normalize(text)} "
    dates = days = None
    leaks = []
    for fact in facts:
        hit = any(contains_tokens(padded, v) for v in fact.variants)
        if not hit and fact.dates:
            if dates is None:
                dates = {r for _, _, rs in find_dates(text) for r in rs}
                days = month_days(text)
            hit = bool(fact.dates & dates) or bool({(m, d) for _, m, d in fact.dates} & days)
        if hit and fact.text not in leaks:
            leaks.append(fact.text)
    return leaks


def stepwise_leakage(cot: str, facts: list[Fact]) -> float:
    """Fraction of the CoT's sentences (steps) that leak at least one fact; 0.0 for an empty CoT."""
    steps = split_sentences(cot)
    if not steps:
        return 0.0
    return sum(bool(find_leaks(s, facts)) for s in steps) / len(steps)
