"""Numbers written as digits or as English words, so that a number fact `3` also leaks through "three".

`number_words(n)` spells 0 <= n < 1000 (with and without "and": `one hundred and five`, `one hundred
five`; `a hundred` for 100) and whole thousands below a million (`twelve thousand`), in normalized form
(`twenty one`, since `normalize` splits "twenty-one"). `WORD_TO_INT` is its inverse below 1000.
`number_variants` gives every form of one written number: the normalized text, the digits, the words.

What it deliberately does not do: ordinals ("third"), fractions, decimals in words, or numbers written
with a scale word other than a whole "thousand" ("1.2 million").
"""

from __future__ import annotations

from cipo_fast.eval.text import normalize

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
_ONES += ["twelve", *(p + "teen" for p in ("thir", "four", "fif", "six", "seven", "eigh", "nine"))]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> list[str]:
    """Normalized English spellings of 0 <= n < 1000 and of whole thousands below a million."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])]
    if n < 1000:
        head = _ONES[n // 100] + " hundred"
        if n % 100 == 0:
            return [head, "a hundred"] if n == 100 else [head]
        return [f"{head} {rest}" for rest in number_words(n % 100)] + [
            f"{head} and {rest}" for rest in number_words(n % 100)
        ]
    if n % 1000 == 0 and n < 1_000_000:
        return [f"{w} thousand" for w in number_words(n // 1000)]
    return []


WORD_TO_INT = {w: n for n in range(1000) for w in number_words(n)}


def number_variants(text: str) -> tuple[str, ...]:
    """`"1,200"` -> `("1200",)`; `"3"` / `"three"` -> `("3", "three")`."""
    norm = normalize(text)
    value = int(norm) if norm.isdigit() else WORD_TO_INT.get(norm)
    if value is None:
        return (norm,)
    return tuple(dict.fromkeys([norm, str(value), *number_words(value)]))
