"""`cipo_fast.eval.number_words`: a number fact leaks as digits or as words, and only as whole tokens."""

import pytest

from cipo_fast.eval.facts import make_fact
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.eval.number_words import number_variants, number_words


def test_number_words_closed_forms():
    """21 -> "twenty one" ("twenty-one" normalized); 105 with and without "and"; 100 also "a hundred";
    whole thousands only: 12000 is spelled, 1200 is not."""
    assert number_words(21) == ["twenty one"]
    assert number_words(105) == ["one hundred five", "one hundred and five"]
    assert number_words(100) == ["one hundred", "a hundred"]
    assert number_words(12000) == ["twelve thousand"]
    assert number_words(1200) == []
    assert number_variants("1,200") == ("1200",)
    assert number_variants("3") == ("3", "three")


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
