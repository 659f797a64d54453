"""`cipo_fast.eval.dates`: a date fact leaks through every written format of one of its readings."""

import pytest

from cipo_fast.eval.key_facts import key_facts
from cipo_fast.eval.leakage import find_leaks


def texts(facts):
    return [f.text for f in facts]


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
