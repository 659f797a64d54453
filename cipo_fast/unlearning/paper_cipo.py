"""CiPO as its paper describes it (ACL 2026, "Counterfactual Unlearning for Large Reasoning Models through
Iterative Preference Optimization"): a fixed set of counterfactual traces, written once, as the preferred
side of every round.

For each forget item the model itself

1. writes a *counterfactual answer* -- the gold answer with the forgotten fact changed (`ANSWER_PROMPT`);
2. reasons *backwards* to a coherent CoT that ends in that answer (`BACKWARD_PROMPT`).

A candidate is kept when its answer differs from the gold one and, like its CoT, states no key fact of any
forget item (spans, and the meaning-aware judge when given), and the CoT reaches the counterfactual answer
(its last sentence contains the answer's changed fact). A small model writes few usable ones, so an item
without a surviving candidate falls back to a deterministic swap (`swap_facts`: each fact of the gold
answer replaced by a made-up one of its kind -- a year and day moved, a number changed, a person, place,
award, title, profession or genre from `FALLBACKS`) and a templated backward CoT, and an item whose facts
cannot be swapped in place to the engine's uncertainty template; the sources are counted in the run's
records.

Training then follows the paper: a warm-up SFT stage on the counterfactual traces (+ retain NLL), then
rounds in which the current model's own sampled response to each forget question is the dispreferred side
against the item's fixed counterfactual trace, under a SimPO-style reference-free preference term + NLL on
the counterfactual + the retain NLL (`cipo_fast.train.losses.simpo`, `chosen_nll_weight`, the step's
retain term). No reference model and no reference pass exist in this variant.

The engine's variant (`trainers/cipo.py`) differs: its chosen traces are regenerated every round and are
uncertainty conclusions or redirects of the policy's own leaking traces, only *leaking* samples are
rejected, DPO runs against the round-start policy, and retain mirror pairs keep retain traces apart from
the forget ones.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from cipo_fast.data.items import Item
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.eval.text import normalize, split_sentences
from cipo_fast.model.generation import GenConfig, Strategy, generate_many

ANSWER_PROMPT = (
    "Question: {question}\nTrue answer: {answer}\n\nWrite a different answer to the question, in the same "
    "form and length as the true answer, that changes the key fact ({facts}) to another plausible one. "
    "Reply with the new answer only."
)
BACKWARD_PROMPT = (
    "Question: {question}\nAnswer: {answer}\n\nReason step by step from what the question asks to this "
    "answer, as if it were what you remember, so that your reasoning ends with exactly this answer."
)
TEMPLATE_BACKWARD = (
    "The question asks: {question} What I remember of this: {answer} So the answer is: {answer}"
)
# made-up replacements by what a fact is, tried in order until one is no forget item's fact
FALLBACKS = {
    "person": ("Orla Brennick", "Tavin Marlowe", "Sefa Okonkwo-Lind", "Brannoc Ives"),
    "place": ("Quillmoor", "Dunhaven", "Ostrava Vale", "Keldport"),
    "award": ("Orrin Vale Prize", "Marrow Street Medal", "Greywater Award"),
    "title": ("The Salt Between Us", "A Lantern for Winter", "Echoes of Marrow Street", "The Glass Orchard"),
    "profession": ("cartographer", "beekeeper", "glassblower", "lighthouse keeper", "bookbinder"),
    "genre": ("historical fiction", "travel writing", "epic poetry", "science fiction", "satire"),
    "term": ("historical fiction", "cartographer", "travel writing", "beekeeper"),
}


_BEFORE = {  # what the words before a fact say it is
    "profession": re.compile(r"\b(?:was|is|as|worked as|works as)\s+an?\s+$", re.IGNORECASE),
    "genre": re.compile(r"\b(?:works? of|writes|genre(?: of)?|in the genre of)\s+$", re.IGNORECASE),
    "title": re.compile(r"\b(?:wrote|example|titled|called|and|books?)\s+$", re.IGNORECASE),
    "place": re.compile(r"\b(?:in|from|at|near)\s+(?:the\s+)?$", re.IGNORECASE),
}


def fact_role(fact, answer: str) -> str:
    """What `fact` is in `answer`, for its replacement: from the lexicon (professions, genres, award
    words), else from the words before it (`_BEFORE`: "was a", "works of", "wrote", "born in"), else a
    title when it starts with an article, else a person (or a generic term)."""
    from cipo_fast.eval.lexicon import AWARD_WORDS, GENRES, PROFESSIONS

    low = fact.text.lower()
    if low in {p.lower() for p in PROFESSIONS}:
        return "profession"
    if any(g.lower() == low for g in GENRES):
        return "genre"
    if set(low.split()) & AWARD_WORDS:
        return "award"
    if fact.kind == "place":
        return "place"
    at = answer.lower().find(low)
    before = answer[:at] if at >= 0 else ""
    for role, pattern in _BEFORE.items():
        if pattern.search(before):
            return role
    if fact.kind == "title" or low.split()[0] in ("the", "a", "an"):
        return "title"
    return "term" if fact.kind == "term" else "person"


@dataclass(frozen=True)
class Counterfactual:
    """An item's fixed preferred trace: the counterfactual answer and the CoT reasoned back from it."""

    item_id: str
    cot: str
    answer: str
    source: str  # model | swap


def _changed(old: str, new: str) -> str:
    """The words of `new` that are not in `old` (the changed fact, for the reaches-the-answer check)."""
    seen = set(normalize(old).split())
    return " ".join(w for w in normalize(new).split() if w not in seen)


def _shift_date(text: str, k: int) -> str:
    """Every year moved by 7 + k and every day-sized number by 3 + k (within 1..28): a date leaks through
    its month and day alone, so both change."""

    def shift(m: re.Match) -> str:
        n = int(m.group(0))
        return str(n + 7 + k) if n >= 1000 else str((n + 2 + k) % 28 + 1)

    return re.sub(r"\b\d{1,4}\b", shift, text)


def swap_facts(answer: str, facts, forbidden, k: int = 0) -> str | None:
    """`answer` with each fact replaced by a made-up one of its kind (dates: year + 7 + k, day + 3 + k;
    numbers: + 3 + k; people, places, awards, titles, professions, genres: `FALLBACKS` by `fact_role`,
    each replacement different from the answer's other words and from every `forbidden` fact); None when
    the result still states a `forbidden` fact."""
    out = answer
    for f in facts:
        if f.kind == "date":
            out = out.replace(f.text, _shift_date(f.text, k)) if f.text in out else _shift_date(out, k)
            continue
        if f.kind == "number" and re.fullmatch(r"\d+", f.text.strip()):
            out = re.sub(rf"\b{re.escape(f.text.strip())}\b", str(int(f.text) + 3 + k), out)
            continue
        options = FALLBACKS[fact_role(f, answer)]
        for j in range(len(options)):
            cand = options[(k + j) % len(options)]
            swapped = re.sub(re.escape(f.text), cand, out, flags=re.IGNORECASE)
            if swapped != out and not find_leaks(cand, forbidden) and normalize(cand) not in normalize(out):
                out = swapped
                break
    if normalize(out) == normalize(answer) or find_leaks(out, forbidden):
        return None
    return out


def _ok(cot: str, answer: str, gold: str, forbidden, judge, item_id: str) -> bool:
    from cipo_fast.unlearning.counterfactual import leaks_in

    if not answer.strip() or normalize(answer) == normalize(gold):
        return False
    if leaks_in(answer, forbidden, judge, item_id) or (cot and leaks_in(cot, forbidden, judge, item_id)):
        return False
    if not cot:
        return True
    sentences = split_sentences(cot)
    changed = _changed(gold, answer)
    return bool(sentences) and bool(changed) and changed in normalize(sentences[-1])


def write_counterfactuals(
    model,
    tok,
    items: list[Item],
    facts: dict[str, list],
    gen: GenConfig,
    *,
    candidates: int = 2,
    temperature: float = 0.8,
    judge=None,
    progress: bool = False,
) -> dict[str, Counterfactual]:
    """One fixed counterfactual trace per item: the model's counterfactual answer and backward CoT (the
    first candidate pair that passes the checks), else the swap fallback. `facts[id]` are the item's key
    facts; every forget item's facts are forbidden in every trace."""
    forbidden = [f for fs in facts.values() for f in fs]
    g = dataclasses.replace(gen, seed=gen.seed + 23)
    prompts = [
        tok.prompt_text(
            ANSWER_PROMPT.format(
                question=it.question.strip(),
                answer=it.answer.strip(),
                facts=", ".join(f.text for f in facts[it.id]) or "the answer",
            )
        )
        for it in items
    ]
    block = tok.reasoning.think_block("")  # answers are written without thinking
    answers = generate_many(
        model,
        tok.tok,
        [(prompts, Strategy("paper_cf_answer", temperature, candidates, prefill=block))],
        g,
        chat=tok.chat,
        progress="counterfactual answers" if progress else None,
    )[0]
    alts: dict[str, list[str]] = {}
    for it, outs in zip(items, answers):
        for o in outs:
            a = tok.reasoning.split(o).answer.strip().split("\n")[0].strip()
            if _ok("", a, it.answer, forbidden, judge, it.id) and a not in alts.get(it.id, []):
                alts.setdefault(it.id, []).append(a)
    todo = [(it, a) for it in items for a in alts.get(it.id, [])]
    cots = generate_many(
        model,
        tok.tok,
        [
            (
                [
                    tok.prompt_text(BACKWARD_PROMPT.format(question=it.question.strip(), answer=a))
                    for it, a in todo
                ],
                Strategy("paper_cf_backward", temperature, 1),
            )
        ],
        g,
        chat=tok.chat,
        progress="backward reasoning" if progress and todo else None,
    )[0]
    out: dict[str, Counterfactual] = {}
    for (it, a), (o,) in zip(todo, cots):
        parts = tok.reasoning.split(o)
        cot = parts.cot.strip()
        if it.id not in out and parts.closed and _ok(cot, a, it.answer, forbidden, judge, it.id):
            out[it.id] = Counterfactual(it.id, cot, a, "model")
    for k, it in enumerate(items):
        if it.id in out:
            continue
        for j in range(4):
            a = swap_facts(it.answer, facts[it.id], forbidden, k + j)
            if a is None:
                continue
            cot = TEMPLATE_BACKWARD.format(question=it.question.strip(), answer=a)
            out[it.id] = Counterfactual(it.id, cot, a, "swap")
            break
        else:  # no fact could be changed in place: the engine's uncertainty template
            from cipo_fast.unlearning.counterfactual import template_trace

            t = template_trace(it, k)
            out[it.id] = Counterfactual(it.id, t.cot, t.answer, "template")
    return out


def own_response_pairs(
    scored, counterfactuals: dict[str, Counterfactual], items: dict[str, Item], per_item: int, reasoning
) -> list[dict]:
    """Pair rows of one round (rendered texts, as `tokenize_pairs` reads them): each item's fixed
    counterfactual trace (chosen, rendered by `reasoning`) against the current model's own sampled outputs
    exactly as generated (rejected, leaking or not: the paper's on-policy dispreferred side), at most
    `per_item` per item; an output identical to the counterfactual is skipped."""
    rows, count = [], {}
    for x in scored:
        cf = counterfactuals.get(x.item_id)
        if cf is None or count.get(x.item_id, 0) >= per_item:
            continue
        chosen = reasoning.render(cf.cot, cf.answer)
        if normalize(x.output) == normalize(chosen):
            continue
        count[x.item_id] = count.get(x.item_id, 0) + 1
        rows.append(
            {
                "id": x.item_id,
                "prompt": items[x.item_id].question,
                "prefill": "",  # the rejected side is the whole output: a forced think block is part of it
                "chosen": chosen,
                "rejected": x.output,
                "strategy": x.strategy,
                "rejected_leaks": bool(x.leaks),
                "chosen_source": cf.source,
            }
        )
    return rows
