"""`cipo_fast.eval.rouge`: ROUGE-L recall on hand-computed LCS cases, and parity with rouge-score."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from cipo_fast.eval.rouge import rouge_l_recall

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rtofu_rouge_l_recall(prediction: str, reference: str) -> float:
    """R-TOFU's call (metrics/metrics.py `eval_rouge_recall`), the spec."""
    return _SCORER.score(target=reference, prediction=prediction)["rougeL"].recall


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


def test_rouge_l_recall_stems_words_longer_than_three_characters():
    """Porter stems, as R-TOFU's use_stemmer=True: reference "He published books" -> [he, publish, book],
    prediction "he publishes a book" -> [he, publish, a, book]; LCS = 3, recall 1 (2/3 unstemmed).
    Words of at most 3 characters are not stemmed: "was" stays "was", so it does not match "wa"."""
    assert rouge_l_recall("he publishes a book", "He published books") == 1.0
    assert rouge_l_recall("wa", "was") == 0.0


def test_rouge_l_recall_edges():
    assert rouge_l_recall("anything", "") == 0.0
    assert rouge_l_recall("", "reference text") == 0.0
    assert rouge_l_recall("", "") == 0.0
    assert rouge_l_recall("Reference, TEXT.", "reference text") == 1.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_rouge_l_recall_matches_rouge_score_on_any_text(prediction, reference):
    """Arbitrary Unicode (punctuation, digits, non-ASCII letters, "İ" lowercasing to "i̇", empty strings)."""
    assert rouge_l_recall(prediction, reference) == rtofu_rouge_l_recall(prediction, reference)


_WORDS = st.sampled_from(
    ["the", "a", "was", "cat", "cats", "published", "publishes", "publishing", "writer", "writing",
     "1956", "08/09/1956", "Al-Kuwaiti's", "café", "naïve", "İstanbul", "Basil", "BASIL", "ran", "running"]
)  # fmt: skip
_SEPARATORS = st.sampled_from([" ", "  ", ", ", ". ", "\n", "-", "!? ", " — "])


@st.composite
def _texts(draw, max_words: int):
    words = draw(st.lists(_WORDS, max_size=max_words))
    seps = draw(st.lists(_SEPARATORS, min_size=len(words), max_size=len(words)))
    return "".join(w + s for w, s in zip(words, seps))


@settings(max_examples=300, deadline=None)
@given(_texts(150), _texts(150))
def test_rouge_l_recall_matches_rouge_score_on_word_soup(prediction, reference):
    """Few distinct words (many matches, stem collisions) and up to 150 of them, past the 64-bit words of
    the bit-parallel LCS."""
    assert rouge_l_recall(prediction, reference) == rtofu_rouge_l_recall(prediction, reference)
