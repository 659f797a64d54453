"""A target fact and the surface forms through which a text reveals it.

A `Fact` is one span of a forget item's answer (a name, date, number, title, place or lowercase term) with
its *variants*: normalized strings (`cipo_fast.eval.text.normalize`), any of which, found as whole tokens
in a normalized text, is a leak. `make_fact` builds one from the span and its kind (`classify` guesses the
kind of a span that a dataset lists without one):

* dates: no string variants but a set of (year, month, day) readings (`cipo_fast.eval.dates`); any date
  written with one of those readings, or the same month-day without a year, leaks;
* numbers: the digits and simple number words (`cipo_fast.eval.number_words`);
* terms (professions, genres): the term, and for a profession (in the lexicon, or one word ending like
  one: -ist, -ian, -er, -or, -eon) its singular and plural;
* person names: the full name, first + last, and each distinctive single token (>= 4 characters, not a
  common English word: `Al-Kuwaiti` alone leaks, `Basil` alone does not);
* places: the whole and each distinctive or multi-word component (`Kuwait City, Kuwait`);
* titles: the whole, without a leading article, and without a subtitle.

Every variant that the question already contains is dropped, so the question text itself never leaks; a
fact whose whole text the question contains, also after dropping generic words (`African American
literature` vs a question about `African American` writing), is no fact at all.

What it deliberately does not do: understand paraphrase. A text that says "her father sold houses" does
not leak the fact "Real Estate Agent". Which spans of an answer are facts is decided by
`cipo_fast.eval.key_facts`; whether a text leaks them by `cipo_fast.eval.leakage`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cipo_fast.eval.dates import Ymd, find_dates, month_days
from cipo_fast.eval.lexicon import (
    AWARD_WORDS,
    COMMON,
    COUNTRIES,
    DEMONYMS,
    GENERIC,
    GENRES,
    MONTHS,
    NAME_PARTICLES,
    ORG_WORDS,
    PROFESSIONS,
    STATUSES,
    STOP,
    WEEKDAYS,
)
from cipo_fast.eval.number_words import WORD_TO_INT, number_variants
from cipo_fast.eval.text import contains_tokens, normalize

FACT_KINDS = ("name", "date", "number", "title", "place", "term")

TERMS = {normalize(t) for t in PROFESSIONS | GENRES | STATUSES}  # lowercase knowledge terms, normalized
COUNTRY_NAMES = {normalize(c) for c in COUNTRIES}
_NOUNS = {normalize(t) for t in PROFESSIONS}  # terms that take a plural


@dataclass(frozen=True)
class Fact:
    """One target fact. `variants` are normalized strings, any of which in a text is a leak; a date also
    leaks through any written date with one of its (year, month, day) `dates`, or the same month-day."""

    text: str
    kind: str
    variants: tuple[str, ...]
    dates: frozenset[Ymd] = field(default_factory=frozenset)

    def __post_init__(self):
        assert self.kind in FACT_KINDS, f"unknown fact kind {self.kind!r}"


def _distinctive(token: str) -> bool:
    """A single name token that identifies on its own: >= 4 letters, not a common or generic word."""
    norm = normalize(token)
    letters = norm.replace(" ", "")
    return (
        len(letters) >= 4
        and not letters.isdigit()
        and norm not in COMMON | STOP | GENERIC | WEEKDAYS
        and norm not in MONTHS
        and norm not in NAME_PARTICLES
    )


def _number_forms(term: str) -> list[str]:
    """Singular and plural of a profession ("chef" <-> "chefs", a job found by its suffix: "roofer" ->
    "roofers"); other terms (genres, phrases) have no such forms."""
    singular = next((b for b in (term, term[:-1], term[:-2]) if b in _NOUNS), None)
    if singular is None and " " not in term and re.search(r"(ist|ian|er|or|eon)$", term):
        singular = term
    if singular is None:
        return []
    return [singular, singular + ("es" if singular.endswith(("s", "x", "ch", "sh")) else "s")]


def _variants(text: str, kind: str) -> list[str]:
    """Normalized surface forms of a fact, most specific first (dates are matched by readings instead)."""
    norm = normalize(text)
    if kind == "number":
        return list(number_variants(text))
    if kind == "term":
        return [norm, *_number_forms(norm)]
    out = [norm]
    if kind == "title":  # also without a subtitle ("Galactic Shadows") and without a leading article
        main = normalize(re.split(r"[:(]", text)[0])
        if len(main.split()) >= 2:
            out.append(main)
        for cand in (norm, main):
            words = cand.split()
            if len(words) >= 3 and words[0] in ("the", "a", "an"):
                out.append(" ".join(words[1:]))
        return out
    parts = [p for p in re.split(r",\s*|\s+", text.strip()) if len(normalize(p)) > 1]  # no initials
    if kind == "place":
        comps = [c.strip() for c in text.split(",") if c.strip()]
        if len(comps) > 1:  # "Kuwait City, Kuwait": each distinctive or multi-word component
            out += [normalize(c) for c in comps if _distinctive(c) or " " in c]
        return out
    # names: person-like runs (no organisation/award words, no demonym-only parts) also leak through
    # first + last and through each distinctive single token.
    lowered = {normalize(p) for p in parts}
    if (
        kind == "name"
        and 2 <= len(parts) <= 5
        and not lowered & (ORG_WORDS | AWARD_WORDS | GENERIC | STOP | DEMONYMS)
    ):
        if len(parts) >= 3:
            out.append(normalize(f"{parts[0]} {parts[-1]}"))
            out.append(normalize(" ".join(parts[-2:])))
        out += [normalize(p) for p in parts if _distinctive(p)]
    return out


def classify(text: str) -> str:
    """Kind of an explicitly listed fact (datasets that name their facts)."""
    stripped = text.strip().strip("\"'“”‘’")
    norm = normalize(stripped)
    if find_dates(stripped) or (month_days(stripped) and any(t in MONTHS for t in norm.split())):
        return "date"
    if norm and (norm.replace(" ", "").replace(".", "").isdigit() or norm in WORD_TO_INT):
        return "number"
    if text.strip()[:1] in "\"'“‘":
        return "title"
    words = set(norm.split())
    if words & AWARD_WORDS:
        return "title"
    if norm in TERMS or stripped == stripped.lower():
        return "term"
    comps = [normalize(c) for c in stripped.split(",")]
    if norm in COUNTRY_NAMES or (len(comps) > 1 and comps[-1] in COUNTRY_NAMES):
        return "place"
    return "name"


def make_fact(text: str, kind: str | None = None, question: str = "") -> Fact | None:
    """A `Fact` with its variants, minus every variant that the question already contains (so a text
    equal to the question never leaks). None when the question contains the fact itself, or the fact
    without its generic words ("African American literature" vs a question about "African American"
    writing), or a date with the same reading or month-day."""
    text = text.strip()
    kind = kind or classify(text)
    q = f" {normalize(question)} "
    if kind == "date":
        dates = frozenset(r for _, _, rs in find_dates(text) for r in rs)
        if dates & {r for _, _, rs in find_dates(question) for r in rs}:
            return None
        if {(m, d) for _, m, d in dates} & month_days(question):
            return None
        variants = [] if dates else [v for v in [normalize(text)] if not contains_tokens(q, v)]
        return Fact(text, kind, tuple(variants), dates) if dates or variants else None
    variants = [v for v in dict.fromkeys(_variants(text, kind)) if v and not contains_tokens(q, v)]
    core = " ".join(t for t in normalize(text).split() if t not in GENERIC)  # "African American literature"
    if not variants or contains_tokens(q, core) or contains_tokens(q, normalize(text)):
        return None
    return Fact(text, kind, tuple(variants))
