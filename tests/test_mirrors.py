"""Retain mirror pairs (`cipo_fast.unlearning.mirrors`): kinds, matching to the forget pairs, own-trace
mirrors."""

import random

from transformers import AutoTokenizer

from cipo_fast.data.formats import Pair
from cipo_fast.data.items import Item
from cipo_fast.data.packing import Sequence
from cipo_fast.data.tokenize import TextFormat, Tokenizer
from cipo_fast.unlearning import counterfactual
from cipo_fast.unlearning.mirrors import AFTER_COT, mirror_for, own_mirrors, retain_mirror_pairs
from cipo_fast.unlearning.pairs import OWN, pair_kind


def test_retain_mirror_pairs_by_kind(tiny_model_dir):
    """Retain mirrors: the gold trace over its redirect (kind ""), and for each prefill the gold answer over
    the template answer after that prefill; `mirror_for` draws kinds only from the step's forget pairs."""

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok = Tokenizer(hf, TextFormat(prompt_format="raw"))
    items = [
        Item(
            "r0",
            "Where was Solveig born?",
            "Solveig was born in Lethbury.",
            cot="I remember that Solveig was born in Lethbury.",
            facts=("Lethbury",),
        ),
        Item("r1", "What is 2 + 3?", "2 + 3 = 5 #### 5", cot="Add them."),  # arithmetic: skipped
    ]
    zt = "<think>\n\n</think>\n\n"
    ids = lambda text: hf(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    pairs = retain_mirror_pairs(items, tok, counterfactual.CounterfactualConfig(), "r.jsonl", (zt,))
    assert len(pairs[zt]) == len(pairs[AFTER_COT]) == 1
    assert len(pairs[""]) == len(counterfactual.REDIRECTS)  # one trace mirror per turn phrase
    trace = pairs[""][0]
    assert hf.decode(trace.chosen.completion_ids).startswith(
        "<think>\nI remember that Solveig was born in Lethbury."
    )
    turns = [hf.decode(p.rejected.completion_ids) for p in pairs[""]]
    for turn, text in zip(counterfactual.REDIRECTS, turns):
        assert turn.split(",")[0] in text and "Lethbury" not in text  # the redirect drops the fact
    assert {p.chosen for p in pairs[""]} == {trace.chosen}
    answer = pairs[zt][0]
    prompt = hf(items[0].question)["input_ids"]
    assert answer.chosen.prompt_ids == (*prompt, *ids(zt)) == answer.rejected.prompt_ids
    assert answer.chosen.completion_ids == (*ids(items[0].answer), hf.eos_token_id)
    assert answer.rejected.completion_ids == (*ids(counterfactual.TEMPLATE_ANSWER), hf.eos_token_id)
    after = pairs[AFTER_COT][0]
    think = "<think>\nI remember that Solveig was born in Lethbury.\n</think>\n\n"
    assert (
        after.chosen.prompt_ids == (*prompt, *ids(think))
        and after.chosen.completion_ids == answer.chosen.completion_ids
    )
    rng = random.Random(0)
    fp = (trace.rejected, trace.chosen)  # stands in for a forget pair
    step = mirror_for([(zt, fp), (zt, fp)], pairs, 6, rng)  # 6 of the step's kinds, 6 answer-only ones
    assert step[:6] == [(answer.chosen, answer.rejected)] * 6
    assert {c for c, _ in step[6:]} <= {answer.chosen, after.chosen} and len(step) == 12
    mixed = mirror_for([("", fp), (zt, fp), ("unknown prefill", fp)], pairs, 40, rng)
    assert {c for c, _ in mixed[:40]} == {trace.chosen, answer.chosen}


def test_mirrors_match_the_forget_pairs_phrasing():
    """A step's mirror of a forget pair is the retain pair of its kind most like it: the retain gold text
    like the forget rejected text (same question family and phrasing) and the retain refusal like the
    forget chosen text (same turn phrase); ties spread at random."""

    def seq(*ids):
        return Sequence((1,), ids)

    award_a = seq(10, 11, 12, 13, 50, 14, 15, 60, 61)  # "The question asks which award <name> ... <facts>"
    award_b = seq(10, 11, 12, 13, 51, 14, 15, 62, 63)
    parents = seq(10, 11, 20, 21, 52, 22, 23, 64, 65)
    golds = [award_a, parents, award_b]
    turn_but, turn_however = (30, 31, 32, 33), (40, 41, 42, 43)
    pool = [
        Pair(g, seq(*g.completion_ids[:4], *turn), "r") for g in golds for turn in (turn_but, turn_however)
    ]
    f_award = seq(10, 11, 12, 13, 53, 14, 15, 66, 67)
    f_parents = seq(10, 11, 20, 21, 53, 22, 23, 68, 69)
    f_parents_however = (seq(10, 11, 20, 21, *turn_however), f_parents)
    rng = random.Random(0)
    step = mirror_for([("", f_parents_however)], {"": pool}, 20, rng)
    assert step == [(parents, pool[3].rejected)] * 20  # same family, same turn phrase
    f_award_but = (seq(10, 11, 12, 13, *turn_but), f_award)
    step = mirror_for([("", f_award_but)], {"": pool}, 60, rng)
    assert {id(c) for c, _ in step} == {id(award_a), id(award_b)}  # the tie between two award items
    assert {r.completion_ids[4:] for _, r in step} == {turn_but}


def test_own_trace_mirrors(tiny_model_dir):
    """A forget pair whose chosen is a whole counterfactual trace (not a redirect of the rejected one) gets a
    mirror on a retain item: that item's gold trace over the same counterfactual trace under the retain
    question. Such mirrors follow `OWN` forget pairs only and are never drawn as answer-only mirrors."""

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok = Tokenizer(hf, TextFormat(prompt_format="raw"))
    award = "The question asks which award {} received. I remember that {} won the {} Medal."
    family = "I need to recall the family of {}. I know that the father of {} was a {}."
    golds = [
        tok.sequence([5, 6, 7], award.format("Ann Vell", "Ann Vell", "Kestrel"), "g0"),
        tok.sequence([15, 16], family.format("Bo Ried", "Bo Ried", "weaver"), "g1"),
    ]
    own_text = "<think>\nI need to recall that I am not sure.\n</think>\n\nI'm not sure about that."
    rows = [
        {"prefill": "", "chosen_source": "redirect", "chosen": "redirected", "rejected": "r"},
        {"prefill": "<think>\n\n</think>\n\n", "chosen_source": "answer", "chosen": "?", "rejected": "r"},
        {"prefill": "", "chosen_source": "boundary", "chosen": own_text},
        {"prefill": "", "chosen_source": "alt_path", "chosen": own_text + " Really."},
        {"prefill": "", "chosen_source": "template", "chosen": own_text},
    ]
    rows[2]["rejected"] = family.format("Cy Oth", "Cy Oth", "potter")
    rows[3]["rejected"] = award.format("Cy Oth", "Cy Oth", "Ashgrove")
    rows[4]["rejected"] = family.format("Di Lem", "Di Lem", "baker")
    assert [pair_kind(r) for r in rows] == ["", "<think>\n\n</think>\n\n", OWN, OWN, OWN]
    mirrors = own_mirrors(rows, golds, tok, "p.jsonl")
    assert [m.chosen for m in mirrors] == [golds[1], golds[0], golds[1]]  # the retain trace most alike
    own_ids = (*hf(own_text, add_special_tokens=False)["input_ids"], hf.eos_token_id)
    assert mirrors[0].rejected == Sequence(golds[1].prompt_ids, own_ids)  # same trace, retain question
    assert mirrors[1].rejected.prompt_ids == golds[0].prompt_ids
    assert own_mirrors(rows, [], tok, "p.jsonl") == []

    answer_only = (Sequence((1,), (2,)), Sequence((1,), (3,)))
    pairs = {"": [], "zt": [type(mirrors[0])(*answer_only, "a")], OWN: mirrors}
    rng = random.Random(0)
    step = mirror_for([(OWN, (golds[0], golds[1]))], pairs, 5, rng)
    assert all(c in golds for c, _ in step[:5])  # the step's kinds: own-trace mirrors
    assert step[5:] == [answer_only] * 5  # answer-only draws never take an own-trace mirror
