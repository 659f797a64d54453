"""`cipo_fast.eval.stepwise`: R-TOFU's step-wise CoT scores on hand-made cases with a fake embedder, and
properties of the best-match reduction."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.eval.stepwise import best_matches, cot_steps, stepwise, stepwise_cosine, stepwise_rouge


class FakeEmbedder:
    """Looks each text up in a table of (not necessarily unit) vectors; records every call."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return [self.table[t] for t in texts]


ALPHA, BETA, GAMMA = "Alpha.", "Beta.", "Gamma."
VECTORS = {ALPHA: [1.0, 0.0], BETA: [0.0, 2.0], GAMMA: [3.0, 4.0]}  # unit: (1,0), (0,1), (0.6,0.8)


def test_cosine_best_match_per_gold_step():
    """gold = [Alpha, Beta], generated = [Gamma, Alpha]; after normalization alpha = (1, 0),
    beta = (0, 1), gamma = (0.6, 0.8), so the [gold x generated] cosine matrix is

        alpha: [0.6, 1.0] -> best index 1, 1.0
        beta:  [0.8, 0.0] -> best index 0, 0.8

    and the score is (1.0 + 0.8) / 2 = 0.9. One `embed` call, gold steps first."""
    emb = FakeEmbedder(VECTORS)
    s = stepwise_cosine([ALPHA, BETA], [GAMMA, ALPHA], emb)
    assert s.score == pytest.approx(0.9)
    assert [j for j, _ in s.matches] == [1, 0]
    assert [c for _, c in s.matches] == pytest.approx([1.0, 0.8])
    assert emb.calls == [[ALPHA, BETA, GAMMA, ALPHA]]


def test_cosine_is_not_clipped_at_zero():
    """gold [Alpha] vs generated [-Alpha]: cosine -1, kept (R-TOFU's CoT cosine is not clipped)."""
    emb = FakeEmbedder({ALPHA: [1.0, 0.0], "Anti.": [-5.0, 0.0]})
    assert stepwise_cosine([ALPHA], ["Anti."], emb).score == pytest.approx(-1.0)


def test_rouge_best_match_per_gold_step():
    """gold steps "The author was born in Kuwait." (6 tokens) and "He writes poems." (3 tokens); generated
    "The author is from Kuwait." and "He writes many poems.".

        gold 0 vs gen 0: LCS = the author kuwait = 3 -> 3/6 = 0.5;  vs gen 1: no common token -> 0
        gold 1 vs gen 0: 0;  vs gen 1: LCS = he writes poems = 3 -> 3/3 = 1.0

    matches [(0, 0.5), (1, 1.0)], score 0.75."""
    gold = ["The author was born in Kuwait.", "He writes poems."]
    gen = ["The author is from Kuwait.", "He writes many poems."]
    s = stepwise_rouge(gold, gen)
    assert s.score == pytest.approx(0.75)
    assert [j for j, _ in s.matches] == [0, 1]
    assert [r for _, r in s.matches] == pytest.approx([0.5, 1.0])


def test_many_to_one_and_no_threshold():
    """gold "Kuwait City." and "Kuwait." both find all their tokens in the one generated step
    "He was born in Kuwait City." (2/2 and 1/1): both match index 0, score 1.0. A gold step with a single
    weak match still counts it: "born in 1956." vs that step: LCS = born in = 2/3."""
    s = stepwise_rouge(["Kuwait City.", "Kuwait."], ["He was born in Kuwait City."])
    assert s.matches == [(0, 1.0), (0, 1.0)] and s.score == 1.0
    assert stepwise_rouge(["born in 1956."], ["He was born in Kuwait City."]).score == pytest.approx(2 / 3)


def test_no_generated_steps_scores_zero_without_embedding():
    emb = FakeEmbedder(VECTORS)
    for s in (stepwise_rouge([ALPHA, BETA], []), stepwise_cosine([ALPHA, BETA], [], emb)):
        assert s.score == 0.0 and s.matches == [(None, 0.0), (None, 0.0)]
    assert emb.calls == []
    for s in (stepwise_rouge([], [ALPHA]), stepwise_cosine([], [ALPHA], emb)):
        assert s.score == 0.0 and s.matches == []
    assert emb.calls == []


def test_stepwise_splits_both_cots_and_records_matches():
    """gold CoT "Alpha. Beta." and generated "Gamma. Alpha." split into the steps of the cosine case above;
    by ROUGE-L, "alpha" is found only in generated step 1 (1.0) and "beta" nowhere (index 0 on the tie at
    0.0), score 0.5. The row is JSON-ready."""
    res = stepwise("Alpha. Beta.", "Gamma.\nAlpha.", FakeEmbedder(VECTORS))
    assert res.gold_steps == [ALPHA, BETA] and res.generated_steps == [GAMMA, ALPHA]
    row = res.row()
    assert row["stepwise_rouge"] == pytest.approx(0.5)
    assert row["stepwise_cosine"] == pytest.approx(0.9)
    assert row["rouge_matches"] == [[1, 1.0], [0, 0.0]]
    assert [m[0] for m in row["cosine_matches"]] == [1, 0]
    json.dumps(row)
    bare = stepwise("Alpha. Beta.", "").row()
    assert bare["stepwise_cosine"] is None and bare["cosine_matches"] is None
    assert bare["stepwise_rouge"] == 0.0 and bare["rouge_matches"] == [[None, 0.0], [None, 0.0]]


def test_cot_steps_are_sentences():
    assert cot_steps("Dr. Smith wrote it. He was born in 1956.\nSo the answer is yes!") == [
        "Dr. Smith wrote it.",
        "He was born in 1956.",
        "So the answer is yes!",
    ]


def test_bad_embedder_output_is_reported():
    class Short:
        def embed(self, texts):
            return [[1.0, 0.0]]

    with pytest.raises(ValueError, match=r"Short\.embed returned shape"):
        stepwise_cosine([ALPHA], [BETA], Short())


rows = st.lists(
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=0, max_size=5), min_size=0, max_size=5
).filter(lambda m: len({len(r) for r in m}) <= 1)  # a rectangular [gold, generated] matrix


@settings(deadline=None, max_examples=200)
@given(rows)
def test_best_matches_is_the_mean_of_row_maxima(matrix):
    s = best_matches(matrix)
    assert len(s.matches) == len(matrix)
    for row, (j, v) in zip(matrix, s.matches):
        if row:
            assert v == max(row) and j == row.index(max(row))  # the first maximum
        else:
            assert (j, v) == (None, 0.0)
    assert s.score == pytest.approx(sum(v for _, v in s.matches) / len(matrix) if matrix else 0.0)


@settings(deadline=None, max_examples=200)
@given(rows, st.lists(st.floats(-1, 1, allow_nan=False), min_size=0, max_size=5))
def test_extra_generated_steps_never_lower_the_score(matrix, extra):
    """Recall-oriented: a generated step that matches nothing costs nothing (adding a column can only raise
    row maxima)."""
    if not matrix or not matrix[0]:
        return
    wider = [[*row, extra[i % len(extra)]] if extra else row for i, row in enumerate(matrix)]
    assert best_matches(wider).score >= best_matches(matrix).score - 1e-12
