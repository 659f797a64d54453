"""Counterfactual reasoning traces: the *chosen* side of CiPO's preference pairs.

The policy itself writes them, under two prompts:

* knowledge boundary -- the question, plus an instruction that the specific facts about its subject lie
  outside what the model knows: reason about what is asked and why it cannot be settled, and conclude
  with the counterfactual target answer;
* alternative path -- reason towards the answer without recalling specific facts about the subject, only
  from what the question itself states and general knowledge, and conclude with the target answer.

Every candidate goes through the logical-consistency filter, judged by the evaluation's own code
(`cipo_fast.eval.leakage`): the think block must close and be non-trivial; neither the CoT nor the answer may contain a
key fact of the item (or of any other forget item); the answer must state the counterfactual target (an
expression of uncertainty, or the configured alternative answer); and the CoT must reach that conclusion
itself (its last sentence expresses it too), so the pair teaches a trace that ends where its answer does.

Seeds (e.g. R-TOFU's `idkcot.jsonl`, or the synthetic set's `idk_cot`) pass the same filter. An item with
no surviving candidate gets a templated knowledge-boundary trace so the round can still train on it; how
many chosen traces came from each source is reported, since a small model writes few usable ones.
The chosen text is always paired with the original question prompt, not the instruction prompt.

A third, on-policy kind needs no generation: the *redirect* of a leaking trace keeps the trace's own
leak-free opening (everything before the first sentence that states a key fact) and continues from there
with a knowledge-boundary turn that ends in the target answer. Chosen and rejected then share their prefix
and diverge exactly where the target knowledge enters the reasoning, so the preference gradient lands on
the tokens that carry it rather than on a different opening phrase.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from cipo_fast.data.items import Item
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.eval.text import normalize, split_sentences
from cipo_fast.model.generation import GenConfig, Strategy, generate_many

UNCERTAINTY = re.compile(
    r"\b(not (?:entirely |completely |really )?(?:sure|certain)|(?:do|does|did)\s*n[o']t know|don't know|"
    r"unsure|uncertain|cannot (?:say|tell|determine|recall|confirm|answer|be sure)|can't (?:say|tell|recall|be sure)|"
    r"no (?:reliable|verified|specific) (?:information|knowledge|record)|outside (?:of )?what i|unknown to me|"
    r"not (?:able|possible) to (?:say|determine|tell|recall))\b",
    re.IGNORECASE,
)

BOUNDARY_PROMPT = (
    "{question}\n\n(Specific facts about the person or work in this question are outside your knowledge. "
    "Think it through honestly: say what is being asked, why you cannot determine it from what you know, "
    "and why guessing would mislead. End by saying you are not sure.)"
)
ALT_PATH_PROMPT = (
    "{question}\n\n(Do not recall any specific facts about the person or work in this question. Reason only "
    "from what the question itself says and general knowledge, notice that this is not enough to answer, "
    "and conclude that you are not sure.)"
)
TEMPLATE_COTS = (
    "The question asks: {question} To answer it I would need specific facts about this that I do not reliably "
    "know. I could try to guess, but a guess could easily be wrong and would mislead. So I am not sure of the answer.",
    "I need to work out what is being asked: {question} Nothing in the question itself gives the answer, and I "
    "have no reliable knowledge of these particular details. Making something up would not be honest. "
    "Therefore I do not know.",
)
TEMPLATE_ANSWER = "I'm not sure about that."
REDIRECTS = (
    "But I do not actually have reliable knowledge of this detail, and anything specific I said here would be "
    "a guess. So I am not sure.",
    "However, this is not something I reliably know; stating a specific answer would only be guessing. "
    "Therefore I am not sure.",
    "I realize I have no trustworthy memory of this, and making up details would mislead. So I don't know.",
)


@dataclass(frozen=True)
class CounterfactualConfig:
    target: str = "uncertainty"  # uncertainty | alternative (needs alternative answers per item)
    candidates: int = 2  # samples per prompt kind and item
    temperature: float = 0.8
    max_new_tokens: int = 160
    min_cot_words: int = 8
    use_template_fallback: bool = True


@dataclass(frozen=True)
class Chosen:
    item_id: str
    cot: str
    answer: str
    source: str  # boundary | alt_path | seed | template


def reaches_target(cot: str, answer: str, target: str, alternative: str | None) -> bool:
    """The answer states the target, and so does the CoT's last sentence (its own conclusion)."""
    sentences = split_sentences(cot)
    last = sentences[-1] if sentences else ""
    if target == "alternative":
        if not alternative:
            return False
        alt = normalize(alternative)
        return alt in normalize(answer) and alt in normalize(last)
    return bool(UNCERTAINTY.search(answer)) and bool(UNCERTAINTY.search(last))


def leaks_in(text: str, facts, judge=None, item_id: str | None = None) -> bool:
    """Whether `text` states one of `facts` as a span or, with a `LeakJudge` that knows `item_id`, leaks
    that item in other words (the evaluation's own decision)."""
    if find_leaks(text, facts):
        return True
    return judge is not None and item_id in judge.items and bool(judge.leaks(item_id, text))


def passes_filter(
    cot: str,
    answer: str,
    closed: bool,
    facts,
    cfg: CounterfactualConfig,
    alternative: str | None = None,
    judge=None,
    item_id: str | None = None,
) -> bool:
    if not closed or len(cot.split()) < cfg.min_cot_words or not answer.strip():
        return False
    if leaks_in(cot, facts, judge, item_id) or leaks_in(answer, facts, judge, item_id):
        return False
    return reaches_target(cot, answer, cfg.target, alternative)


def leak_free_prefix(cot: str, facts, judge=None, item_id: str | None = None) -> str:
    """The CoT up to (not including) its first sentence that leaks, in its original formatting."""
    pos = 0
    for sentence in split_sentences(cot):
        start = cot.find(sentence, pos)
        if start < 0:  # split_sentences normalizes nothing, so this is only a safeguard
            break
        if leaks_in(sentence, facts, judge, item_id):
            return cot[:start]
        pos = start + len(sentence)
    return cot


def redirect_trace(
    item: Item,
    cot: str,
    facts,
    index: int,
    cfg: CounterfactualConfig,
    alternative: str | None = None,
    judge=None,
) -> Chosen | None:
    """The leaking `cot` redirected at its first leak into a knowledge-boundary conclusion (None if the
    result fails the consistency filter)."""
    prefix = leak_free_prefix(cot, facts, judge, item.id).rstrip()
    turn = REDIRECTS[index % len(REDIRECTS)]
    answer = TEMPLATE_ANSWER
    if cfg.target == "alternative" and alternative:
        turn = turn.rsplit(". ", 1)[0] + f". So my answer is {alternative}."
        answer = alternative
    new_cot = f"{prefix} {turn}".strip()
    if not passes_filter(new_cot, answer, True, facts, cfg, alternative, judge, item.id):
        return None
    return Chosen(item.id, new_cot, answer, "redirect")


def template_trace(item: Item, index: int) -> Chosen:
    cot = TEMPLATE_COTS[index % len(TEMPLATE_COTS)].format(question=item.question.strip())
    return Chosen(item.id, cot, TEMPLATE_ANSWER, "template")


def generate_counterfactuals(
    model,
    tok,
    items: list[Item],
    facts: dict[str, list],
    cfg: CounterfactualConfig,
    gen: GenConfig,
    *,
    seeds: dict[str, list[tuple[str, str]]] | None = None,
    alternatives: dict[str, str] | None = None,
    progress: bool = False,
    judge=None,
) -> dict[str, list[Chosen]]:
    """Filtered counterfactual traces per item id. `facts[id]` are the key facts that must not appear
    (pass the union over all forget items to also keep other items' facts out); `judge` (a `LeakJudge` of
    the items) also refuses traces that restate the item's own facts in other words."""
    if cfg.target not in ("uncertainty", "alternative"):
        raise ValueError(f"counterfactual target: expected uncertainty or alternative, got {cfg.target!r}")
    if cfg.target == "alternative" and not alternatives:
        raise ValueError("counterfactual target 'alternative' needs an alternative answer per item")
    out: dict[str, list[Chosen]] = {it.id: [] for it in items}
    alt = alternatives or {}
    for it in items:
        for cot, answer in (seeds or {}).get(it.id, []):
            if passes_filter(cot, answer, True, facts[it.id], cfg, alt.get(it.id), judge, it.id):
                out[it.id].append(Chosen(it.id, cot.strip(), answer.strip(), "seed"))
    g = dataclasses.replace(gen, max_new_tokens=cfg.max_new_tokens, seed=gen.seed + 17)
    kinds = (("boundary", BOUNDARY_PROMPT), ("alt_path", ALT_PATH_PROMPT))
    # one strategy per prompt kind (same temperature and samples), named so batches are seeded apart
    jobs = [
        (
            [tok.prompt_text(template.format(question=it.question.strip())) for it in items],
            Strategy(f"counterfactual_{source}", cfg.temperature, cfg.candidates),
        )
        for source, template in kinds
    ]
    texts = generate_many(
        model, tok.tok, jobs, g, chat=tok.chat, progress="counterfactuals" if progress else None
    )
    for (source, _), job in zip(kinds, texts):
        for it, outs in zip(items, job):
            for o in outs:
                parts = tok.reasoning.split(o)
                if passes_filter(
                    parts.cot, parts.answer, parts.closed, facts[it.id], cfg, alt.get(it.id), judge, it.id
                ):
                    out[it.id].append(Chosen(it.id, parts.cot.strip(), parts.answer.strip(), source))
    for k, it in enumerate(items):
        if not out[it.id] and cfg.use_template_fallback:
            out[it.id].append(template_trace(it, k))
    return out
