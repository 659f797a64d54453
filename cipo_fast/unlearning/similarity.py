"""How close two texts are, for the guards' scope detection and step monitor, with the thresholds of each.

A `Similarity` is a function `fn(a, b)` -> the `[len(a), len(b)]` matrix and two thresholds: `scope` (a
question this close to a forget question asks about that item) and `restates` (a reasoning sentence this
close to the item's answer restates it). Two are built in:

* `minilm_similarity(embed)`: cosine of all-MiniLM-L6-v2 unit embeddings (`cipo_fast.eval.embedder`;
  `embed` is e.g. `LeakJudge.embed`, so the guard shares the judge's cache).
  scope 0.75: on R-TOFU, 99.5% of forget01's 200 paraphrased questions reach it, 1.3% of 300 retain10
  questions do (their best cosines: median 0.89 vs 0.55). restates 0.84: the leak judge's
  restatement threshold (`JudgeConfig.restatement`, tuned on R-TOFU paraphrases).
* `WORD_OVERLAP`, the fallback without the embedder: the cosine of content-word sets,
  |A & B| / sqrt(|A| |B|) over normalized words minus stop words. scope 0.7: only 7.5% of the
  paraphrased questions reach it (0.3% of retain), so it detects little beyond verbatim questions
  (which score 1.0, what the evaluation asks); restates 0.6: above the 95th percentile (0.53) of
  forget01's gold CoT sentences against their answers.

What it deliberately does not do: train a scope classifier (both papers do); the nearest-neighbour
threshold needs no training data beyond the forget questions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cipo_fast.eval.judge import JudgeConfig
from cipo_fast.eval.lexicon import STOP
from cipo_fast.eval.text import normalize


@dataclass(frozen=True)
class Similarity:
    """A text similarity and its thresholds: `fn(a, b)` is the `[len(a), len(b)]` similarity matrix."""

    name: str
    fn: Callable[[Sequence[str], Sequence[str]], np.ndarray]
    scope: float  # a question this close to a forget question is in scope
    restates: float  # a reasoning sentence this close to the target's answer restates it


def minilm_similarity(embed: Callable[[list[str]], np.ndarray]) -> Similarity:
    """Cosine of unit embeddings (`embed`: texts -> `[n, d]`, e.g. `LeakJudge.embed`)."""
    return Similarity(
        "minilm", lambda a, b: embed(list(a)) @ embed(list(b)).T, 0.75, JudgeConfig().restatement
    )


def content_words(text: str) -> set[str]:
    """Normalized words minus stop words."""
    return {w for w in normalize(text).split() if w not in STOP}


def word_overlap(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Cosine of content-word sets: |A & B| / sqrt(|A| |B|), 0 when either is empty."""
    wa, wb = [content_words(t) for t in a], [content_words(t) for t in b]
    out = np.zeros((len(wa), len(wb)), dtype=np.float32)
    for i, x in enumerate(wa):
        for j, y in enumerate(wb):
            if x and y:
                out[i, j] = len(x & y) / math.sqrt(len(x) * len(y))
    return out


WORD_OVERLAP = Similarity("word-overlap", word_overlap, 0.7, 0.6)
