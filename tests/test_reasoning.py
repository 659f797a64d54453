"""`cipo_fast.data.reasoning`: cutting a generation back into chain of thought and answer."""

from cipo_fast.data.reasoning import split_reasoning


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
