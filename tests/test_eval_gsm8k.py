"""`cipo_fast.eval.gsm8k`: the gold number, the final number of a generation, numeric equality."""

import pytest

from cipo_fast.data.items import gsm8k_number, split_gsm8k
from cipo_fast.eval.gsm8k import extract_final_number, numbers_match


def test_gsm8k_gold():
    assert gsm8k_number("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_number("...\n#### 1,200") == "1200"
    assert split_gsm8k("a\n#### 1 #### 2") == ("a\n#### 1", "2")  # the last mark
    with pytest.raises(ValueError, match="####"):
        gsm8k_number("no marker here")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("So she earns $1,200.50 in total.", "1200.50"),
        ("The change is -3 degrees.", "-3"),
        ("5 - 3 = 2", "2"),
        ("First 7 then \\boxed{18} and a stray 4", "18"),
        ("\\boxed{\\$1,000}", "1000"),
        ("\\boxed{12.0}", "12.0"),
        ("\\boxed{\\frac{3}{4}}", "0.75"),
        ("pages 10-12", "12"),
        ("no number at all", None),
    ],
)
def test_extract_final_number(text, expected):
    assert extract_final_number(text) == expected


@pytest.mark.parametrize(
    "pred,gold,same",
    [
        ("12.0", "12", True),
        ("1,200", "1200", True),
        ("-3", "-3.00", True),
        ("12.5", "12", False),
        (None, "1", False),
    ],
)
def test_numbers_match(pred, gold, same):
    assert numbers_match(pred, gold) is same
