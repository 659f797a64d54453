"""Step-wise CoT similarity, R-TOFU's way: how much of each gold reasoning step the generated CoT reproduces.

Both chains of thought are cut into steps (sentences), and every gold step is matched to its most similar
generated step; an item's score is the mean, over the gold steps, of that best similarity:

    score = (1 / |G|) * sum_i  max_j  sim(gold_i, gen_j)        (0.0 when G or the generated steps are empty)

with two similarities, as in R-TOFU's `compute_cosine_similarity_score` (AI-ISL/R-TOFU @ b8a188af,
`test_cot.py` L25-110):

* cosine of sentence embeddings (`stepwise_cosine`; L64-71: all-MiniLM-L6-v2, `util.pytorch_cos_sim` of
  the [|G|, d] gold and [|H|, d] generated embeddings, then the row max). The embedder is injected: anything
  with `embed(list[str]) -> [n, d]` (`cipo_fast.eval.embedder.Embedder`, or a fake in tests); rows are
  L2-normalized here as `pytorch_cos_sim` does, and cosines are clipped to [-1, 1] against rounding. Not
  clipped at 0: R-TOFU's CoT cosine is not (its answer-level cosine is, see `metrics.answer_cosine`);
* ROUGE-L recall with the gold step as the reference (`stepwise_rouge`; L75-88: `scorer.score(ref_step,
  gen_step).recall` with `use_stemmer=True`), through `cipo_fast.eval.rouge.rouge_l_recall`, which is
  meant to give rouge-score's number (see that module).

The matching is recall-oriented: no threshold, no one-to-one assignment (several gold steps may match the
same generated step), and generated steps that match nothing cost nothing. Every gold step's best match is
kept (`StepScores.matches`: the generated step's index and its similarity, the first index on ties), so a
report can show which generated sentence reproduced which gold step.

Where this differs from R-TOFU's code, deliberately or by necessity:

* steps are `cipo_fast.eval.text.split_sentences`, standing in for NLTK's untrained
  `PunktSentenceTokenizer` (L48-62). Both cut at `.`/`!`/`?` followed by whitespace; `split_sentences` also
  cuts at newlines (Punkt does not) and does not cut after abbreviations such as `Dr.` or `e.g.`, which an
  untrained Punkt knows nothing about (it cuts `Dr. Smith` into `Dr.` and `Smith`);
* no generated steps scores 0.0 under both similarities. R-TOFU's ROUGE path does so (L84); its cosine path
  would fail on an empty matrix, but never meets one, since its generated CoT keeps the literal `<think>`
  tag (`generate_response`, L274-279) and so always has a step.

What it deliberately does not do: decide whether a step leaks a fact (`cipo_fast.eval.leakage`), average
over items (the caller's mean over items is R-TOFU's final number, L102-108), or combine the two scores
(`cipo_fast.eval.metrics.cot_forget_efficacy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cipo_fast.eval.rouge import rouge_l_recall
from cipo_fast.eval.text import split_sentences


def cot_steps(text: str) -> list[str]:
    """A chain of thought's steps: its sentences (`split_sentences`, our stand-in for NLTK Punkt)."""
    return split_sentences(text)


@dataclass(frozen=True)
class StepScores:
    """One item's step-wise score under one similarity."""

    score: float  # mean over gold steps of the best match; 0.0 with no gold or no generated steps
    matches: list[tuple[int | None, float]]  # per gold step: (best generated step or None, its similarity)


def best_matches(similarity: Sequence[Sequence[float]]) -> StepScores:
    """Row-wise best match of a [|gold|, |generated|] similarity matrix (first index on ties), and the mean of
    the row maxima; a row with no columns matches nothing, scoring 0.0."""
    matches: list[tuple[int | None, float]] = []
    for sims in similarity:
        row = [float(s) for s in sims]
        j = max(range(len(row)), key=row.__getitem__) if row else None  # max() keeps the first maximum
        matches.append((j, row[j] if j is not None else 0.0))
    score = sum(s for _, s in matches) / len(matches) if matches else 0.0
    return StepScores(score, matches)


def stepwise_rouge(gold_steps: list[str], generated_steps: list[str]) -> StepScores:
    """ROUGE-L recall of each gold step (the reference) in each generated step, best per gold step."""
    return best_matches([[rouge_l_recall(h, g) for h in generated_steps] for g in gold_steps])


def stepwise_cosine(gold_steps: list[str], generated_steps: list[str], embedder) -> StepScores:
    """Embedding cosine of each gold step with each generated step, best per gold step; one `embed` call,
    none when either side is empty."""
    if not gold_steps or not generated_steps:
        return best_matches([[] for _ in gold_steps])
    texts = gold_steps + generated_steps
    emb = np.asarray(embedder.embed(texts), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(
            f"{type(embedder).__name__}.embed returned shape {emb.shape} for {len(texts)} texts; "
            "expected [n_texts, d]"
        )
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)  # as pytorch_cos_sim
    gold, gen = emb[: len(gold_steps)], emb[len(gold_steps) :]
    return best_matches(np.clip(gold @ gen.T, -1.0, 1.0))  # [|G|, d] @ [d, |H|] -> [|G|, |H|]


@dataclass(frozen=True)
class Stepwise:
    """One item's step-wise comparison of a generated CoT with the gold CoT."""

    gold_steps: list[str]
    generated_steps: list[str]
    rouge: StepScores
    cosine: StepScores | None  # None without an embedder

    def row(self) -> dict:
        """The JSON-ready per-item record: both scores, both step lists and every gold step's best match."""
        return {
            "stepwise_rouge": self.rouge.score,
            "stepwise_cosine": self.cosine.score if self.cosine else None,
            "gold_steps": self.gold_steps,
            "generated_steps": self.generated_steps,
            "rouge_matches": [list(m) for m in self.rouge.matches],
            "cosine_matches": [list(m) for m in self.cosine.matches] if self.cosine else None,
        }


def stepwise(gold_cot: str, generated_cot: str, embedder=None) -> Stepwise:
    """Split both CoTs into steps and score them by ROUGE-L recall and, given an embedder, by cosine."""
    gold, gen = cot_steps(gold_cot), cot_steps(generated_cot)
    return Stepwise(
        gold,
        gen,
        stepwise_rouge(gold, gen),
        stepwise_cosine(gold, gen, embedder) if embedder is not None else None,
    )
