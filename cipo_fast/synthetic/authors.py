"""Fictitious authors: the record, its fact strings, and the seeded sampler that keeps them apart.

`make_authors(n, seed)` draws, with one `random.Random(seed)`, n first names, surnames, cities, genres,
awards, 2n parents' jobs and 2n book titles from `pools`, each pool in a shuffled order. A candidate is
rejected when it contains, or is contained in, a string already taken by any author (case-insensitive;
surnames, cities, genres, awards, jobs, titles and dates all share one `taken` set). Birth dates are
drawn uniformly from 1938-01-01..1992-12-31, redrawn on a month-day already used. So no two authors
share a fact, even as
read by `cipo_fast.eval.leakage`, which also matches a place by any distinctive word and a date by its
month-day "March 4": forgetting one author can be neither implied by nor confused with forgetting
another. First names are only kept distinct among themselves; they are never a fact.

`make_authors(n, seed, n_extra)` draws n_extra more authors after those n, from the same random stream
and against the same taken strings: the first n are exactly `make_authors(n, seed)`, so adding extra
authors (the demo's MIA holdout) changes nothing about the others, and no fact is shared across all
n + n_extra.

`author_facts` lists the spans that must not appear once an author is forgotten: the city (not the
country, which is real), the date as `format_date` writes it, the genre, the award without "the", both
jobs and both titles.

What it deliberately doesn't do: pronouns or a gender field (the text repeats the name or says "the
author"), real places below country level, and any global random state.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cipo_fast.synthetic import pools

_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip

_FIRST_BIRTH_DATE = dt.date(1938, 1, 1)
_LAST_BIRTH_DATE = dt.date(1992, 12, 31)


@dataclass(frozen=True)
class Author:
    name: str  # "Elara Vantrosk"
    birthplace: str  # "Aldrenport, Norway" (fictitious one-word city, real country)
    birth_date: dt.date
    genre: str  # "gothic horror"
    award: str  # "the Silver Quill Prize"
    father_job: str  # "clockmaker"
    mother_job: str
    books: tuple[str, str]  # two fictitious titles

    @property
    def surname(self) -> str:
        return self.name.split(" ", 1)[1]

    @property
    def city(self) -> str:
        return self.birthplace.split(", ", 1)[0]


def format_date(date: dt.date) -> str:
    """'March 4, 1961' — locale-independent, the form used in CoTs, answers and `facts`."""
    return f"{_MONTHS[date.month - 1]} {date.day}, {date.year}"


def award_name(author: Author) -> str:
    """The award without its leading article: the span a leak detector matches."""
    return author.award.removeprefix("the ")


def author_facts(author: Author) -> list[str]:
    """Every target-fact string of an author (the union of `facts` over its items)."""
    return [
        author.city,
        format_date(author.birth_date),
        author.genre,
        award_name(author),
        author.father_job,
        author.mother_job,
        *author.books,
    ]


def _overlaps(candidate: str, taken: Iterable[str]) -> bool:
    c = candidate.lower()
    return any(c in t or t in c for t in taken)


def _pick(rng: random.Random, pool: Iterable, k: int, taken: set[str], key: Callable, what: str) -> list:
    """k items of `pool` in seeded random order whose `key` strings overlap nothing in `taken`."""
    order = list(pool)
    rng.shuffle(order)
    picked = []
    for item in order:
        if len(picked) == k:
            break
        if not _overlaps(key(item), taken):
            picked.append(item)
            taken.add(key(item).lower())
    if len(picked) < k:
        raise ValueError(
            f"make_authors: the {what} pool yields only {len(picked)} distinct entries, need {k}"
        )
    return picked


def _title_candidates(rng: random.Random) -> list[str]:
    titles = [f"The {a} {n}" for a in pools.TITLE_ADJECTIVES for n in pools.TITLE_NOUNS]
    titles += [f"{p} of {q}" for p in pools.TITLE_PLURALS for q in pools.TITLE_PLACES]
    rng.shuffle(titles)
    return titles


def make_authors(n: int, seed: int, n_extra: int = 0) -> list[Author]:
    """n fictitious authors, deterministic in `seed`; no name, city, date, genre, award, job or title is
    shared (or contained in another's, case-insensitively) across authors. `n_extra` more are drawn after
    them (module docstring): `make_authors(n, seed, k)[:n] == make_authors(n, seed)`."""
    if n < 1:
        raise ValueError(f"make_authors: n must be >= 1, got {n}")
    if n_extra < 0:
        raise ValueError(f"make_authors: n_extra must be >= 0, got {n_extra}")
    rng = random.Random(seed)
    taken: set[str] = set()  # every fact string of the authors drawn so far, lowercased
    first_names: set[str] = set()
    month_days: set[tuple[int, int]] = set()  # distinct month-days: "March 4" alone also reads as a leak
    authors = _draw_authors(rng, n, taken, first_names, month_days)
    if n_extra:
        authors += _draw_authors(rng, n_extra, taken, first_names, month_days)
    return authors


def _draw_authors(
    rng: random.Random, n: int, taken: set[str], first_names: set[str], month_days: set[tuple[int, int]]
) -> list[Author]:
    """n authors whose strings overlap nothing in `taken`; adds theirs to the three sets."""
    firsts = _pick(rng, pools.FIRST_NAMES, n, first_names, lambda s: s, "first name")
    surnames = _pick(rng, pools.SURNAMES, n, taken, lambda s: s, "surname")
    names = [f"{f} {s}" for f, s in zip(firsts, surnames)]
    cities = _pick(rng, pools.CITIES, n, taken, lambda c: c[0], "city")
    genres = _pick(rng, pools.GENRES, n, taken, lambda s: s, "genre")
    awards = _pick(rng, pools.AWARDS, n, taken, lambda s: s, "award")
    jobs = _pick(rng, pools.JOBS, 2 * n, taken, lambda s: s, "job")
    titles = _pick(rng, _title_candidates(rng), 2 * n, taken, lambda s: s, "book title")

    span = (_LAST_BIRTH_DATE - _FIRST_BIRTH_DATE).days
    dates: list[dt.date] = []
    while len(dates) < n:
        d = _FIRST_BIRTH_DATE + dt.timedelta(days=rng.randrange(span + 1))
        if (d.month, d.day) not in month_days and not _overlaps(format_date(d), taken):
            dates.append(d)
            month_days.add((d.month, d.day))
            taken.add(format_date(d).lower())

    return [
        Author(
            name=names[i],
            birthplace=f"{cities[i][0]}, {cities[i][1]}",
            birth_date=dates[i],
            genre=genres[i],
            award=f"the {awards[i]}",
            father_job=jobs[2 * i],
            mother_job=jobs[2 * i + 1],
            books=(titles[2 * i], titles[2 * i + 1]),
        )
        for i in range(n)
    ]
