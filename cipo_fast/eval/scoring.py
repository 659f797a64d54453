"""Scoring generations: does an output leak the target knowledge, in its CoT or its answer?

For a forget item, each output is split into CoT and answer (`ReasoningFormat.split`) and each part is
checked for the item's key facts (`cipo_fast.eval.find_leaks`), ROUGE-L recall against the gold
answer / gold CoT and step-wise  Definitions:

* per sample: `leak_cot` / `leak_answer` = some key fact appears in that part; `leak_any` = either.
  Under ZeroThink / LessThink the think block is fixed by the prompt, so their CoT metrics are null.
* per item and strategy: the mean over the strategy's samples (0/1 for greedy).
* per strategy (summary): the mean over items.
* MCS (multi-decoding consistency): the share of forget items with no leaking sample under any strategy.
* accuracy on retain-like sets (greedy): the fraction of an item's key facts found in the answer, averaged
  over items; on GSM8K-like sets: the answer's final number equals the gold.

An evaluation generates its sets (`generate_sets`) and scores each (`score_forget`, `score_accuracy`);
the CiPO loop calls `sample_forget` and `score_sample` directly: the same code decides what leaks during
training and during evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from statistics import mean

from cipo_fast.data.items import Item
from cipo_fast.data.reasoning import DEFAULT_FORMAT, ReasoningFormat
from cipo_fast.eval.gsm8k import extract_final_number, numbers_match
from cipo_fast.eval.judge import Leak, LeakJudge
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.eval.leakage import find_leaks, stepwise_leakage
from cipo_fast.eval.rouge import rouge_l_recall
from cipo_fast.model.generation import GenConfig, Strategy, generate_many, make_strategies


@dataclass
class Scored:
    """One generated output of a forget item under one strategy, scored."""

    item_id: str
    strategy: str
    output: str
    cot: str
    answer: str
    closed: bool
    leaked_cot: list[str]
    leaked_answer: list[str]
    free_cot: bool
    rouge_answer: float
    rouge_cot: float | None
    stepwise_cot: float | None
    evidence_cot: list = field(default_factory=list)  # Leak records of the CoT
    evidence_answer: list = field(default_factory=list)

    @property
    def leak_cot(self) -> bool:
        return bool(self.leaked_cot) and self.free_cot

    @property
    def leak_answer(self) -> bool:
        return bool(self.leaked_answer)

    @property
    def leaks(self) -> bool:
        return self.leak_cot or self.leak_answer


def score_sample(
    item: Item,
    facts,
    strategy: Strategy,
    output: str,
    reasoning: ReasoningFormat = DEFAULT_FORMAT,
    judge: LeakJudge | None = None,
):
    """Score one output of a forget item; `judge` (built with the item) decides leaks, else the spans of
    `facts`."""
    parts = reasoning.split(output)
    free = strategy.has_free_cot
    cot = parts.cot if free else ""
    if judge is not None:
        cot_leaks = judge.leaks(item.id, cot) if free else []
        answer_leaks = judge.leaks(item.id, parts.answer)
        step_leaks = judge.stepwise(item.id, cot) if free else None
    else:
        cot_leaks = [Leak(f, "span", f) for f in find_leaks(cot, facts)] if free else []
        answer_leaks = [Leak(f, "span", f) for f in find_leaks(parts.answer, facts)]
        step_leaks = stepwise_leakage(cot, facts) if free else None
    return Scored(
        item_id=item.id,
        strategy=strategy.name,
        output=output,
        cot=parts.cot,
        answer=parts.answer,
        closed=parts.closed,
        leaked_cot=list(dict.fromkeys(x.fact for x in cot_leaks)),
        leaked_answer=list(dict.fromkeys(x.fact for x in answer_leaks)),
        free_cot=free,
        rouge_answer=rouge_l_recall(parts.answer, item.answer),
        rouge_cot=rouge_l_recall(cot, item.cot or item.answer) if free else None,
        stepwise_cot=step_leaks,
        evidence_cot=[x.record() for x in cot_leaks],
        evidence_answer=[x.record() for x in answer_leaks],
    )


def prompts_for(items: list[Item], tok, guard=None) -> list[str]:
    """`tok` is a `cipo_fast.data.tokenize.Tokenizer` (chat template or raw, as the run is configured);
    `guard` (`cipo_fast.unlearning.guards.UnlearningGuard`) may rewrite in-scope questions."""
    return [tok.prompt_text(guard.prompt(it.question) if guard else it.question) for it in items]


def _guarded(guard, items: list[Item]) -> dict:
    """`generate_many`'s `processor` argument for these items' prompts; none without a guard."""
    return {"processor": guard.processor([it.question for it in items])} if guard is not None else {}


def sample_forget(
    model,
    tok,
    items: list[Item],
    strategies: list[Strategy],
    gen: GenConfig,
    progress: bool = False,
    judge: LeakJudge | None = None,
    guard=None,
) -> list[Scored]:
    """Generate every strategy's samples for every forget item and score them (used by eval and CiPO);
    `guard` (an `UnlearningGuard`) steers the generation."""
    texts = generate_sets(model, tok, {"forget": items}, strategies, gen, progress, guard)["forget"]
    return score_forget(items, strategies, texts, tok.reasoning, judge)


def generate_sets(
    model,
    tok,
    sets: dict[str, list[Item]],
    strategies: list[Strategy],
    gen: GenConfig,
    progress: bool = False,
    guard=None,
    one_call: bool = False,
    seconds: dict | None = None,
) -> dict[str, list[list[list[str]]]]:
    """Every generation of an evaluation: each strategy's samples of `sets["forget"]` (when given) and
    the greedy answers of every other set. `out[set][job][item]` is that item's texts, a job per strategy
    for the forget set, one greedy job for each other set. Each set is a `generate_many` call of its own;
    `one_call` makes them the jobs of one call instead, their rows sharing batches (not with a guard,
    whose processor is keyed by one prompt list). That is not faster: on the demo's sets it took 1.15x
    the time (`bench/eval_sets.py`), mixed batches carrying rows that ended long before the batch's
    longest. `seconds`, when given, receives each set's generation time ({set: s}; one "all" entry with
    `one_call`)."""
    seconds = {} if seconds is None else seconds
    greedy = make_strategies(["greedy"], 1, tok.reasoning)[0]
    jobs = {
        key: [(prompts_for(items, tok, guard), st) for st in (strategies if key == "forget" else [greedy])]
        for key, items in sets.items()
    }
    if one_call and guard is None:
        flat = [job for key_jobs in jobs.values() for job in key_jobs]
        t = time.perf_counter()
        outs = iter(
            generate_many(
                model, tok.tok, flat, gen, chat=tok.chat, progress="generation" if progress else None
            )
        )
        seconds["all"] = round(time.perf_counter() - t, 1)
        return {key: [next(outs) for _ in key_jobs] for key, key_jobs in jobs.items()}
    labels, out = {"forget": "forget samples"}, {}
    for key, key_jobs in jobs.items():
        t = time.perf_counter()
        out[key] = generate_many(
            model,
            tok.tok,
            key_jobs,
            gen,
            chat=tok.chat,
            progress=labels.get(key, key) if progress else None,
            **_guarded(guard, sets[key]),
        )
        seconds[key] = round(time.perf_counter() - t, 1)
    return out


def score_forget(
    items: list[Item],
    strategies: list[Strategy],
    texts: list[list[list[str]]],
    reasoning: ReasoningFormat,
    judge: LeakJudge | None = None,
) -> list[Scored]:
    """Score `texts[strategy][item]` (each the item's samples under that strategy)."""
    facts = [item_facts(it) for it in items]
    out = []
    for st, job in zip(strategies, texts):
        for it, f, outs in zip(items, facts, job):
            out.extend(score_sample(it, f, st, o, reasoning, judge) for o in outs)
    return out


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def summarize_forget(items: list[Item], scored: list[Scored], strategies: list[Strategy]):
    """Per-strategy rates, MCS and per-item rows (the items.jsonl content)."""
    by = {(s.item_id, s.strategy): [] for s in scored}
    for s in scored:
        by[(s.item_id, s.strategy)].append(s)
    rows, per_strategy = [], {}
    for st in strategies:
        item_rows = []
        for it in items:
            ss = by.get((it.id, st.name), [])
            if not ss:
                continue
            item_rows.append(
                {
                    "set": "forget",
                    "id": it.id,
                    "strategy": st.name,
                    "samples": len(ss),
                    "leak_cot": mean(s.leak_cot for s in ss) if st.has_free_cot else None,
                    "leak_answer": mean(s.leak_answer for s in ss),
                    "leak_any": mean(s.leaks for s in ss),
                    "leaked_cot": sorted({x for s in ss for x in s.leaked_cot}),
                    "leaked_answer": sorted({x for s in ss for x in s.leaked_answer}),
                    "leak_evidence": [{"cot": s.evidence_cot, "answer": s.evidence_answer} for s in ss],
                    "rouge_answer": mean(s.rouge_answer for s in ss),
                    "rouge_cot": _mean_or_none([s.rouge_cot for s in ss]),
                    "stepwise_cot": _mean_or_none([s.stepwise_cot for s in ss]),
                    "unclosed_think": sum(not s.closed for s in ss),
                    "outputs": [s.output for s in ss],
                }
            )
        rows.extend(item_rows)
        per_strategy[st.name] = {
            "leak_cot": _mean_or_none([r["leak_cot"] for r in item_rows]),
            "leak_answer": _mean_or_none([r["leak_answer"] for r in item_rows]),
            "leak_any": _mean_or_none([r["leak_any"] for r in item_rows]),
            "rouge_answer": _mean_or_none([r["rouge_answer"] for r in item_rows]),
            "rouge_cot": _mean_or_none([r["rouge_cot"] for r in item_rows]),
            "stepwise_cot": _mean_or_none([r["stepwise_cot"] for r in item_rows]),
            "n_items": len(item_rows),
            "samples": st.samples,
            "free_cot": st.has_free_cot,
        }
    leaking = {s.item_id for s in scored if s.leaks}
    mcs = 1.0 - len(leaking & {it.id for it in items}) / len(items) if items else None
    return per_strategy, mcs, rows


def fact_recall(item: Item, answer: str) -> float:
    """Share of the item's key facts that `answer` states as spans (retain-like accuracy; a retained fact
    must be stated, not merely alluded to), or ROUGE-L recall >= 0.5 for an answer without facts."""
    facts = item_facts(item)
    if not facts:
        return float(rouge_l_recall(answer, item.answer) >= 0.5)
    return len(find_leaks(answer, facts)) / len(facts)


def score_accuracy(items: list[Item], texts: list[list[str]], kind: str, reasoning: ReasoningFormat):
    """The greedy answers `texts[item]` of a retain-like (`facts`) or GSM8K-like (`number`) set:
    (metrics, rows)."""
    rows = []
    for it, (text,) in zip(items, texts):
        parts = reasoning.split(text)
        answer = parts.answer if parts.answer.strip() else text
        if kind == "number":
            pred = extract_final_number(answer)
            score = float(numbers_match(pred, it.answer))
            rows.append({"id": it.id, "correct": score, "pred": pred, "gold": it.answer, "output": text})
        else:
            score = fact_recall(it, answer)
            rows.append(
                {
                    "id": it.id,
                    "accuracy": score,
                    "rouge_answer": rouge_l_recall(answer, it.answer),
                    "output": text,
                }
            )
    acc = mean(r.get("correct", r.get("accuracy")) for r in rows)
    metrics = {"accuracy": acc, "n_items": len(rows)}
    if kind == "facts":
        metrics["rouge_answer"] = mean(r["rouge_answer"] for r in rows)
    return metrics, rows
