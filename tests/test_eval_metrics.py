"""`cipo_fast.eval.metrics`: today's leak-based summary, R-TOFU's FE / MU, our CFE and the NLI / judge hooks,
on hand-computed cases. hmean(x_1..x_n) = n / sum 1/x_i throughout."""

import pytest

from cipo_fast.eval.metrics import (
    COT_JUDGE_PROMPT,
    SetMeans,
    aggregate,
    answer_cosine,
    cot_forget_efficacy,
    cot_judge_score,
    entailment_score,
    parse_judge_score,
    rtofu_forget_efficacy,
    rtofu_model_utility,
)


def test_aggregate_keeps_todays_summary():
    """greedy: leaks 0.5 / 0.0, ROUGE 0.5 / 0.0 -> parts [0.5, 0.5, 1.0, 1.0]: hmean = 4 / (2+2+1+1) = 2/3;
    utility: accuracies 0.5 and 1.0 -> 2 / (2+1) = 2/3."""
    per_strategy = {"greedy": {"leak_answer": 0.5, "rouge_answer": 0.5, "leak_cot": 0.0, "rouge_cot": 0.0}}
    extra = {"retain": {"accuracy": 0.5}, "utility": {"accuracy": 1.0}}
    out = aggregate(per_strategy, 0.75, extra)
    assert out["forget_efficacy"] == pytest.approx(2 / 3)
    assert out["model_utility"] == pytest.approx(2 / 3)
    assert out["mcs"] == 0.75 and out["strategies"] is per_strategy and out["retain"] == {"accuracy": 0.5}
    no_cot = {"zerothink": {"leak_answer": 0.0, "rouge_answer": 0.5, "leak_cot": None, "rouge_cot": None}}
    assert aggregate(no_cot, None, {})["forget_efficacy"] == pytest.approx(2 / 3)  # [1.0, 0.5]
    assert aggregate(no_cot, None, {})["model_utility"] is None


def test_forget_efficacy_all_terms():
    """R_F = 0.5, CS_F = 0.75, ES_F = 0 -> 1 - x = 0.5, 0.25, 1.0: FE = 3 / (2 + 4 + 1) = 3/7.
    The forget set's token entropy is not a term."""
    out = rtofu_forget_efficacy(SetMeans(rouge=0.5, cosine=0.75, entailment=0.0, token_entropy=0.0))
    assert out == {
        "forget_efficacy": pytest.approx(3 / 7),
        "forget_efficacy_terms": ["rouge", "cosine", "entailment"],
        "forget_efficacy_missing": [],
    }


def test_forget_efficacy_without_entailment_uses_the_available_terms():
    """No NLI model: ES_F missing, FE = hmean(0.5, 0.25) = 2 / (2 + 4) = 1/3, and the result says so.
    Rouge alone: hmean(0.5) = 0.5."""
    out = rtofu_forget_efficacy(SetMeans(rouge=0.5, cosine=0.75))
    assert out["forget_efficacy"] == pytest.approx(1 / 3)
    assert out["forget_efficacy_terms"] == ["rouge", "cosine"]
    assert out["forget_efficacy_missing"] == ["entailment"]
    alone = rtofu_forget_efficacy(SetMeans(rouge=0.5))
    assert alone["forget_efficacy"] == pytest.approx(0.5) and alone["forget_efficacy_missing"] == [
        "cosine",
        "entailment",
    ]


def test_forget_efficacy_is_zero_when_a_term_is_zero():
    """ES_F = 1 (every answer entails the fact) -> 1 - ES_F = 0 -> hmean = 0, however good the others."""
    assert rtofu_forget_efficacy(SetMeans(rouge=0.0, cosine=0.0, entailment=1.0))["forget_efficacy"] == 0


UTILITY = {
    "retain": SetMeans(rouge=0.5, token_entropy=1.0, cosine=0.5, entailment=1.0),  # 1/x: 2+1+2+1 = 6
    "real_authors": SetMeans(rouge=1.0, token_entropy=0.5, cosine=1.0, entailment=0.5),  # 1+2+1+2 = 6
    "world_facts": SetMeans(rouge=0.25, token_entropy=1.0, cosine=1.0, entailment=1.0),  # 4+1+1+1 = 7
}


def test_model_utility_twelve_terms():
    """Sum of reciprocals 6 + 6 + 7 = 19 over 12 terms: MU = 12/19."""
    out = rtofu_model_utility(UTILITY)
    assert out["model_utility"] == pytest.approx(12 / 19)
    assert len(out["model_utility_terms"]) == 12 and out["model_utility_missing"] == []
    assert out["model_utility_terms"][:4] == [
        "retain.rouge",
        "retain.token_entropy",
        "retain.cosine",
        "retain.entailment",
    ]


def test_model_utility_without_entailment_or_a_set():
    """No ES: reciprocals 5 + 4 + 6 = 15 over 9 terms, MU = 9/15 = 0.6. No world-facts set (with ES):
    6 + 6 = 12 over 8 terms, MU = 8/12 = 2/3."""
    no_es = {k: SetMeans(v.rouge, v.cosine, None, v.token_entropy) for k, v in UTILITY.items()}
    out = rtofu_model_utility(no_es)
    assert out["model_utility"] == pytest.approx(0.6)
    assert out["model_utility_missing"] == [f"{s}.entailment" for s in UTILITY]
    two = rtofu_model_utility({k: UTILITY[k] for k in ("retain", "real_authors")})
    assert two["model_utility"] == pytest.approx(2 / 3)
    assert two["model_utility_missing"] == [
        f"world_facts.{m}" for m in ("rouge", "token_entropy", "cosine", "entailment")
    ]
    assert rtofu_model_utility({}) == {
        "model_utility": None,
        "model_utility_terms": [],
        "model_utility_missing": [
            f"{s}.{m}" for s in UTILITY for m in ("rouge", "token_entropy", "cosine", "entailment")
        ],
    }


def test_model_utility_is_zero_when_token_entropy_is_zero():
    sets = {**UTILITY, "world_facts": SetMeans(rouge=0.25, token_entropy=0.0, cosine=1.0, entailment=1.0)}
    assert rtofu_model_utility(sets)["model_utility"] == 0


def test_hmean_matches_scipy():
    """R-TOFU uses scipy.stats.hmean; on the 12 MU terms it gives the same value."""
    hmean = pytest.importorskip("scipy.stats").hmean
    values = [
        getattr(UTILITY[s], m) for s in UTILITY for m in ("rouge", "token_entropy", "cosine", "entailment")
    ]
    assert rtofu_model_utility(UTILITY)["model_utility"] == pytest.approx(float(hmean(values)))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"SetMeans\.cosine = -0\.2 is outside \[0, 1\]"):
        SetMeans(rouge=0.5, cosine=-0.2)
    with pytest.raises(ValueError, match=r"SetMeans\.rouge = nan"):
        SetMeans(rouge=float("nan"))
    with pytest.raises(ValueError, match="unknown sets"):
        rtofu_model_utility({"forget": SetMeans(rouge=0.5)})
    with pytest.raises(ValueError, match=r"stepwise cosine = -1\.5 is outside \[-1, 1\]"):
        cot_forget_efficacy(0.5, -1.5)


def test_cot_forget_efficacy():
    """SR = 0.2, SC = 0.6 -> 0.8, 0.4: CFE = 2 / (1.25 + 2.5) = 8/15. With a judge score 0.5 -> also 0.5:
    3 / (1.25 + 2.5 + 2) = 12/23. A negative mean cosine -0.5 gives the term 1.5: with SR = 0.5,
    2 / (2 + 2/3) = 0.75. SR = 1 (every gold step reproduced) makes CFE 0."""
    out = cot_forget_efficacy(0.2, 0.6)
    assert out == {
        "cot_forget_efficacy": pytest.approx(8 / 15),
        "cot_forget_efficacy_terms": ["stepwise_rouge", "stepwise_cosine"],
        "cot_forget_efficacy_missing": ["judge"],
    }
    assert cot_forget_efficacy(0.2, 0.6, 0.5)["cot_forget_efficacy"] == pytest.approx(12 / 23)
    assert cot_forget_efficacy(0.5, -0.5)["cot_forget_efficacy"] == pytest.approx(0.75)
    assert cot_forget_efficacy(1.0, 0.1)["cot_forget_efficacy"] == 0
    assert cot_forget_efficacy(0.25)["cot_forget_efficacy"] == pytest.approx(0.75)


class RecordingNLI:
    """Entailment = the hypothesis occurs in the premise; records what it was asked."""

    def __init__(self):
        self.asked = []

    def entails(self, premises, hypotheses):
        self.asked.append((list(premises), list(hypotheses)))
        return [h.lower() in p.lower() for p, h in zip(premises, hypotheses)]


def test_entailment_score_direction_and_rouge_override():
    """Forget set: premise = generation, hypothesis = gold. Item 0 states the fact (entailed); item 1
    would be entailed but its ROUGE-L recall 0.05 < 0.1 overrides it (never asked); item 2 does not state
    it. ES = 1/3. On the other sets the gold is the premise: "Basil" is in the gold, so item 1 (ROUGE 0.5)
    is entailed there, item 0 ("The author is Basil" is not in the gold) is not: ES = 1/3."""
    gens = ["The author is Basil", "basil", "I do not know"]
    golds = ["Basil", "Basil", "Basil"]
    nli = RecordingNLI()
    assert entailment_score(nli, gens, golds, [1.0, 0.05, 0.0], forget=True) == pytest.approx(1 / 3)
    assert nli.asked == [(["The author is Basil"], ["Basil"])]
    nli = RecordingNLI()
    assert entailment_score(nli, gens, ["Basil Mahfouz"] * 3, [0.5, 0.5, 0.0], forget=False) == pytest.approx(
        1 / 3
    )
    assert nli.asked == [(["Basil Mahfouz", "Basil Mahfouz"], ["The author is Basil", "basil"])]


def test_entailment_score_without_a_judge_is_missing_not_zero():
    assert entailment_score(None, ["a"], ["a"], [1.0], forget=True) is None
    with pytest.raises(ValueError, match="aligned"):
        entailment_score(None, ["a"], [], [1.0], forget=True)
    with pytest.raises(ValueError, match="no generations"):
        entailment_score(RecordingNLI(), [], [], [], forget=True)


class TableEmbedder:
    def __init__(self, table):
        self.table = table

    def embed(self, texts):
        return [self.table[t] for t in texts]


def test_answer_cosine_is_clipped_at_zero():
    """(3, 4) vs (1, 0): 0.6; (1, 0) vs (-1, 0): -1 -> 0 (R-TOFU's max(0, cos))."""
    emb = TableEmbedder({"a": [3.0, 4.0], "b": [1.0, 0.0], "c": [-1.0, 0.0]})
    assert answer_cosine(emb, ["a", "b"], ["b", "c"]) == pytest.approx([0.6, 0.0])
    assert answer_cosine(emb, [], []) == []


class CannedJudge:
    def __init__(self, replies):
        self.replies = iter(replies)
        self.prompts = []

    def complete(self, prompt):
        self.prompts.append(prompt)
        return next(self.replies)


def test_cot_judge_score():
    """Replies "0.20", "Score: 0.60." and "no idea": two parse, J = (0.2 + 0.6) / 2 = 0.4; an unparseable
    or above-1 reply is dropped, all dropped -> None (not R-TOFU's 0.0)."""
    judge = CannedJudge(["0.20", "Score: 0.60.", "no idea"])
    assert cot_judge_score(
        judge, ["q1", "q2", "q3"], ["a1", "a2", "a3"], ["c1", "c2", "c3"]
    ) == pytest.approx(0.4)
    assert (
        "- Forgotten Knowledge (A): a2\n- Question: q2\n- Generated CoT (after unlearning): c2\n"
        in judge.prompts[1]
    )
    assert COT_JUDGE_PROMPT.startswith("\nYou are evaluating whether a language model")
    assert parse_judge_score("1.50") is None and parse_judge_score("1.00") == 1.0
    assert cot_judge_score(CannedJudge(["none"]), ["q"], ["a"], ["c"]) is None
    assert cot_judge_score(None, ["q"], ["a"], ["c"]) is None
