"""R-TOFU's numbers for one evaluated model, from the rows `cipo-fast eval` scored.

    answer level   per set (forget, retain, real authors, world facts): ROUGE-L recall of the greedy
                   answer vs the gold answer, max(0, cosine) with MiniLM, token entropy (fluency.py);
                   entailment needs an NLI model (`metrics.EntailmentJudge`, not available offline)
                   -> forget efficacy (FE) and model utility (MU), `metrics.rtofu_*`
    CoT level      per forget item with a gold CoT: step-wise ROUGE-L and cosine of the greedy CoT vs the
                   gold CoT (`stepwise`) -> CoT forget efficacy (`metrics.cot_forget_efficacy`, our
                   combination of R-TOFU's step-wise scores)

Only greedy outputs count (R-TOFU's DefaultThink). Every set's gold is its `answer` field; R-TOFU's
real-author / world-fact cosine compares with the full `original_answer` sentence instead, and its answer
cosine uses paraphrase-MiniLM-L6-v2 where ours is all-MiniLM-L6-v2, so those cosines are close to R-TOFU's,
not equal. The result (`summary["rtofu"]`) names the terms each mean used and lacked.
"""

from __future__ import annotations

from statistics import mean

from cipo_fast.data.items import Item
from cipo_fast.eval.fluency import token_entropy
from cipo_fast.eval.metrics import (
    SetMeans,
    answer_cosine,
    cot_forget_efficacy,
    rtofu_forget_efficacy,
    rtofu_model_utility,
)
from cipo_fast.eval.rouge import rouge_l_recall
from cipo_fast.eval.stepwise import stepwise

UTILITY = ("retain", "real_authors", "world_facts")


def rtofu_summary(
    sets: dict[str, list[Item]], rows: list[dict], reasoning, hf_tokenizer, embedder=None
) -> dict:
    """R-TOFU's FE, MU and our CoT FE for the greedy outputs in `rows` (the eval's item rows)."""
    golds = {name: {it.id: it for it in items} for name, items in sets.items()}
    answers: dict[str, list[tuple[Item, str, str]]] = {}  # set -> (item, answer, cot)
    for r in rows:
        name = r.get("set")
        if name == "forget" and r.get("strategy") == "greedy":
            output = r["outputs"][0]
        elif name in UTILITY:
            output = r["output"]
        else:
            continue
        parts = reasoning.split(output)
        answers.setdefault(name, []).append((golds[name][r["id"]], parts.answer, parts.cot))
    means = {name: _set_means(entries, hf_tokenizer, embedder) for name, entries in answers.items()}
    out = {"sets": {k: vars(v) for k, v in means.items()}}
    if "forget" in means:
        out.update(rtofu_forget_efficacy(means["forget"]))
        cots = [(it, cot) for it, _, cot in answers["forget"] if it.cot.strip()]
        if cots:
            steps = [stepwise(it.cot, cot, embedder) for it, cot in cots]
            sr = mean(s.rouge.score for s in steps)
            sc = mean(s.cosine.score for s in steps) if embedder is not None else None
            out.update(stepwise_rouge=sr, stepwise_cosine=sc, **cot_forget_efficacy(sr, sc))
    utility = {k: v for k, v in means.items() if k in UTILITY}
    if utility:
        out.update(rtofu_model_utility(utility))
    return out


def _set_means(entries: list[tuple[Item, str, str]], hf_tokenizer, embedder) -> SetMeans:
    golds = [it.answer for it, _, _ in entries]
    generated = [a for _, a, _ in entries]
    cosine = mean(answer_cosine(embedder, generated, golds)) if embedder is not None else None
    return SetMeans(
        rouge=mean(rouge_l_recall(a, g) for a, g in zip(generated, golds)),
        cosine=cosine,
        token_entropy=mean(token_entropy(a, hf_tokenizer) for a in generated),
    )
