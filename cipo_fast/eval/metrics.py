"""The aggregates of an evaluation, in R-TOFU's style.

* forget efficacy: harmonic mean, under greedy decoding, of 1 - answer leak, 1 - CoT leak, 1 - answer
  ROUGE-L and 1 - CoT ROUGE-L (vs the gold CoT when the set has one);
* model utility: harmonic mean of the accuracies of the retain, real-authors, world-facts and utility
  (GSM8K-style) sets that were evaluated.
"""

from __future__ import annotations

from statistics import harmonic_mean


def aggregate(per_strategy: dict, mcs, extra: dict) -> dict:
    g = per_strategy.get("greedy") or next(iter(per_strategy.values()))
    parts = [1 - g["leak_answer"], 1 - g["rouge_answer"]]
    if g["leak_cot"] is not None:
        parts += [1 - g["leak_cot"], 1 - g["rouge_cot"]]
    utility_parts = [
        extra[k]["accuracy"] for k in ("retain", "real_authors", "world_facts", "utility") if k in extra
    ]
    return {
        "strategies": per_strategy,
        "mcs": mcs,
        "forget_efficacy": harmonic_mean(parts) if all(p >= 0 for p in parts) else None,
        "model_utility": harmonic_mean(utility_parts) if utility_parts else None,
        **extra,
    }
