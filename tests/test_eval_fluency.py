"""`cipo_fast.eval.fluency`: repetition rate and token entropy in closed form, mean log-prob against the
model's own logits (tiny model) and on shuffled text (SmolLM2, slow)."""

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.eval.fluency import fluency, mean_logprob, repetition_rate, token_entropy

WHITESPACE = SimpleNamespace(tokenize=str.split)  # a tokenizer whose tokens are the words

SENTENCE = (
    "Basil Mahfouz Al-Kuwaiti was born in Kuwait City in 1956, and his novels describe the life of "
    "families along the Gulf coast."
)


def rtofu_token_entropy(tokens: list[str]) -> float:
    """R-TOFU's compute_token_entropy (metrics/metrics.py, normalize=True) after tokenize(), with numpy;
    nltk's FreqDist of unigrams is a Counter."""
    from collections import Counter

    freqs = np.array(list(Counter(tokens).values()), dtype=float)
    freqs = freqs / freqs.sum()
    entropy = np.sum(-freqs * np.log(freqs) / np.log(2))
    if len(tokens) <= 1:
        return 0
    return entropy / np.log2(len(tokens))


def test_repetition_rate_closed_forms():
    """ "a b c a b c", n = 3: trigrams abc bca cab abc, 3 distinct of 4 -> 1 - 3/4 = 1/4.
    "the cat the cat the", n = 1: 2 distinct words of 5 -> 1 - 2/5 = 3/5.
    "The cat. the CAT!", n = 2: case and punctuation ignored, bigrams (the cat) (cat the) (the cat) ->
    1 - 2/3 = 1/3. Fewer words than n, or none: 0."""
    assert repetition_rate("a b c a b c") == pytest.approx(1 / 4)
    assert repetition_rate("the cat the cat the", n=1) == pytest.approx(3 / 5)
    assert repetition_rate("The cat. the CAT!", n=2) == pytest.approx(1 / 3)
    assert repetition_rate("one two") == repetition_rate("") == 0.0
    assert repetition_rate("no trigram here repeats at all") == 0.0
    with pytest.raises(ValueError, match="n must be at least 1"):
        repetition_rate("a b", n=0)


def test_token_entropy_closed_forms():
    """Over N tokens with unigram frequencies p, H / log2 N:
    "a b c d": H = 2 bits, log2 4 = 2 -> 1.  "a a b b": H = 1 -> 1/2.
    "a a a b": H = -(3/4) log2(3/4) - (1/4) log2(1/4) = 2 - (3/4) log2 3 -> (2 - (3/4) log2 3) / 2.
    "a a": H = 0 -> 0.  One token or none: 0 (R-TOFU's guard)."""
    assert token_entropy("a b c d", WHITESPACE) == pytest.approx(1.0)
    assert token_entropy("a a b b", WHITESPACE) == pytest.approx(0.5)
    assert token_entropy("a a a b", WHITESPACE) == pytest.approx((2 - 0.75 * math.log2(3)) / 2)
    assert token_entropy("a a", WHITESPACE) == 0.0
    assert token_entropy("a", WHITESPACE) == token_entropy("", WHITESPACE) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdefgh"), max_size=40))
def test_token_entropy_matches_rtofu(tokens):
    assert token_entropy(" ".join(tokens), WHITESPACE) == pytest.approx(
        rtofu_token_entropy(tokens), abs=1e-12
    )


def test_repeated_sentence_scores_worse_than_the_sentence(smol_dir):
    """The sentence five times over: its trigrams repeat (rate about 4/5 instead of 0), and its unigram
    distribution is the sentence's (same H) over 5x the tokens, so the normalized entropy drops."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(smol_dir)
    repeated = " ".join([SENTENCE] * 5)
    assert repetition_rate(SENTENCE) == 0.0
    assert repetition_rate(repeated) > 0.7
    assert token_entropy(repeated, hf) < token_entropy(SENTENCE, hf) - 0.1


def _wrapped(model_dir, max_length=256):
    from cipo_fast.data.tokenize import TextFormat, Tokenizer
    from cipo_fast.model.loading import ModelOptions, load_model

    model, hf = load_model(str(model_dir), ModelOptions(device="cpu"))
    return model, Tokenizer(hf, TextFormat(max_length=max_length))


def test_mean_logprob_equals_the_models_own_logits(tiny_model_dir):
    """Per text: ids = prompt_ids + text_ids, logits from the model's plain forward, log_softmax at the
    positions that predict text tokens, averaged. Two texts share a prompt (neighbours are packed with the
    prefix stored once); the empty text gets None."""
    model, tok = _wrapped(tiny_model_dir)
    prompts = ["Who wrote the novel?", "Who wrote the novel?", "What is 2 + 2?", "Say nothing."]
    texts = [SENTENCE, "I do not know.", "4, because two plus two is four.", ""]
    got = mean_logprob(model, tok, prompts, texts, token_budget=128)
    assert got[3] is None
    for p, t, g in zip(prompts[:3], texts[:3], got[:3]):
        p_ids, t_ids = tok.prompt_ids(p), tok.text_ids(t)
        ids = torch.tensor([*p_ids, *t_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids[None]).logits[0, :-1].float(), -1)
        expect = logp.gather(1, ids[1:, None])[-len(t_ids) :, 0].mean().item()
        assert g == pytest.approx(expect, abs=1e-4)
    rows = fluency(model, tok, prompts, texts, token_budget=128)
    assert [r["mean_logprob"] for r in rows] == got
    assert rows[0]["repetition_rate"] == repetition_rate(texts[0])
    assert rows[0]["token_entropy"] == token_entropy(texts[0], tok.tok)
    with pytest.raises(ValueError, match="3 prompts for 4 texts"):
        mean_logprob(model, tok, prompts[:3], texts)


@pytest.mark.slow
@pytest.mark.smoke
def test_shuffled_words_score_lower_under_smollm2(smol_dir):
    """The same words in a random order are far less likely under a real LM than the sentence itself."""
    model, tok = _wrapped(smol_dir)
    rng = random.Random(0)
    texts = [SENTENCE, "The capital of France is Paris, a city on the Seine known for its museums."]
    shuffled = []
    for t in texts:
        words = t.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    prompts = ["Tell me about Basil Mahfouz Al-Kuwaiti.", "What is the capital of France?"]
    got = mean_logprob(model, tok, prompts * 2, [*texts, *shuffled])
    fluent, salad = got[:2], got[2:]
    for f, s in zip(fluent, salad):
        assert s < f - 1.0, (f, s)
