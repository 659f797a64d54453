"""`cipo_fast.eval.text`: normalization and sentence splitting."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.eval.text import normalize, split_sentences


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


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once
