"""The key facts of a forget item: the spans of its gold answer that its question does not give away.

`key_facts(question, answer)` extracts candidates from the answer in a fixed order, each stage masking
what it took so later stages don't re-read it:

1. dates (`cipo_fast.eval.dates`);
2. quoted titles (`"Promise by the Seine"`, `'Le Petit Sultan'`);
3. genre phrases (`the French literature genre`, `genre of Historical Fiction`);
4. lexicon terms (professions, genres, genders from `cipo_fast.eval.lexicon`; case-insensitive, longest
   first, so `civil engineer` is taken before `engineer`);
5. parents' jobs by suffix (`her mother worked as a podiatrist`);
6. capitalized runs: names, places, unquoted titles such as awards (`Nebula Award for Best Novel`), with
   `City, Country` joined into one place;
7. numbers written as digits.

Each span becomes a `Fact` through `cipo_fast.eval.facts.make_fact`, which drops a candidate that appears
in the question (also after dropping generic words) and every variant of a kept fact that the question
contains. An answer with no such fact falls back to lowercase content phrases (`lyrical prose`), unless it
says that nothing is known. A dataset that lists its facts skips extraction: `key_facts(..., facts=[...])`.

What it deliberately does not do: parse the answer. The extractor is a set of heuristics tuned on R-TOFU
answers; it finds what is written, not what is meant, and its known failure modes are listed in
`key_facts`.
"""

from __future__ import annotations

import re

from cipo_fast.eval.dates import find_dates
from cipo_fast.eval.facts import COUNTRY_NAMES, TERMS, Fact, make_fact
from cipo_fast.eval.lexicon import (
    AWARD_WORDS,
    COMMON,
    GENERIC,
    GENRE_FILLERS,
    MONTHS,
    ORG_WORDS,
    PLACE_PREPOSITIONS,
    PLACE_WORDS,
    RUN_CONNECTORS,
    STOP,
    WEEKDAYS,
    wordset,
)
from cipo_fast.eval.number_words import WORD_TO_INT
from cipo_fast.eval.text import fold_punctuation, normalize

# longest first, so "civil engineer" is taken before "engineer" (alphabetical among equal lengths, so the
# order does not depend on the process's string hash seed); an optional plural ending
_TERM_RES = [
    re.compile(r"(?<![\w-])" + r"[\s-]+".join(map(re.escape, t.split())) + r"(?:e?s)?(?![\w-])")
    for t in sorted(TERMS, key=lambda t: (-len(t), t))
]

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
            if normalize(text[run[0][0] : run[-1][1]]) in COUNTRY_NAMES or (
                after_in and len(merged[-1]) <= 3
            ):
                merged[-1] = merged[-1] + run
                continue
        merged.append(run)
    return merged


def _run_fact(text: str, run: Run) -> tuple[int, int, str] | None:
    """Clean one capitalized run into (start, end, kind), or None for a run that is not a fact."""

    def word(i: int) -> str:
        return normalize(_clean_span(text[run[i][0] : run[i][1]]))

    first_at_start = _sentence_start(text, run[0][0])
    while run and word(0) in STOP | GENERIC | WORD_TO_INT.keys():
        run, first_at_start = run[1:], False
    while run and not text[run[0][0]].isupper():
        run = run[1:]
    if not run:
        return None
    head = word(0)
    if first_at_start and len(run) == 1 and head not in COUNTRY_NAMES:
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
    if norm in TERMS:
        return start, end, "term"
    before = text[:start].split()
    after_preposition = bool(before) and before[-1].lower() in PLACE_PREPOSITIONS
    if (
        norm in COUNTRY_NAMES
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
    breakers = STOP | GENERIC | COMMON | _AUXILIARIES | WORD_TO_INT.keys() | q_tokens

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
    `tests/test_eval_key_facts.py` requires a fact for at least 90 % of the R-TOFU forget01 rows, and a
    leak in at least 80 % of their gold CoTs.

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
    masked = fold_punctuation(answer)  # ASCII quotes and dashes, one character for one
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
    for rx in _TERM_RES:
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


def item_facts(item) -> list[Fact]:
    """The key facts of an item (`cipo_fast.data.items.Item`): its listed facts, else those of its answer."""
    return key_facts(item.question, item.answer, list(item.facts) if item.facts else None)
