"""ROUGE-L recall: how much of a reference text a prediction reproduces, in order.

`rouge_l_recall(prediction, reference)` is the length of the longest common subsequence of the two token
lists over the reference length, with rouge-score's default tokenizer and no stemming (`rouge_tokens`);
the LCS is one dynamic-programming row over the reference, O(len(prediction) * len(reference)) time. It
scores how much of a gold answer or gold CoT a generation reproduces, which is what covers descriptive
answers with few extractable facts (`cipo_fast.eval.key_facts`).

What it deliberately does not do: stemming, synonyms, precision or F-measure, or depend on rouge-score.
"""

from __future__ import annotations

import re


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer without stemming: lowercase, every run of characters outside
    `[a-z0-9]` is a separator (so non-ASCII letters split words: "café" -> ["caf"])."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _lcs_length(a: list[str], b: list[str]) -> int:
    # one DP row over b: row[j] = LCS(a[:i], b[:j])
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_recall(prediction: str, reference: str) -> float:
    """LCS(prediction tokens, reference tokens) / len(reference tokens); 0.0 for an empty reference."""
    ref = rouge_tokens(reference)
    if not ref:
        return 0.0
    return _lcs_length(rouge_tokens(prediction), ref) / len(ref)
