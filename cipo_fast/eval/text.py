"""Text as the leak detector reads it: unicode folding, normalized word tokens, whole-token containment and
sentence splitting.

* `fold_punctuation` maps unicode quotes, dashes and the non-breaking space to ASCII, one character for one,
  so offsets into the folded text index the original text.
* `normalize` maps a text to lowercase ASCII-ish word tokens joined by single spaces: NFKD with accents
  dropped, unicode quotes and dashes folded, possessive `'s` dropped, thousands separators removed
  (`1,200` -> `1200`), every other non-alphanumeric character a token boundary (`Al-Kuwaiti` ->
  `al kuwaiti`).
* `contains_tokens` searches for `" variant "` in `" normalized text "`, so a normalized phrase only matches
  whole tokens: `chef` never matches inside `mischief`.
* `split_sentences` cuts a text into sentences / reasoning steps at newlines and sentence-ending
  punctuation, except after abbreviations, initials and list markers.

What it deliberately does not do: stemming or lemmatization (plurals are variants listed by the caller,
see `cipo_fast.eval.facts`), or a language model's tokenization.
"""

from __future__ import annotations

import re
import unicodedata

from cipo_fast.eval.lexicon import wordset

_CHAR_MAP = str.maketrans(
    {
        **dict.fromkeys("‘’‚‛′`´", "'"),
        **dict.fromkeys("“”„‟″«»", '"'),
        **dict.fromkeys("‐‑‒–—―−", "-"),
        "\u00a0": " ",
    }
)
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")


def fold_punctuation(text: str) -> str:
    """Unicode quotes, dashes and the non-breaking space -> ASCII, one character for one."""
    return text.translate(_CHAR_MAP)


def _fold(text: str) -> str:
    """Unicode quotes/dashes -> ASCII, accents dropped (NFKD without combining marks)."""
    text = unicodedata.normalize("NFKD", fold_punctuation(text))
    return "".join(c for c in text if not unicodedata.combining(c))


def normalize(text: str) -> str:
    """Lowercase word tokens joined by single spaces; see the module docstring. Idempotent."""
    t = _fold(_fold(text).lower())  # fold twice: lowercasing can produce new decomposable characters
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)  # 1,200 -> 1200
    t = re.sub(r"(?<=[^\W\d_])'s(?![^\W_])", "", t)  # possessive: al-kuwaiti's -> al-kuwaiti
    tokens = [re.sub(r"^(\d+)\.0+$", r"\1", tok) for tok in _TOKEN_RE.findall(t)]  # 12.0 -> 12
    return " ".join(tokens)


def contains_tokens(padded_text: str, variant: str) -> bool:
    """Whether the normalized `variant` occurs as whole tokens in `padded_text`, which is
    `" " + normalize(text) + " "`; an empty variant is never contained."""
    return bool(variant) and f" {variant} " in padded_text


_ABBREVIATIONS = wordset("mr mrs ms dr prof st jr sr vs etc e.g i.e ph.d no fig approx")
_BOUNDARY_RE = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences / reasoning steps: split at newlines and at `.`, `!`, `?` followed by whitespace, except
    after abbreviations (`Dr.`, `e.g.`), initials (`J. K.`) and bare list markers (`1.`)."""
    out, start = [], 0
    for m in _BOUNDARY_RE.finditer(text):
        piece = text[start : m.end()].strip()
        last = re.findall(r"[\w.]+(?=[.!?]*[\"')\]]*\s*$)", piece)
        word = last[-1].lower().rstrip(".") if last else ""
        if m.group()[0] in ".!?" and (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue
        if re.fullmatch(r"\(?\w{1,3}[.)]", piece) and "\n" not in m.group():  # "1." "a)" list markers
            continue
        if piece:
            out.append(piece)
        start = m.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return out
