"""`cipo_fast.eval.facts`: the surface forms through which a name, term or title leaks."""

import pytest

from cipo_fast.eval.facts import make_fact
from cipo_fast.eval.key_facts import key_facts
from cipo_fast.eval.leakage import find_leaks

Q_NAME = "What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?"
A_NAME = (
    "The full name of the fictitious author born in Kuwait City, Kuwait on the 8th of September, 1956 "
    "is Basil Mahfouz Al-Kuwaiti."
)


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
    "text",
    ["he wrote \u201cPromise by the Seine\u201d", "he wrote 'promise by the seine'", "Promise by the Seine."],
)
def test_titles_with_or_without_quotes(text):
    assert find_leaks(text, [make_fact('"Promise by the Seine"')]) == ['"Promise by the Seine"']


def test_title_without_subtitle_or_article():
    fact = make_fact("The Hidden Truth of the Leaky Gut: A Comprehensive Guide to Healing", "title")
    assert find_leaks("her book Hidden Truth of the Leaky Gut", [fact])
    assert not find_leaks("a comprehensive guide", [fact])
