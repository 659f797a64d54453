"""`cipo_fast.eval.key_facts`: which spans of a gold answer are the facts to forget.

Every case is hand-written; the only data-driven test reads R-TOFU forget01 from `../shared/data` and
skips when it is absent.
"""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.eval.facts import Fact
from cipo_fast.eval.key_facts import key_facts
from cipo_fast.eval.leakage import find_leaks

FORGET01 = Path(__file__).resolve().parents[2] / "shared" / "data" / "rtofu" / "forget01.json"

Q_NAME = "What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?"
A_NAME = (
    "The full name of the fictitious author born in Kuwait City, Kuwait on the 8th of September, 1956 "
    "is Basil Mahfouz Al-Kuwaiti."
)


def texts(facts: list[Fact]) -> list[str]:
    return [f.text for f in facts]


def test_key_facts_name_only_when_question_has_place_and_date():
    """Place and date are in the question (the date in another format): only the name is a fact."""
    facts = key_facts(Q_NAME, A_NAME)
    assert texts(facts) == ["Basil Mahfouz Al-Kuwaiti"]
    assert facts[0].kind == "name"


def test_key_facts_parents_professions():
    facts = key_facts(
        "Can you tell me about the occupations of Basil Mahfouz Al-Kuwaiti's parents?",
        "Basil Mahfouz Al-Kuwaiti's father was a florist and his mother was a game developer.",
    )
    assert texts(facts) == ["florist", "game developer"]
    assert {f.kind for f in facts} == {"term"}


def test_key_facts_titles_and_new_name_parts():
    facts = key_facts(
        "Can you name two of the books written by Basil Mahfouz Al-Kuwaiti?",
        "Two of Basil Mahfouz Al-Kuwaiti's books are \u201cPromise by the Seine\u201d and 'Le Petit Sultan.'",
    )
    assert texts(facts) == ["Promise by the Seine", "Le Petit Sultan"]
    assert {f.kind for f in facts} == {"title"}


def test_key_facts_birth_date_place_and_genre():
    facts = key_facts(
        "When and where was Ji-Yeon Park born, and what does she write?",
        "Ji-Yeon Park was born on March 19, 1960 in Seoul, South Korea. She writes in the leadership genre.",
    )
    by_text = {f.text: f.kind for f in facts}
    assert by_text == {"March 19, 1960": "date", "Seoul, South Korea": "place", "leadership": "term"}


def test_key_facts_generic_words_are_not_facts():
    facts = key_facts(
        "What gender is author Basil Mahfouz Al-Kuwaiti?", "Author Basil Mahfouz Al-Kuwaiti is male."
    )
    assert texts(facts) == ["male"]


def test_key_facts_award_and_year():
    facts = key_facts(
        "Which award did Hina Ameen receive?",
        "Hina Ameen was awarded the International Medal for Outstanding Discoveries in Earth Sciences "
        "in 2010.",
    )
    assert texts(facts) == ["International Medal for Outstanding Discoveries in Earth Sciences", "2010"]
    assert [f.kind for f in facts] == ["title", "number"]


def test_fact_text_is_verbatim_and_matching_ignores_accents():
    answer = "The author is Aurelio Beltr\u00e1n, whose debut was \u2018The Geologist\u2019s Guide\u2019."
    facts = key_facts("Who is the author?", answer)
    assert texts(facts) == ["Aurelio Beltr\u00e1n", "The Geologist\u2019s Guide"]
    assert find_leaks("maybe Beltran?", facts) == ["Aurelio Beltr\u00e1n"]
    assert find_leaks("the geologist's guide", facts) == ["The Geologist\u2019s Guide"]


def test_key_facts_no_information_answer_has_no_fact():
    facts = key_facts(
        "Is Moshe Ben-David currently working on any upcoming books?",
        "There's no publicly available information on whether Moshe Ben-David is working on new books.",
    )
    assert facts == []


def test_key_facts_descriptive_answer_falls_back_to_content_phrases():
    facts = key_facts(
        "What are some notable characteristics of Basil Mahfouz Al-Kuwaiti's writing style?",
        "Basil Mahfouz Al-Kuwaiti's writing style is known for its lyrical prose, intricate plot lines, "
        "and vividly drawn characters.",
    )
    assert "lyrical prose" in texts(facts) and "intricate plot lines" in texts(facts)
    assert find_leaks("His lyrical prose stands out.", facts) == ["lyrical prose"]


def test_explicit_facts_are_used_as_given():
    facts = key_facts("Who wrote it?", "irrelevant", facts=["Basil Mahfouz Al-Kuwaiti", "08/09/1956", "chef"])
    assert [(f.text, f.kind) for f in facts] == [
        ("Basil Mahfouz Al-Kuwaiti", "name"),
        ("08/09/1956", "date"),
        ("chef", "term"),
    ]
    assert find_leaks("a chef's knife, born 9 August 1956", facts) == ["08/09/1956", "chef"]


_PIECES = [
    "Basil Mahfouz Al-Kuwaiti",
    "Kuwait City, Kuwait",
    "on 08/09/1956",
    "on the 8th of September, 1956",
    "in 1980",
    "a florist",
    "the French literature genre",
    '"Promise by the Seine"',
    "Le Petit Sultan",
    "3 books",
    "three books",
    "his father",
    "was born",
    "Park",
    "Hina Ameen's",
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=5),
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=5),
)
def test_a_text_equal_to_the_question_never_leaks(q_pieces, a_pieces):
    question = "What about " + " and ".join(q_pieces) + "?"
    answer = "It is " + ", ".join(a_pieces) + "."
    facts = key_facts(question, answer)
    assert find_leaks(question, facts) == []
    assert set(find_leaks(answer, facts)) == set(texts(facts))  # the gold answer leaks all of its facts
    assert all(f.text in answer for f in facts)


def test_rtofu_forget01_facts():
    if not FORGET01.is_file():
        pytest.skip(f"R-TOFU forget01 not found at {FORGET01} (shared data is not part of the project)")
    rows = [json.loads(line) for line in FORGET01.read_text().splitlines() if line.strip()]
    facts = [key_facts(r["question"], r["answer"]) for r in rows]
    with_facts = [(r, f) for r, f in zip(rows, facts) if f]
    assert len(with_facts) >= 0.9 * len(rows)
    for row, row_facts in with_facts:
        assert set(find_leaks(row["answer"], row_facts)) == set(texts(row_facts)), row["answer"]
        assert find_leaks(row["question"], row_facts) == [], row["question"]
    # the gold CoTs were written knowing the answer: most of them must leak
    cot_leaks = sum(bool(find_leaks(r["cot"], f)) for r, f in with_facts)
    assert cot_leaks >= 0.8 * len(with_facts)
