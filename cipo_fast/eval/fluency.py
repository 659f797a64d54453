"""Fluency: whether a generated text still reads as language, to show when unlearning trades coherence for
forgetting.

An unlearned model can stop revealing a fact by no longer writing sentences: loops ("the the the"),
one phrase over and over, or word salad. Leakage and ROUGE then look perfect. Three scores per text show it:

* `repetition_rate(text, n)`  1 - distinct word n-grams / total word n-grams (n = 3 by default), where
                               words are the runs of `\\w` characters of the lowercased text, so punctuation
                               is ignored. 0 for a text without a repeated n-gram (or with fewer than n
                               words), towards 1 for a loop. A plain repetition count, as in the
                               "rep-n" scores of the degeneration literature.
* `token_entropy(text, tok)`  R-TOFU's normalized unigram token entropy (AI-ISL/R-TOFU, metrics/metrics.py,
                               `compute_token_entropy(tokenizer, sentence, normalize=True)`): with the
                               tokens of `tokenizer.tokenize(text)` and p their unigram frequencies,
                               `H = -sum p log2 p` over `log2(number of tokens)`; 0 for at most one token.
                               1 when no token repeats, low for a text made of few tokens. R-TOFU feeds it
                               into model utility (MU) on the answers of its retain and world sets.
* `mean_logprob(model, tok, prompts, texts)`  the mean per-token log-likelihood of each text as the
                               completion of its prompt, under `model` -- meant to be the original,
                               pre-unlearning model, so that it asks "would the model before unlearning
                               have written this?": word salad and degenerate loops score low, a fluent
                               paraphrase high. The sequences are `tok.sequence(prompt_ids, text, eos=False)`,
                               scored packed with the fused log-prob op (`score_sequences`); the mean is the
                               sum over the completion tokens divided by their number. A text longer than
                               `tok.fmt.max_length` allows is cut as in training, and the mean is over the
                               kept tokens. Empty texts get None.

`fluency(model, tok, prompts, texts)` returns the three per text as dicts.

What it deliberately does not do: grade truth or relevance (a fluent wrong answer scores well on all three;
that is what the leakage and accuracy metrics are for), compare with a gold text, normalize across
tokenizers (token entropy and mean log-prob depend on the tokenizer and the scoring model, so compare
numbers only under the same ones), or choose which part of a generation to score (R-TOFU scores the final
answer; pass the CoT or the answer as needed).
"""

from __future__ import annotations

import math
import re
from collections import Counter

_WORD = re.compile(r"\w+")


def repetition_rate(text: str, n: int = 3) -> float:
    """1 - distinct word n-grams / total word n-grams; 0.0 for fewer than `n` words."""
    if n < 1:
        raise ValueError(f"repetition_rate: n must be at least 1, got {n}")
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def token_entropy(text: str, tokenizer) -> float:
    """R-TOFU's `compute_token_entropy(tokenizer, text, normalize=True)`: the entropy (bits) of the unigram
    distribution of `tokenizer.tokenize(text)` over log2 of the number of tokens; 0.0 for at most one token."""
    tokens = tokenizer.tokenize(text)
    if len(tokens) <= 1:
        return 0.0
    total = len(tokens)
    h = -sum(c / total * math.log2(c / total) for c in Counter(tokens).values())
    return h / math.log2(total)


def mean_logprob(model, tok, prompts: list, texts: list[str], token_budget: int = 4096) -> list[float | None]:
    """Per text, the mean log-prob of its tokens as the completion of its prompt under `model` (None for an
    empty text). `tok` is a `cipo_fast.data.tokenize.Tokenizer`; prompts are strings or chat messages, or
    token ids already (a prompt with a prefill, as generation saw it)."""
    from cipo_fast.model.forward import score_sequences

    if len(prompts) != len(texts):
        raise ValueError(f"mean_logprob: {len(prompts)} prompts for {len(texts)} texts")
    built = [
        (i, tok.sequence(p if _is_ids(p) else tok.prompt_ids(p), t, f"fluency text {i}", eos=False))
        for i, (p, t) in enumerate(zip(prompts, texts))
        if t
    ]
    built = [(i, s) for i, s in built if s.completion_ids]  # a text of only ignored characters
    out: list[float | None] = [None] * len(texts)
    if not built:
        return out
    sums = score_sequences(model, [s for _, s in built], token_budget)
    for (i, seq), total in zip(built, sums.tolist()):
        out[i] = total / len(seq.completion_ids)
    return out


def _is_ids(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and all(isinstance(x, int) for x in prompt)


def fluency(model, tok, prompts: list, texts: list[str], token_budget: int = 4096) -> list[dict]:
    """`{"repetition_rate", "token_entropy", "mean_logprob"}` per text (see the module docstring)."""
    logps = mean_logprob(model, tok, prompts, texts, token_budget)
    return [
        {
            "repetition_rate": repetition_rate(t),
            "token_entropy": token_entropy(t, tok.tok),
            "mean_logprob": lp,
        }
        for t, lp in zip(texts, logps)
    ]
