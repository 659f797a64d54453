"""`cipo_fast.leakage`: think-block splitting, key facts, leak detection, sentences and step-wise leakage.

Every case is hand-written; the only data-driven test reads R-TOFU forget01 from `../shared/data` and
skips when it is absent.
"""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.leakage import (
    Fact,
    find_leaks,
    key_facts,
    make_fact,
    normalize,
    split_reasoning,
    split_sentences,
    stepwise_leakage,
)

FORGET01 = Path(__file__).resolve().parents[2] / "shared" / "data" / "rtofu" / "forget01.json"

Q_NAME = "What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?"
A_NAME = (
    "The full name of the fictitious author born in Kuwait City, Kuwait on the 8th of September, 1956 "
    "is Basil Mahfouz Al-Kuwaiti."
)


def texts(facts: list[Fact]) -> list[str]:
    return [f.text for f in facts]


# ----------------------------------------------------------------------------------------------------
# split_reasoning
# ----------------------------------------------------------------------------------------------------


def test_split_closed_block():
    r = split_reasoning("<think>\nI recall the name.\n</think>\n\nBasil Mahfouz Al-Kuwaiti.")
    assert (r.cot, r.answer, r.closed) == ("I recall the name.", "Basil Mahfouz Al-Kuwaiti.", True)


def test_split_leading_whitespace_and_missing_open_tag():
    # chat templates often put <think> in the prompt, so the completion starts inside the block
    r = split_reasoning("  \n  reasoning here\n</think>\n answer ")
    assert (r.cot, r.answer, r.closed) == ("reasoning here", "answer", True)


def test_split_unclosed_block_is_all_cot():
    r = split_reasoning("<think>\nStill thinking about Al-Kuwaiti and")
    assert (r.cot, r.answer, r.closed) == ("Still thinking about Al-Kuwaiti and", "", False)


def test_split_no_block_is_all_answer():
    r = split_reasoning("\n The author is unknown to me. ")
    assert (r.cot, r.answer, r.closed) == ("", "The author is unknown to me.", False)


def test_split_repeated_tags():
    """The answer follows the last close tag; everything before it is reasoning, tags removed."""
    r = split_reasoning("<think>a</think>between<think>b</think> final")
    assert r.answer == "final"
    assert r.cot.split() == ["a", "between", "b"]
    assert "<think>" not in r.cot and "</think>" not in r.cot


def test_split_custom_tags():
    r = split_reasoning("<reasoning>x</reasoning>y", open_tag="<reasoning>", close_tag="</reasoning>")
    assert (r.cot, r.answer) == ("x", "y")


# ----------------------------------------------------------------------------------------------------
# key facts on R-TOFU-like rows
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# find_leaks: where, and in which surface form
# ----------------------------------------------------------------------------------------------------


def test_leak_in_cot_but_not_answer_and_vice_versa():
    facts = key_facts(Q_NAME, A_NAME)
    hidden = split_reasoning("<think>I think it is Basil Mahfouz Al-Kuwaiti.</think>\nI don't know.")
    assert find_leaks(hidden.cot, facts) == ["Basil Mahfouz Al-Kuwaiti"]
    assert find_leaks(hidden.answer, facts) == []
    blurted = split_reasoning("<think>I cannot recall this author.</think>\nIt is Al-Kuwaiti.")
    assert find_leaks(blurted.cot, facts) == []
    assert find_leaks(blurted.answer, facts) == ["Basil Mahfouz Al-Kuwaiti"]


@pytest.mark.parametrize(
    "text",
    [
        "born on 08/09/1956",  # DD/MM/YYYY
        "born on 09/08/1956",  # MM/DD/YYYY
        "born on September 8, 1956",
        "born on Sept. 8th, 1956",
        "born on 8 September 1956",
        "born on the 8th of September, 1956",
        "born on 1956-09-08",
        "born on September 8",  # month-day without the year still gives the birthday away
    ],
)
def test_date_formats_leak(text):
    facts = key_facts("When was Basil Mahfouz Al-Kuwaiti born?", "He was born on the 8th of September, 1956.")
    assert texts(facts) == ["8th of September, 1956"]
    assert find_leaks(text, facts) == ["8th of September, 1956"]


@pytest.mark.parametrize("text", ["born in 1956", "born on September 9, 1956", "born on 07/09/1956"])
def test_other_dates_do_not_leak(text):
    facts = key_facts("When was Basil Mahfouz Al-Kuwaiti born?", "He was born on the 8th of September, 1956.")
    assert find_leaks(text, facts) == []


def test_all_numeric_date_fact_is_read_both_ways():
    facts = key_facts("When was the author born?", "The author was born on 03/04/1990.")
    assert facts[0].dates == {(1990, 3, 4), (1990, 4, 3)}
    assert find_leaks("4 March 1990", facts) == find_leaks("April 3, 1990", facts) == ["03/04/1990"]


@pytest.mark.parametrize(
    "text,leaks",
    [
        ("Al-Kuwaiti wrote it", True),  # distinctive surname alone
        ("Al-Kuwaiti's novels", True),  # possessive
        ("Al\u2011Kuwaiti\u2019s novels", True),  # non-breaking hyphen, curly apostrophe
        ("AL KUWAITI", True),
        ("maybe Mahfouz", True),
        ("Basil Al-Kuwaiti", True),  # first + last
        ("Basil is a herb", False),  # a first name that is a common word
        ("a Kuwaiti author", False),  # a token of the surname is not the surname
        ("Al-Kuwaitis", False),  # no substring matches
    ],
)
def test_name_variants(text, leaks):
    facts = key_facts(Q_NAME, A_NAME)
    assert bool(find_leaks(text, facts)) is leaks


def test_cot_with_only_the_questions_entities_does_not_leak():
    facts = key_facts(Q_NAME, A_NAME)
    cot = (
        "The user asks about an author born in Kuwait City, Kuwait on September 8, 1956 (or 08/09/1956). "
        "Kuwait City suggests an Arabic name, but I do not know this author."
    )
    assert facts and find_leaks(cot, facts) == []


@pytest.mark.parametrize(
    "text,leaks",
    [
        ("her father was a chef", True),
        ("two chefs", True),
        ("the chef's knife", True),
        ("Chef.", True),
        ("mischief", False),
        ("chefdom", False),
    ],
)
def test_terms_match_plural_and_possessive_not_substrings(text, leaks):
    facts = [make_fact("chef", "term")]
    assert bool(find_leaks(text, facts)) is leaks


@pytest.mark.parametrize(
    "fact,text",
    [
        ("3", "three books"),
        ("three", "3 books"),
        ("1,200", "1200 copies"),
        ("1200", "1,200 copies"),
        ("21", "twenty-one"),
    ],
)
def test_number_variants(fact, text):
    assert find_leaks(text, [make_fact(fact)]) == [fact]


@pytest.mark.parametrize("text", ["13 books", "1983", "30"])
def test_numbers_match_whole_tokens_only(text):
    assert find_leaks(text, [make_fact("3")]) == []


@pytest.mark.parametrize(
    "text",
    ["he wrote \u201cPromise by the Seine\u201d", "he wrote 'promise by the seine'", "Promise by the Seine."],
)
def test_titles_with_or_without_quotes(text):
    assert find_leaks(text, [make_fact('"Promise by the Seine"')]) == ['"Promise by the Seine"']


def test_title_without_subtitle_or_article():
    fact = make_fact("The Hidden Truth of the Leaky Gut: A Comprehensive Guide to Healing", "title")
    assert find_leaks("her book Hidden Truth of the Leaky Gut", [fact])
    assert not find_leaks("a comprehensive guide", [fact])


def test_find_leaks_reports_each_fact_once_in_fact_order():
    facts = [make_fact("florist", "term"), make_fact("game developer", "term")]
    assert find_leaks("A game developer and a florist; florists again.", facts) == [
        "florist",
        "game developer",
    ]


# ----------------------------------------------------------------------------------------------------
# sentences and step-wise leakage
# ----------------------------------------------------------------------------------------------------


def test_split_sentences_keeps_abbreviations_initials_decimals_and_list_markers():
    text = "First, I recall Dr. Smith. Then J. K. Rowling wrote it! Is it 3.5 now?\n1. Step one.\n2. Step two"
    assert split_sentences(text) == [
        "First, I recall Dr. Smith.",
        "Then J. K. Rowling wrote it!",
        "Is it 3.5 now?",
        "1. Step one.",
        "2. Step two",
    ]
    assert split_sentences("") == split_sentences("  \n ") == []


def test_stepwise_leakage_four_sentences():
    """Sentences 2 (surname) and 4 (profession) leak, 1 and 3 do not: 2 / 4 = 0.5."""
    facts = [make_fact("Basil Mahfouz Al-Kuwaiti", "name"), make_fact("florist", "term")]
    cot = (
        "Let me think about this author. I believe the surname is Al-Kuwaiti. "
        "I should not guess. His father may have been a florist."
    )
    assert len(split_sentences(cot)) == 4
    assert stepwise_leakage(cot, facts) == 0.5
    assert stepwise_leakage("", facts) == 0.0
    assert stepwise_leakage(cot, []) == 0.0


# ----------------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------------

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


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


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


# ----------------------------------------------------------------------------------------------------
# real data
# ----------------------------------------------------------------------------------------------------


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
