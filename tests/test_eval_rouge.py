"""`cipo_fast.eval.rouge`: ROUGE-L recall on hand-computed LCS cases."""

import pytest

from cipo_fast.eval.rouge import rouge_l_recall


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
