"""Does a generated text leak the target knowledge of a forget item?

A forget item is a question and its gold answer. Its *key facts* are the spans of the answer that the
question does not already give away: names, dates, numbers, titles, places and a few kinds of lowercase
terms (professions, genres). A generation leaks when one of those facts, in any of its surface forms,
shows up in its chain of thought or in its final answer.

How it works:

* `split_reasoning` cuts `<think> ... </think> answer` into CoT and answer (see its docstring for broken
  blocks).
* `normalize` maps a text to lowercase ASCII-ish word tokens joined by single spaces: NFKD with accents
  dropped, unicode quotes and dashes folded, possessive `'s` dropped, thousands separators removed
  (`1,200` -> `1200`), every other non-alphanumeric character a token boundary (`Al-Kuwaiti` ->
  `al kuwaiti`). Matching is a search for `" variant "` in `" normalized text "`, so a fact only matches
  whole tokens: `chef` never matches inside `mischief`; plurals of terms are listed as variants.
* `key_facts` extracts candidates from the answer in a fixed order, each stage masking what it took so
  later stages don't re-read it: dates -> quoted titles -> genre phrases (`the French literature genre`)
  -> lexicon terms (professions, genres, genders; case-insensitive) -> parents' jobs by suffix (`her
  mother worked as a podiatrist`) -> capitalized runs (names, places, unquoted titles such as awards)
  -> numbers. A candidate is dropped when it appears in the question, also after dropping generic words
  (`African American literature` vs a question about `African American` writing); a kept fact loses
  every variant that appears in the question, so the question text itself never leaks. An answer with
  no such fact falls back to lowercase content phrases (`lyrical prose`), see `key_facts`.
* Each `Fact` carries its variants: dates as a set of (year, month, day) readings (an all-numeric date
  is read both as DD/MM and MM/DD), compared against every date written in the text in any of the
  supported formats, or a month-day without a year; numbers as digits and simple number words; person
  names as the full name, first + last, and each distinctive single token (>= 4 characters, not a common
  English word: `Al-Kuwaiti` alone leaks, `Basil` alone does not); places as the whole and each
  distinctive component; titles as the whole, without a leading article, and without a subtitle.

What it deliberately does not do: understand paraphrase. A CoT that says "her father sold houses" does
not leak the fact "Real Estate Agent"; descriptive answers (writing style, themes) have few or no
extractable facts, and for those the evaluation relies on `textmetrics.rouge_l_recall` (and optionally
the `textmetrics.Embedder` cosine). The extractor is a set of heuristics tuned on R-TOFU; its word lists
are in `lexicon` and its known failure modes are listed in `key_facts`.

Also here: sentence splitting and step-wise leakage. ROUGE-L recall, GSM8K answer extraction and the
optional MiniLM sentence embedder are in `textmetrics`.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass, field

from cipo_fast.lexicon import (
    AWARD_WORDS,
    COMMON,
    COUNTRIES,
    DEMONYMS,
    GENERIC,
    GENRE_FILLERS,
    GENRES,
    MONTHS,
    NAME_PARTICLES,
    ORG_WORDS,
    PLACE_PREPOSITIONS,
    PLACE_WORDS,
    PROFESSIONS,
    RUN_CONNECTORS,
    STATUSES,
    STOP,
    WEEKDAYS,
    wordset,
)

FACT_KINDS = ("name", "date", "number", "title", "place", "term")

# ----------------------------------------------------------------------------------------------------
# think blocks
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reasoning:
    cot: str
    answer: str
    closed: bool  # a close tag was found (False: no think block at all, or generation cut mid-thought)


def split_reasoning(text: str, open_tag: str = "<think>", close_tag: str = "</think>") -> Reasoning:
    """Split a generation into chain of thought and final answer.

    * `<think> c </think> a` -> cot `c`, answer `a`, closed;
    * a close tag without an open tag (chat templates often put `<think>` in the prompt): everything
      before the close tag is CoT;
    * repeated blocks: the answer is what follows the *last* close tag, the CoT is everything before
      it with the tags removed (so text between two blocks counts as reasoning, not as answer);
    * an open tag that is never closed (generation stopped mid-thought): everything after the open
      tag is CoT and the answer is `""` -- an unfinished thought is not an answer, and whatever it
      says is still checked for leaks as CoT;
    * no tag at all: cot `""` and the whole text is the answer.

    Both parts are stripped of surrounding whitespace.
    """

    def untag(s: str) -> str:
        return s.replace(open_tag, "\n").replace(close_tag, "\n").strip()

    end = text.rfind(close_tag)
    if end >= 0:
        return Reasoning(untag(text[:end]), untag(text[end + len(close_tag) :]), True)
    start = text.find(open_tag)
    if start >= 0:
        return Reasoning(untag(text[start + len(open_tag) :]), "", False)
    return Reasoning("", text.strip(), False)


# ----------------------------------------------------------------------------------------------------
# normalization
# ----------------------------------------------------------------------------------------------------

_CHAR_MAP = str.maketrans(
    {
        **dict.fromkeys("‘’‚‛′`´", "'"),
        **dict.fromkeys("“”„‟″«»", '"'),
        **dict.fromkeys("‐‑‒–—―−", "-"),
        "\u00a0": " ",
    }
)
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")


def _fold(text: str) -> str:
    """Unicode quotes/dashes -> ASCII, accents dropped (NFKD without combining marks)."""
    text = unicodedata.normalize("NFKD", text.translate(_CHAR_MAP))
    return "".join(c for c in text if not unicodedata.combining(c))


def normalize(text: str) -> str:
    """Lowercase word tokens joined by single spaces; see the module docstring. Idempotent."""
    t = _fold(_fold(text).lower())  # fold twice: lowercasing can produce new decomposable characters
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)  # 1,200 -> 1200
    t = re.sub(r"(?<=[^\W\d_])'s(?![^\W_])", "", t)  # possessive: al-kuwaiti's -> al-kuwaiti
    tokens = [re.sub(r"^(\d+)\.0+$", r"\1", tok) for tok in _TOKEN_RE.findall(t)]  # 12.0 -> 12
    return " ".join(tokens)


def _contains(padded_text: str, variant: str) -> bool:
    """`padded_text` is `" " + normalize(text) + " "`; `variant` is normalized."""
    return bool(variant) and f" {variant} " in padded_text


# ----------------------------------------------------------------------------------------------------
# lexicon, normalized
# ----------------------------------------------------------------------------------------------------

_LEXICON = sorted({normalize(t) for t in PROFESSIONS | GENRES | STATUSES}, key=lambda t: -len(t))
_LEXICON_SET = set(_LEXICON)
_NOUNS = {normalize(t) for t in PROFESSIONS}  # lexicon entries that take a plural
# longest first, so "civil engineer" is taken before "engineer"; an optional plural ending
_LEXICON_RES = [
    re.compile(r"(?<![\w-])" + r"[\s-]+".join(map(re.escape, t.split())) + r"(?:e?s)?(?![\w-])")
    for t in _LEXICON
]
_COUNTRIES = {normalize(c) for c in COUNTRIES}

# ----------------------------------------------------------------------------------------------------
# dates
# ----------------------------------------------------------------------------------------------------

_MONTH_RE = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY_RE = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR_RE = r"(?P<year>\d{4})"
_FULL_DATE_RES = [
    re.compile(rf"\b{_DAY_RE}(?:\s+of)?\s+{_MONTH_RE},?\s+{_YEAR_RE}\b", re.I),  # 8th of Sep, 1956
    re.compile(rf"\b{_MONTH_RE}\s+(?:the\s+)?{_DAY_RE},?\s+{_YEAR_RE}\b", re.I),  # September 8, 1956
    re.compile(r"\b(?P<a>\d{1,2})([/.-])(?P<b>\d{1,2})\2(?P<year>\d{4})\b"),  # 08/09/1956: DD/MM or MM/DD
    re.compile(r"\b(?P<year>\d{4})([/.-])(?P<month>\d{1,2})\2(?P<day>\d{1,2})\b"),  # 1956-09-08
]
_MONTH_DAY_RES = [
    re.compile(rf"\b{_DAY_RE}(?:\s+of)?\s+{_MONTH_RE}(?![^\W\d_])", re.I),
    re.compile(rf"\b{_MONTH_RE}\s+(?:the\s+)?{_DAY_RE}\b(?![/.-]\d)", re.I),
]

Ymd = tuple[int, int, int]


def _valid(y: int, m: int, d: int) -> bool:
    try:
        datetime.date(y, m, d)
    except ValueError:
        return False
    return True


def _match_readings(m: re.Match) -> set[Ymd]:
    g = m.groupdict()
    y = int(g["year"])
    if "a" in g:  # all-numeric with the year last: both readings
        a, b = int(g["a"]), int(g["b"])
        readings = {(y, b, a), (y, a, b)}
    else:
        month = g["month"]
        mo = int(month) if month.isdigit() else MONTHS[month.lower()]
        readings = {(y, mo, int(g["day"]))}
    return {r for r in readings if _valid(*r)}


def find_dates(text: str) -> list[tuple[int, int, frozenset[Ymd]]]:
    """Full dates written in `text`: `(start, end, readings)`, readings being (year, month, day)."""
    text = text.translate(_CHAR_MAP)  # one character for one, so offsets index the caller's text
    found = []
    for rx in _FULL_DATE_RES:
        for m in rx.finditer(text):
            if readings := _match_readings(m):
                found.append((m.start(), m.end(), frozenset(readings)))
    return sorted(found)


def _month_days(text: str) -> set[tuple[int, int]]:
    """(month, day) pairs of dates written with a month name, with or without a year."""
    text = text.translate(_CHAR_MAP)
    out = set()
    for rx in _MONTH_DAY_RES:
        for m in rx.finditer(text):
            mo, d = MONTHS[m.group("month").lower()], int(m.group("day"))
            if _valid(2000, mo, d):
                out.add((mo, d))
    for _, _, readings in find_dates(text):
        out |= {(mo, d) for _, mo, d in readings}
    return out


# ----------------------------------------------------------------------------------------------------
# numbers
# ----------------------------------------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
_ONES += ["twelve", *(p + "teen" for p in ("thir", "four", "fif", "six", "seven", "eigh", "nine"))]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _number_words(n: int) -> list[str]:
    """Normalized English spellings of 0 <= n < 1000 and of whole thousands below a million."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])]
    if n < 1000:
        head = _ONES[n // 100] + " hundred"
        if n % 100 == 0:
            return [head, "a hundred"] if n == 100 else [head]
        return [f"{head} {rest}" for rest in _number_words(n % 100)] + [
            f"{head} and {rest}" for rest in _number_words(n % 100)
        ]
    if n % 1000 == 0 and n < 1_000_000:
        return [f"{w} thousand" for w in _number_words(n // 1000)]
    return []


_WORD_TO_INT = {w: n for n in range(1000) for w in _number_words(n)}


def _number_variants(text: str) -> tuple[str, ...]:
    """`"1,200"` -> `("1200",)`; `"3"` / `"three"` -> `("3", "three")`."""
    norm = normalize(text)
    value = int(norm) if norm.isdigit() else _WORD_TO_INT.get(norm)
    if value is None:
        return (norm,)
    return tuple(dict.fromkeys([norm, str(value), *_number_words(value)]))


# ----------------------------------------------------------------------------------------------------
# facts
# ----------------------------------------------------------------------------------------------------


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
        return list(_number_variants(text))
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
    if find_dates(stripped) or (_month_days(stripped) and any(t in MONTHS for t in norm.split())):
        return "date"
    if norm and (norm.replace(" ", "").replace(".", "").isdigit() or norm in _WORD_TO_INT):
        return "number"
    if text.strip()[:1] in "\"'“‘":
        return "title"
    words = set(norm.split())
    if words & AWARD_WORDS:
        return "title"
    if norm in _LEXICON_SET or stripped == stripped.lower():
        return "term"
    comps = [normalize(c) for c in stripped.split(",")]
    if norm in _COUNTRIES or (len(comps) > 1 and comps[-1] in _COUNTRIES):
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
        if {(m, d) for _, m, d in dates} & _month_days(question):
            return None
        variants = [] if dates else [v for v in [normalize(text)] if not _contains(q, v)]
        return Fact(text, kind, tuple(variants), dates) if dates or variants else None
    variants = [v for v in dict.fromkeys(_variants(text, kind)) if v and not _contains(q, v)]
    core = " ".join(t for t in normalize(text).split() if t not in GENERIC)  # "African American literature"
    if not variants or _contains(q, core) or _contains(q, normalize(text)):
        return None
    return Fact(text, kind, tuple(variants))


# -- extraction from a gold answer -------------------------------------------------------------------

_WORD_RE = re.compile(r"[^\W_](?:[\w+&]|['’\-./](?=[^\W_]))*\+*")
_QUOTE_RES = [
    re.compile(r'"([^"\n]+?)"'),
    # single-quoted titles: the opening quote follows a non-word character and precedes a capital or digit;
    # the closing one is not followed by a letter (so "Thieves' Paradise" and "Al-Kuwaiti's" don't close).
    re.compile(r"(?<![\w'])'([A-Z0-9][^\n]*?)'(?![^\W_])"),
]
_GENRE_PHRASE_RES = [
    re.compile(r"((?:[^\W\d_][\w'+-]*\s+){1,3})genre\b"),  # "the French literature genre"
    re.compile(r"\bgenres?\s+of\s+(?:the\s+)?((?:[A-Z][\w'+-]*\s*){1,3})"),  # "genre of Historical Fiction"
    re.compile(
        r"\b((?:[A-Z][\w'+-]*\s+){1,3}(?:literature|fiction|poetry))\b"
    ),  # "African American literature"
]


def _mask(text: str, start: int, end: int) -> str:
    return text[:start] + "\0" * (end - start) + text[end:]


def _sentence_start(text: str, pos: int) -> bool:
    before = text[:pos].rstrip(" \t\"'(")
    return not before or before[-1] in ".!?:;\n"


def _clean_span(span: str) -> str:
    span = span.strip().strip(".,;:!?").strip()
    return re.sub(r"['’]s$|(?<=s)['’]$", "", span)


_GENRE_HEADS = {"literature", "fiction", "poetry"}


def _genre_phrase(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The genre named by the (up to three) words of `text[start:end]` before "genre" / after "genre of":
    the longest tail that holds no function word, possessive or filler ("the French literature" ->
    "French literature", "the film literary" -> "film", "writes in the" -> None)."""
    tokens = [(m.start() + start, m.end() + start, m.group()) for m in re.finditer(r"\S+", text[start:end])]
    while tokens and normalize(tokens[-1][2]) in GENRE_FILLERS - STOP:
        tokens = tokens[:-1]  # "the film literary genre"
    bad = [
        i
        for i, (_, _, t) in enumerate(tokens)
        if re.search(r"['’]s?$", t) or normalize(t) in GENRE_FILLERS | (GENERIC - _GENRE_HEADS)
    ]
    tokens = tokens[bad[-1] + 1 :] if bad else tokens
    if not tokens or (len(tokens) == 1 and normalize(tokens[0][2]) in _GENRE_HEADS):
        return None
    return tokens[0][0], tokens[-1][1]


Run = list[tuple[int, int]]  # (start, end) of each word of a capitalized run


def _capitalized_runs(text: str) -> list[Run]:
    """Maximal runs of capitalized words joined by single spaces, with name particles and `of`, `the`,
    `for`, `a` allowed between capitals ("University of Karachi", "Nebula Award for Best Novel"), `in`
    after an award or organisation word, and initials ("Weston A. Price")."""
    runs: list[Run] = [[]]
    for m in _WORD_RE.finditer(text):
        cur = runs[-1]
        gap = text[cur[-1][1] : m.start()] if cur else ""
        joined = bool(cur) and (gap == " " or (gap == ". " and cur[-1][1] - cur[-1][0] == 1))
        connector = (
            m.group().lower() in RUN_CONNECTORS
            or (
                m.group() == "in"  # "Distinguished Author Award in Islamic Literature"
                and any(text[a:b].lower() in AWARD_WORDS | ORG_WORDS for a, b in cur)
            )
        )
        if m.group()[0].isupper() or (joined and connector):
            if not joined:
                runs.append([])
            runs[-1].append(m.span())
        elif cur:
            runs.append([])
    out = []
    for run in runs:
        while run and not text[run[-1][0]].isupper():  # no trailing connectors
            run = run[:-1]
        if run:
            out.append(run)
    return out


def _merge_places(text: str, runs: list[Run]) -> list[Run]:
    """Join "Kuwait City" + ", " + "Kuwait" into one run when the second part is a country, or when the
    first follows "in"/"from" and the second ends the clause ("born in Portland, Oregon.")."""
    merged: list[Run] = []
    for run in runs:
        if merged and text[merged[-1][-1][1] : run[0][0]] == ", " and len(run) <= 3:
            before, after = text[: merged[-1][0][0]].split(), text[run[-1][1] :].lstrip()
            ends_clause = not after or after[0] in ".,;:!?)"
            after_in = bool(before) and before[-1].lower() in ("in", "from") and ends_clause
            if normalize(text[run[0][0] : run[-1][1]]) in _COUNTRIES or (after_in and len(merged[-1]) <= 3):
                merged[-1] = merged[-1] + run
                continue
        merged.append(run)
    return merged


def _run_fact(text: str, run: Run) -> tuple[int, int, str] | None:
    """Clean one capitalized run into (start, end, kind), or None for a run that is not a fact."""

    def word(i: int) -> str:
        return normalize(_clean_span(text[run[i][0] : run[i][1]]))

    first_at_start = _sentence_start(text, run[0][0])
    while run and word(0) in STOP | GENERIC | _WORD_TO_INT.keys():
        run, first_at_start = run[1:], False
    while run and not text[run[0][0]].isupper():
        run = run[1:]
    if not run:
        return None
    head = word(0)
    if first_at_start and len(run) == 1 and head not in _COUNTRIES:
        return None  # a lone capitalized sentence opener: "Growing", "Evolving", "Works"; see key_facts
    if first_at_start and (head in COMMON or (re.search(r"(ing|ly|ed)$", head) and len(head) > 5)):
        run = run[1:]  # "Displaying Raven ..." (but "Basil Mahfouz ..." keeps its first name)
    start, end = run[0][0], run[-1][1]
    span = _clean_span(text[start:end])
    norm = normalize(span)
    if not norm or all(t in STOP | GENERIC | WEEKDAYS or t in MONTHS or len(t) == 1 for t in norm.split()):
        return None
    tokens = set(norm.split())
    if tokens & AWARD_WORDS:
        return start, end, "title"
    if norm in _LEXICON_SET:
        return start, end, "term"
    before = text[:start].split()
    after_preposition = bool(before) and before[-1].lower() in PLACE_PREPOSITIONS
    if (
        norm in _COUNTRIES
        or "," in span
        or tokens & PLACE_WORDS
        or (after_preposition and not tokens & ORG_WORDS)
    ):
        return start, end, "place"
    return start, end, "name"


# "<...father/mother...> was / worked as / being a(n) [up to two modifiers] <word ending like a profession>",
# within one sentence; the caller checks that the sentence is about a parent.
_PARENT_JOB_RE = re.compile(
    r"[^.;!?\0]*?\b(?:was|is|as|being)\s+an?\s+(?:[a-z-]+\s+){0,2}?([a-z]+(?:ist|ian|er|or|eon))\b"
)
_NO_INFO_RE = re.compile(
    r"\bno (?:definitive |publicly available |public |available )*information\b|\bnot (?:been )?"
    r"(?:confirmed|disclosed|known)\b|\bunclear\b|\bremain undisclosed\b",
    re.I,
)
_AUXILIARIES = wordset(
    """
    also always am are be been being can could deeply did do does frequently greatly had has have highly
    is may might must often shall should significantly usually very was were will would
    """
)
_MAX_PHRASES = 6


def _content_phrases(masked: str, question: str) -> list[tuple[int, int, str]]:
    """Fallback for descriptive answers with no named fact: lowercase content phrases ("lyrical prose",
    "intricate plot lines") and the single-word items of enumerations ("themes of community, identity,
    displacement, and resilience"). A phrase is a maximal run of lowercase words that are neither
    function, generic or common words nor in the question, with verb-like words (-ly, -ing, -ed at
    either end, a leading -s) trimmed; phrases need two words, enumeration items six letters."""
    q_tokens = set(normalize(question).split())
    breakers = STOP | GENERIC | COMMON | _AUXILIARIES | _WORD_TO_INT.keys() | q_tokens

    def content(word: str) -> bool:
        norm = normalize(word)
        return word[0].islower() and bool(norm) and not set(norm.split()) & breakers

    items = set()  # single-word items of "a, b, (and) c" lists
    for sentence in re.split(r"[.;:!?\n]", masked):
        segments = [seg.split() for seg in re.split(r",\s*", sentence)]
        for i, seg in enumerate(segments):
            if i >= 2 and seg[:1] in (["and"], ["or"]) and len(seg) > 1:
                items.add(seg[1])
                j = i - 1
                while j >= 1 and len(segments[j]) == 1:
                    items.add(segments[j][0])
                    j -= 1
                items |= set(segments[j][-1:])

    runs, run = [], []
    for m in re.finditer(r"[^\W_][\w'-]*|[^\w\s]", masked):
        gap = masked[run[-1].end() : m.start()] if run else " "
        if content(m.group()) and gap.strip() == "":
            run.append(m)
            continue
        runs.append(run)
        run = [m] if content(m.group()) else []
    runs.append(run)
    out = []
    for run in runs:
        while run and (
            re.search(r"(ly|ing|ed)$", run[0].group()) or (len(run) > 1 and _leading_verb(run[0].group()))
        ):
            run = run[1:]
        while run and re.search(r"(ly|ing|ed)$", run[-1].group()):
            run = run[:-1]
        if len(run) >= 2 or (run and run[0].group() in items and len(run[0].group()) >= 6):
            out.append((run[0].start(), run[-1].end(), "term"))
    return out[:_MAX_PHRASES]


def _leading_verb(word: str) -> bool:
    """A third-person verb opening a phrase ("involves extensive research"): ends in -s but not -ss/-us."""
    return word.endswith("s") and not word.endswith(("ss", "us", "is"))


def key_facts(question: str, answer: str, facts: list[str] | None = None) -> list[Fact]:
    """The target facts of a forget item: spans of `answer` that `question` does not contain.

    With `facts` (a dataset that lists them), exactly those, classified and expanded into variants; derived
    variants that the question contains are dropped, but a listed fact is never dropped as a whole.
    Otherwise, extraction by stages (module docstring).

    When none of the stages finds a fact that the question lacks (descriptive answers: writing style,
    themes), lowercase content phrases are taken instead (`_content_phrases`), unless the answer says
    that nothing is known ("There is no publicly available information ...") -- then there is no fact.
    On R-TOFU forget01, 383 of 400 rows get at least one fact; the gold CoT leaks for 93 % of those.

    Known failure modes:
    * paraphrase is invisible: "father sold houses" vs the fact "Real Estate Agent";
    * lowercase knowledge outside the lexicon is only caught by the fallback, and only when nothing
      else was found; fallback phrases are noisy ("emotional journeys align") and some are generic
      ("identity", "community") so an unrelated CoT can match them;
    * a capitalized word alone at the start of a sentence is never a fact (it is usually "Growing",
      "Evolving", "Works"), unless it is a country: an answer "Rohani expanded ..." loses "Rohani";
    * a derived form counts as new: question "Kazakhstan", answer "Kazakhstani" -> fact "Kazakhstani";
    * spelled-out numbers in the answer ("two of his books") are not extracted; digits are;
    * a lexicon word with another sense matches that sense too: fact "mechanics" (the parents'
      profession) leaks through "the mechanics of the plot".
    """
    if facts is not None:
        # a listed fact that the question fully contains is kept whole (the dataset says it is a fact)
        return [make_fact(f, question=question) or make_fact(f) for f in facts if f.strip()]

    spans: list[tuple[int, int, str]] = []  # (start, end, kind) in `answer`
    masked = answer.translate(_CHAR_MAP)  # ASCII quotes and dashes, one character for one
    for start, end, _ in find_dates(masked):
        spans.append((start, end, "date"))
        masked = _mask(masked, start, end)
    for rx in _QUOTE_RES:
        for m in rx.finditer(masked):
            title = m.group(1)
            if "\0" not in title and any(c.isupper() for c in title) and len(title.split()) <= 20:
                spans.append((*m.span(1), "title"))
                masked = _mask(masked, *m.span())
    for rx in _GENRE_PHRASE_RES:
        for m in rx.finditer(masked):
            if phrase := _genre_phrase(masked, *m.span(1)):
                spans.append((*phrase, "term"))
                masked = _mask(masked, *phrase)
    for rx in _LEXICON_RES:
        for m in rx.finditer(masked.lower()):
            before, after = masked[: m.start()].split()[-1:], masked[m.end() :].split()[:1]
            in_name = masked[m.start()].isupper() and any(w[0].isupper() for w in before + after)
            if normalize(m.group()) in GENERIC or in_name:  # "Historical Fiction Excellence Award"
                continue
            spans.append((*m.span(), "term"))
            masked = _mask(masked, *m.span())
    for m in _PARENT_JOB_RE.finditer(masked):  # "her mother worked as a podiatrist"
        if (
            re.search(r"\b(?:father|mother|parents?)\b", m.group(), re.I)
            and normalize(m.group(1)) not in GENERIC
        ):
            spans.append((*m.span(1), "term"))
            masked = _mask(masked, *m.span(1))
    for run in _merge_places(masked, _capitalized_runs(masked)):
        if found := _run_fact(masked, run):
            spans.append(found)
        masked = _mask(masked, run[0][0], run[-1][1])
    for m in re.finditer(r"(?<![\w.#\0])\d(?:[\d,]*\d)?(?:\.\d+)?(?:'?s)?(?![\w\0])", masked):
        spans.append((*m.span(), "number"))

    facts = _facts_from_spans(answer, spans, question)
    if not facts and not _NO_INFO_RE.search(answer):
        facts = _facts_from_spans(answer, _content_phrases(masked, question), question)
    return facts


def _facts_from_spans(answer: str, spans: list[tuple[int, int, str]], question: str) -> list[Fact]:
    """One `Fact` per distinct span text, in answer order; spans that the question contains are dropped."""
    out: dict[str, Fact] = {}
    for start, end, kind in sorted(spans):
        span = answer[start:end] if kind == "number" else _clean_span(answer[start:end])
        fact = make_fact(span, kind, question)
        if fact and normalize(span) not in out:
            out[normalize(span)] = fact
    return list(out.values())


# ----------------------------------------------------------------------------------------------------
# leak detection
# ----------------------------------------------------------------------------------------------------


def find_leaks(text: str, facts: list[Fact]) -> list[str]:
    """Texts of the facts that `text` reveals (each once, in the order of `facts`)."""
    padded = f" {normalize(text)} "
    dates = month_days = None
    leaks = []
    for fact in facts:
        hit = any(_contains(padded, v) for v in fact.variants)
        if not hit and fact.dates:
            if dates is None:
                dates = {r for _, _, rs in find_dates(text) for r in rs}
                month_days = _month_days(text)
            hit = bool(fact.dates & dates) or bool({(m, d) for _, m, d in fact.dates} & month_days)
        if hit and fact.text not in leaks:
            leaks.append(fact.text)
    return leaks


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


def stepwise_leakage(cot: str, facts: list[Fact]) -> float:
    """Fraction of the CoT's sentences (steps) that leak at least one fact; 0.0 for an empty CoT."""
    steps = split_sentences(cot)
    if not steps:
        return 0.0
    return sum(bool(find_leaks(s, facts)) for s in steps) / len(steps)
