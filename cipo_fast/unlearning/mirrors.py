"""Retain "mirror" pairs: the preference that keeps a retained fact, in the context where a forget pair
removes one.

A forget pair teaches "turn away from the fact here". Under teacher forcing that lesson generalizes to
every question of the same shape, and the retain NLL term barely resists it: the one token where a trace
turns ("From what I know" vs "But I do not") is a small part of a sequence's mean NLL. Mirrors put the
opposite preference on exactly that token for the knowledge to keep. Kinds (`retain_mirror_pairs`):

* `""` (whole trace): a retain item's gold trace over its own redirect, one pair per turn phrase of
  `REDIRECTS` (a forget pair raises its own phrase after the opening, so each phrase needs its mirror);
* each prefill (ZeroThink's empty think block, LessThink's opener) and `AFTER_COT` (the item's gold think
  block as the prefill): the gold answer over the template "I'm not sure" answer -- the forget
  answer-only pairs push down the opening of a factual answer after `</think>` for every author alike;
* `OWN` (`own_mirrors`, built round by round): a retain item's gold trace over a counterfactual trace
  that a forget pair chose, under the retain question -- an own trace usually opens differently from
  the leaking one, so its pair also moves the opening of every question of that shape.

Matching (`mirror_for`): each step's mirrors follow its forget pairs -- a mirror copies a forget pair's
kind and takes the retain pair of that kind whose texts are most alike on both sides (`closest_pair`:
Jaccard overlap of the token sets of the first 48 completion tokens), which in practice means the same
question family, phrasing and turn phrase; ties are drawn by the step's RNG. Half as many answer-only
mirrors of any kind are drawn at random beside them.

Items without a key fact in the answer (and, for the trace kind, in the CoT) get no mirrors. The pool
scan is O(pool x 48) per pick: fine for hundreds of retain items, an index would be wanted for thousands.
"""

from __future__ import annotations

import random

from cipo_fast.data.formats import Pair
from cipo_fast.data.items import Item, is_gsm8k
from cipo_fast.data.packing import Sequence
from cipo_fast.data.tokenize import Tokenizer
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.unlearning.counterfactual import (
    REDIRECTS,
    TEMPLATE_ANSWER,
    CounterfactualConfig,
    redirect_trace,
)
from cipo_fast.unlearning.pairs import OWN, pair_kind

AFTER_COT = "after_cot"  # kind of the retain mirrors that compare answers after the item's gold think block
HEAD_TOKENS = 48


def retain_mirror_pairs(
    items: list[Item],
    tok: Tokenizer,
    cf_cfg: CounterfactualConfig,
    source: str,
    prefills: tuple[str, ...] = (),
) -> dict[str, list[Pair]]:
    """The mirror pairs of retain `items` by kind (`""`, each prefill, `AFTER_COT`; see the module
    docstring); `OWN` is filled later by `own_mirrors`."""
    reasoning = tok.reasoning
    out: dict[str, list[Pair]] = {kind: [] for kind in ("", *prefills, AFTER_COT)}
    for it in items:
        facts = item_facts(it)
        if is_gsm8k(it.answer) or not facts:
            continue
        p_ids = tok.prompt_ids(it.question)
        where = f"{source} (retain item {it.id})"
        answer_prefills = {prefill: prefill for prefill in prefills}
        if it.cot:
            answer_prefills[AFTER_COT] = reasoning.think_block(it.cot.strip())
            if find_leaks(it.cot, facts):
                gold = tok.sequence(p_ids, reasoning.render(it.cot.strip(), it.answer.strip()), where)
                for turn in range(len(REDIRECTS)):  # one per turn phrase: a forget pair raises one of them
                    c = redirect_trace(it, it.cot, facts, turn, cf_cfg)
                    if c is not None:
                        refusal = reasoning.render(c.cot, c.answer)
                        out[""].append(Pair(gold, tok.sequence(p_ids, refusal, where), where))
        for kind, prefill in answer_prefills.items():
            ids = p_ids + tok.text_ids(prefill)
            chosen, rejected = (
                tok.sequence(ids, it.answer.strip(), where),
                tok.sequence(ids, TEMPLATE_ANSWER, where),
            )
            out[kind].append(Pair(chosen, rejected, where))
    return out


def own_mirrors(rows: list[dict], golds: list[Sequence], tok: Tokenizer, source) -> list[Pair]:
    """Mirrors of the `OWN` pairs in `rows`: (a retain item's gold trace, the pair's counterfactual trace
    under that retain question), with the retain trace most like the pair's rejected one."""
    out = []
    rng = random.Random(0)  # ties only; the mirrors are rebuilt identically on resume
    for k, pr in enumerate(r for r in rows if pair_kind(r) == OWN):
        if not golds:
            break
        want = _head(tok.completion_ids(pr["rejected"]))
        gold = _most_alike(golds, [_overlap(want, _head(g.completion_ids)) for g in golds], rng)
        where = f"{source} (own-trace mirror {k + 1})"
        out.append(Pair(gold, tok.sequence(list(gold.prompt_ids), pr["chosen"], where), where))
    return out


def _head(ids, n: int = HEAD_TOKENS) -> set:
    """The token set of a completion's first `n` tokens: traces of the same question family and phrasing
    share most of it except the names and facts."""
    return set(ids[:n])


def _overlap(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def _most_alike(items: list, scores: list[float], rng: random.Random):
    best = max(scores)
    return rng.choice([x for x, score in zip(items, scores) if score == best])


def closest_pair(pair: tuple[Sequence, Sequence], pool: list[Pair], rng: random.Random) -> Pair:
    """The retain pair most like the forget `pair` (chosen, rejected): its chosen (gold) text like the
    forget rejected text and its rejected (refusal) text like the forget chosen text (Jaccard overlap of
    `_head` token sets); ties drawn by `rng`."""
    cho, rej = (_head(s.completion_ids) for s in pair)
    scores = [
        _overlap(rej, _head(p.chosen.completion_ids)) + _overlap(cho, _head(p.rejected.completion_ids))
        for p in pool
    ]
    return _most_alike(pool, scores, rng)


def mirror_for(
    step: list[tuple[str, tuple[Sequence, Sequence]]],
    retain_pairs: dict[str, list[Pair]],
    n: int,
    rng: random.Random,
) -> list:
    """A step's retain mirror pairs. `step` holds (kind, (chosen, rejected)) of the step's forget pairs:
    `n` mirrors follow them (`closest_pair` of a random one's kind), `n` answer-only ones are drawn at
    random from the prefill and `AFTER_COT` kinds."""
    follow = [(kind, pair) for kind, pair in step if retain_pairs.get(kind)]
    if not follow:
        follow = [(k, None) for k, v in retain_pairs.items() if v]
    answers = [k for k, v in retain_pairs.items() if k and k != OWN and v]
    if not follow:
        return []
    picks = []
    for _ in range(n):
        kind, pair = rng.choice(follow)
        pool = retain_pairs[kind]
        picks.append(rng.choice(pool) if pair is None else closest_pair(pair, pool, rng))
    picks += [rng.choice(retain_pairs[rng.choice(answers)]) for _ in range(n)] if answers else []
    return [(p.chosen, p.rejected) for p in picks]
