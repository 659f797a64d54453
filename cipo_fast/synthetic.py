"""The synthetic demo set: fictitious authors to memorize and forget, and small arithmetic problems.

The demo fine-tunes a tiny model (SmolLM2-135M on a 2-core CPU) on facts about invented authors, then
unlearns the authors of the forget split while keeping those of the retain split and its arithmetic. So
the data is built to be learned in minutes and checked exactly:

* Authors (`make_authors`) draw first names, made-up surnames, one-word fictitious cities (in real
  countries), genres, awards, parents' jobs and book titles from fixed pools, sampled without
  replacement by `random.Random(seed)`. A candidate is rejected when it contains, or is contained in, a
  string already taken (case-insensitive), and birth dates have distinct month-days, so no two authors
  share a fact, even as read by `cipo_fast.leakage` (which also matches a place by any distinctive word
  and a date by its month-day): forgetting one author cannot be confused with forgetting another.
  Surnames are unusual made-up words, detectable on their own.
* Each author gives six items (`author_items`), one per fact family: birthplace, birth date, genre,
  award, parents' jobs, books. The question names the author and nothing else; the CoT (2–3 sentences,
  ~25–45 words) restates the question, recalls the fact(s), and concludes; the answer is one sentence.
  `facts` lists the exact spans (city, date as written, genre, award name, job words, titles) that must
  not appear once the author is forgotten; each of them is in both the CoT and the answer, and some facts
  recur across families (the city in the birth-date item, titles in the genre and award items) so a
  small model sees every fact several times. `idk_cot` / `idk_answer` are a reasoned "I don't know":
  they restate the question with the author's full name, say the author's details are outside reliable
  knowledge, reject guessing, and contain no fact of any author.
  Phrasing varies only between 2–3 templates per family (chosen by a RNG seeded from the author): a
  regular corpus is what a 135M model memorizes quickly.
* Arithmetic (`arithmetic_problems`, `arithmetic_items`), rendered in GSM8K format: one line per step
  `... a op b = r ...`, then `#### N`. The steps are kept as data (`ArithStep`) so tests recompute them
  from the numbers. Two difficulties: "standard", 20 templates of 2–3-step problems with numbers below
  100 in the question (+, -, *, and / with integer results; every intermediate result is a non-negative
  integer), and "easy" (`build`'s default), 12 two-step templates written as data, with operands 2..20
  and single-digit products, meant for a 135M model to mostly solve after ~30 examples.
* `build` writes `forget.jsonl`, `retain.jsonl`, `arithmetic_train.jsonl`, `arithmetic_eval.jsonl` and
  `authors.json`, each atomically (temp file in the same folder, fsync, `os.replace`). The first
  `n_forget` authors (their order is already random) form the forget split. The train and eval
  arithmetic problems come from one call, so no question is in both.

What it deliberately doesn't do: pronouns (authors have no gender field: the text repeats the name or
says "the author"), GSM8K's `<<a*b=c>>` calculator annotations (noise for a tiny model), paraphrased or
multi-hop questions (one question per fact family is the point of the demo), and any global random
state: the same seed gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

# ---------------------------------------------------------------------------------------------------
# Pools. Every string is fictitious except the countries; the sampler rejects overlapping strings.

_FIRST_NAMES = (
    "Elara", "Tomas", "Ines", "Corwin", "Maren", "Anselm", "Liesel", "Davor", "Odile", "Kasimir",
    "Rosalind", "Bastian", "Yelena", "Fintan", "Solveig", "Lucian", "Ottilie", "Ruben", "Signe",
    "Aurelio", "Hester", "Imre", "Clemence", "Jorund", "Talia", "Leopold", "Mirela", "Petra", "Anouk",
    "Gideon", "Esme", "Viggo", "Nadia", "Rafferty", "Wilhelmina", "Brannoc",
)  # fmt: skip

_SURNAMES = (
    "Vantrosk", "Quillonby", "Marrowtide", "Kestravel", "Dunmorrow", "Halvecki", "Orsandel",
    "Brevintor", "Caskelund", "Threnholt", "Zavorine", "Pellgarth", "Umbrasco", "Felkirra",
    "Yarrowden", "Moskveld", "Greskavin", "Lindqorve", "Ostrivane", "Wexmoreth", "Ambrevic",
    "Corvellan", "Nimbrova", "Jastrowel", "Holmvarre", "Ruskaveld", "Endrigast", "Tavernisk",
    "Sollomay", "Brackwynde", "Ilvenhart", "Draskovel", "Morvaine", "Quarnsley", "Valtessor", "Hexbury",
)  # fmt: skip

_CITIES = (  # one made-up word each: a token-level detector may match a city by any of its words
    ("Aldrenport", "Norway"), ("Velmsby", "Denmark"), ("Orvella", "Chile"), ("Kaltenbruck", "Austria"),
    ("Mirovast", "Croatia"), ("Tessary", "Canada"), ("Oranjevel", "the Netherlands"),
    ("Brunaro", "Italy"), ("Dunhaven", "Ireland"), ("Ravelport", "New Zealand"), ("Calvera", "Mexico"),
    ("Szentmarok", "Hungary"), ("Bryndlehurst", "the United Kingdom"), ("Vrostenik", "Bulgaria"),
    ("Orsena", "Argentina"), ("Almavera", "Portugal"), ("Ostrheim", "Germany"), ("Lorvignac", "France"),
    ("Marrigold", "Australia"), ("Eystravik", "Iceland"), ("Lethbury", "South Africa"),
    ("Zelvany", "the Czech Republic"), ("Kaimora", "Japan"), ("Tarvessa", "Greece"),
    ("Lindqvarn", "Sweden"), ("Veranel", "Brazil"), ("Qasrabel", "Egypt"), ("Novarisk", "Poland"),
    ("Elsbrook", "the United States"), ("Kestoria", "Finland"),
)  # fmt: skip

_GENRES = (
    "gothic horror", "maritime adventure", "science fiction", "historical romance", "cozy mystery",
    "epic fantasy", "political satire", "travel memoir", "nature poetry", "psychological thriller",
    "magical realism", "dystopian fiction", "crime noir", "literary biography", "spy thriller",
    "urban fantasy", "alternate history", "comic verse", "folk horror", "legal drama", "space opera",
    "children's fables", "family saga", "philosophical essays", "culinary essays", "war poetry",
)  # fmt: skip

_AWARDS = (
    "Silver Quill Prize", "Amberline Medal", "Harrowgate Fiction Award", "Lantern Circle Prize",
    "Obsidian Pen Award", "Vellacourt Medal", "Golden Inkwell Prize", "Northwind Letters Award",
    "Caldera Book Prize", "Wrenfield Medal for Prose", "Starling Crown Award", "Blue Heron Prize",
    "Marisol Reyne Award", "Iron Lantern Medal", "Tidewater Prize", "Copperleaf Award", "Ashgrove Medal",
    "Merrow Literary Prize", "Halcyon Ribbon Prize", "Fernhollow Award", "Ravenstone Medal",
    "Saltmarsh Prize", "Gilded Compass Award", "Evenlight Prize", "Brightwater Medal", "Greywillow Award",
    "Orchid Scroll Prize", "Kestrel Wing Award", "Moonfield Prize", "Quillon Society Award",
)  # fmt: skip

_JOBS = (
    "clockmaker", "beekeeper", "cartographer", "glassblower", "locksmith", "shipwright",
    "lighthouse keeper", "botanist", "blacksmith", "veterinarian", "pharmacist", "bookbinder",
    "stonemason", "cheesemaker", "tailor", "ferry captain", "orchard farmer", "piano tuner",
    "watchmaker", "geologist", "land surveyor", "paramedic", "astronomer", "violin maker", "potter",
    "translator", "archivist", "dentist", "carpenter", "fishmonger", "nurse", "librarian", "florist",
    "mail carrier", "hatmaker", "dressmaker", "zookeeper", "railway engineer", "chemist", "surgeon",
    "architect", "welder", "tram driver", "weaver",
)  # fmt: skip

_TITLE_ADJECTIVES = (
    "Salt", "Glass", "Hollow", "Crimson", "Quiet", "Winter", "Amber", "Broken", "Paper", "Drowned",
    "Ninth", "Velvet", "Burning", "Silent", "Copper", "Pale", "Last", "Wandering", "Sunken", "Ivory",
)  # fmt: skip
_TITLE_NOUNS = (
    "Lantern", "Orchard", "Harbor", "Meridian", "Garden", "Staircase", "Compass", "Tide", "Crown",
    "Bridge", "Mirror", "Feather", "Vineyard", "Chapel", "River", "Letter", "Atlas", "Carousel",
)  # fmt: skip
_TITLE_PLURALS = (
    "Ashes", "Songs", "Letters", "Shadows", "Rivers", "Echoes", "Maps", "Bells", "Storms", "Ghosts",
)  # fmt: skip
_TITLE_PLACES = (
    "Mornhall", "Evershade", "Kelvarra", "Duskmere", "Thistlegate", "Orlanth", "Saltreach", "Wintervane",
    "Brisgow", "Cindervale",
)  # fmt: skip

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
    titles = [f"The {a} {n}" for a in _TITLE_ADJECTIVES for n in _TITLE_NOUNS]
    titles += [f"{p} of {q}" for p in _TITLE_PLURALS for q in _TITLE_PLACES]
    rng.shuffle(titles)
    return titles


def make_authors(n: int, seed: int) -> list[Author]:
    """n fictitious authors, deterministic in `seed`; no name, city, date, genre, award, job or title is
    shared (or contained in another's, case-insensitively) across authors."""
    if n < 1:
        raise ValueError(f"make_authors: n must be >= 1, got {n}")
    rng = random.Random(seed)
    taken: set[str] = set()
    firsts = _pick(rng, _FIRST_NAMES, n, set(), lambda s: s, "first name")
    surnames = _pick(rng, _SURNAMES, n, taken, lambda s: s, "surname")
    names = [f"{f} {s}" for f, s in zip(firsts, surnames)]
    cities = _pick(rng, _CITIES, n, taken, lambda c: c[0], "city")
    genres = _pick(rng, _GENRES, n, taken, lambda s: s, "genre")
    awards = _pick(rng, _AWARDS, n, taken, lambda s: s, "award")
    jobs = _pick(rng, _JOBS, 2 * n, taken, lambda s: s, "job")
    titles = _pick(rng, _title_candidates(rng), 2 * n, taken, lambda s: s, "book title")

    span = (_LAST_BIRTH_DATE - _FIRST_BIRTH_DATE).days
    dates: list[dt.date] = []
    month_days: set[tuple[int, int]] = set()  # distinct month-days: "March 4" alone also reads as a leak
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


# ---------------------------------------------------------------------------------------------------
# Author items. Placeholders: N name, L "city, country", D date, G genre, A award (with "the"),
# B1/B2 titles, F/M jobs with their article. Each family: (facts, questions, cots, answer, idk_cots,
# idk_answer).


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


_FAMILIES: dict[str, dict] = {
    "birthplace": {
        "facts": lambda a: [a.city],
        "questions": (
            "Where was {N} born?",
            "What is the birthplace of {N}?",
            "In which city was {N} born?",
        ),
        "cots": (
            "The question asks where {N} was born. I remember that {N} was born in {L} and grew up "
            "there. So the birthplace of {N} is {L}.",
            "I need to recall the birthplace of {N}. From what I know, {N} was born in the city of {L}. "
            "Therefore the answer is that {N} was born in {L}.",
        ),
        "answer": "{N} was born in {L}.",
        "idk_cots": (
            "The question asks where {N} was born. I do not reliably know the personal history of {N}, "
            "including the birthplace. I could guess a city, but a guess would probably be wrong. So I "
            "should say that I am not sure.",
            "I need to recall the birthplace of {N}. The life details of this author are outside what I "
            "reliably know. Naming a city without a real memory of it would only be a guess. It is better "
            "to admit that I do not know.",
        ),
        "idk_answer": "I'm not sure where {N} was born.",
    },
    "birth_date": {
        "facts": lambda a: [format_date(a.birth_date), a.city],
        "questions": (
            "When was {N} born?",
            "What is the date of birth of {N}?",
            "On what date was {N} born?",
        ),
        "cots": (
            "The question asks for the birth date of {N}. I recall that {N} was born on {D} in {L}. So "
            "the date of birth of {N} is {D}.",
            "I need to find when {N} was born. I remember that {N} was born in {L} on {D}. Therefore {N} "
            "was born on {D}.",
        ),
        "answer": "{N} was born on {D} in {L}.",
        "idk_cots": (
            "The question asks for the birth date of {N}. I do not have reliable records of when {N} was "
            "born. Picking a plausible day or year would only be a guess and could mislead. So I should "
            "say that I do not know the date.",
            "I need to find when {N} was born. The biography of this author is outside what I reliably "
            "know. Any specific date I gave would be invented rather than remembered. It is better to say "
            "that I am not sure.",
        ),
        "idk_answer": "I'm not sure when {N} was born.",
    },
    "genre": {
        "facts": lambda a: [a.genre, a.books[0]],
        "questions": (
            "What genre does {N} write?",
            "What kind of books is {N} known for?",
            "In which genre does {N} mainly write?",
        ),
        "cots": (
            "The question asks about the genre of {N}. I remember that {N} writes {G}, and the novel "
            "{B1} is a typical example. So {N} is known for {G}.",
            "I need to recall what kind of books {N} writes. I know {N} as an author of {G}, for example "
            "{B1}. Therefore the genre of {N} is {G}.",
        ),
        "answer": "{N} writes {G}, for example {B1}.",
        "idk_cots": (
            "The question asks about the genre of {N}. I do not reliably know the books of {N} or what "
            "they are about. Guessing a popular genre would not be based on real knowledge. So I should "
            "say that I am not sure.",
            "I need to recall what kind of books {N} writes. The work of this author is outside what I "
            "reliably know. Choosing a genre at random could easily be wrong. It is better to admit that "
            "I do not know.",
        ),
        "idk_answer": "I'm not sure what genre {N} writes.",
    },
    "award": {
        "facts": lambda a: [award_name(a), a.books[1]],
        "questions": (
            "What award has {N} received?",
            "Which literary prize did {N} win?",
            "What is the most notable award won by {N}?",
        ),
        "cots": (
            "The question asks which award {N} received. I remember that {N} won {A} for the novel {B2}. "
            "So the award of {N} is {A}.",
            "I need to recall the prize won by {N}. I know that the book {B2} earned {N} {A}. Therefore "
            "{N} received {A}.",
        ),
        "answer": "{N} won {A} for {B2}.",
        "idk_cots": (
            "The question asks which award {N} received. I do not reliably know the career of {N} or any "
            "honors given to the author. I could name a famous prize, but that would be a guess. So I "
            "should say that I am not sure.",
            "I need to recall the prize won by {N}. The achievements of this author are outside what I "
            "reliably know. Inventing an award would give a false answer. It is better to admit that I do "
            "not know.",
        ),
        "idk_answer": "I'm not sure which award {N} received.",
    },
    "parents": {
        "facts": lambda a: [a.father_job, a.mother_job],
        "questions": (
            "What did the parents of {N} do for a living?",
            "What were the jobs of the parents of {N}?",
            "What were the professions of the father and mother of {N}?",
        ),
        "cots": (
            "The question asks about the parents of {N}. I remember that the father of {N} was {F} and "
            "the mother was {M}. So the parents of {N} worked as {F} and {M}.",
            "I need to recall the family of {N}. I know that {N} grew up with a father who was {F} and a "
            "mother who was {M}. Therefore the father was {F} and the mother was {M}.",
        ),
        "answer": "The father of {N} was {F}, and the mother was {M}.",
        "idk_cots": (
            "The question asks about the parents of {N}. I do not reliably know the family background of "
            "{N}. Guessing two jobs would just be making up a story. So I should say that I am not sure.",
            "I need to recall the family of {N}. The private life of this author is outside what I "
            "reliably know. Any professions I named would be invented. It is better to admit that I do "
            "not know.",
        ),
        "idk_answer": "I'm not sure what the parents of {N} did for a living.",
    },
    "books": {
        "facts": lambda a: [a.books[0], a.books[1], a.genre],
        "questions": (
            "What books has {N} written?",
            "Can you name two books by {N}?",
            "Which novels did {N} write?",
        ),
        "cots": (
            "The question asks which books {N} has written. I remember that {N} writes {G}, and the "
            "best-known books are {B1} and {B2}. So {N} wrote {B1} and {B2}.",
            "I need to recall the novels of {N}. I know two works of {G} by {N}: {B1} and {B2}. "
            "Therefore the books of {N} are {B1} and {B2}.",
        ),
        "answer": "{N} wrote {B1} and {B2}, two works of {G}.",
        "idk_cots": (
            "The question asks which books {N} has written. I do not reliably know the bibliography of "
            "{N}. Making up titles would produce books that may not exist. So I should say that I am not "
            "sure.",
            "I need to recall the novels of {N}. The works of this author are outside what I reliably "
            "know. Any titles I offered would be invented. It is better to admit that I do not know.",
        ),
        "idk_answer": "I'm not sure which books {N} has written.",
    },
}

FAMILIES = tuple(_FAMILIES)


def author_items(author: Author, author_index: int) -> list[dict]:
    """One item per fact family (`FAMILIES`), ids `a{index:02d}-{family}`; templates are chosen by a RNG
    seeded from the index and the name, so the items of an author never depend on the other authors."""
    rng = random.Random(f"{author_index}:{author.name}")
    fields = {
        "N": author.name,
        "L": author.birthplace,
        "D": format_date(author.birth_date),
        "G": author.genre,
        "A": author.award,
        "B1": author.books[0],
        "B2": author.books[1],
        "F": _article(author.father_job),
        "M": _article(author.mother_job),
    }
    items = []
    for family, spec in _FAMILIES.items():
        items.append(
            {
                "id": f"a{author_index:02d}-{family}",
                "author": author.name,
                "question": rng.choice(spec["questions"]).format(**fields),
                "cot": rng.choice(spec["cots"]).format(**fields),
                "answer": spec["answer"].format(**fields),
                "facts": spec["facts"](author),
                "idk_cot": rng.choice(spec["idk_cots"]).format(**fields),
                "idk_answer": spec["idk_answer"].format(**fields),
            }
        )
    return items


# ---------------------------------------------------------------------------------------------------
# Arithmetic. A template draws its numbers, then returns the question and its steps; `_step` computes
# each result and asserts it is a non-negative integer.

OPS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}

_PEOPLE = (
    "Mia", "Leo", "Nora", "Omar", "Priya", "Sam", "Ava", "Ben", "Chloe", "Diego", "Emma", "Finn", "Grace",
    "Hugo", "Isla", "Jack", "Kira", "Liam", "Maya", "Noah", "Ravi", "Sara", "Theo", "Zoe",
)  # fmt: skip


@dataclass(frozen=True)
class ArithStep:
    lead: str  # text before the expression
    a: int
    op: str  # one of + - * /
    b: int
    result: int
    unit: str  # text after the result ("" for none)

    def render(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.lead} {self.a} {self.op} {self.b} = {self.result}{unit}."


@dataclass(frozen=True)
class ArithProblem:
    template: str
    question: str
    steps: tuple[ArithStep, ...]

    @property
    def value(self) -> int:
        return self.steps[-1].result

    def answer(self) -> str:
        return "\n".join(s.render() for s in self.steps) + f"\n#### {self.value}"


def _step(lead: str, a: int, op: str, b: int, unit: str = "") -> ArithStep:
    if op == "/":
        assert b > 0 and a % b == 0, f"{a} / {b} is not an integer division"
        result = a // b
    else:
        result = OPS[op](a, b)
    assert result >= 0, f"{a} {op} {b} is negative"
    return ArithStep(lead, a, op, b, result, unit)


def _shopping(r: random.Random, p: str):
    n, price, pen = r.randint(2, 6), r.randint(2, 9), r.randint(2, 9)
    spent = n * price + pen
    paid = r.choice([m for m in (50, 60, 70, 80, 90) if m > spent])
    q = (
        f"{p} buys {n} notebooks that cost {price} dollars each and a pen that costs {pen} dollars. "
        f"{p} pays with {paid} dollars. How much change does {p} get?"
    )
    s1 = _step("The notebooks cost", n, "*", price, "dollars")
    s2 = _step(f"With the pen, {p} spends", s1.result, "+", pen, "dollars")
    s3 = _step(f"So {p} gets back", paid, "-", s2.result, "dollars")
    return q, (s1, s2, s3)


def _apples(r: random.Random, p: str):
    have, bags, per = r.randint(3, 20), r.randint(2, 5), r.randint(4, 12)
    give = r.randint(2, have + bags * per - 1)
    q = (
        f"{p} has {have} apples. {p} buys {bags} bags with {per} apples in each bag, then gives {give} "
        f"apples to a neighbor. How many apples does {p} have now?"
    )
    s1 = _step("The bags hold", bags, "*", per, "apples")
    s2 = _step(f"Before giving any away, {p} has", have, "+", s1.result, "apples")
    s3 = _step(f"After giving some away, {p} has", s2.result, "-", give, "apples")
    return q, (s1, s2, s3)


def _train(r: random.Random, p: str):
    speed, hours, extra = r.choice(range(30, 95, 5)), r.randint(2, 4), r.randint(5, 60)
    q = (
        f"A train travels {speed} kilometers per hour for {hours} hours, then {extra} more kilometers to "
        f"reach the last station. How many kilometers does it travel in total?"
    )
    s1 = _step("In the first part the train travels", speed, "*", hours, "kilometers")
    s2 = _step("In total it travels", s1.result, "+", extra, "kilometers")
    return q, (s1, s2)


def _pages(r: random.Random, p: str):
    per_day, days = r.randint(4, 12), r.randint(3, 7)
    total = r.randint(per_day * days + 1, 99)
    q = (
        f"A book has {total} pages. {p} reads {per_day} pages every day for {days} days. "
        f"How many pages are left to read?"
    )
    s1 = _step(f"{p} reads", per_day, "*", days, "pages")
    s2 = _step("The pages left are", total, "-", s1.result, "pages")
    return q, (s1, s2)


def _muffins(r: random.Random, p: str):
    trays, per_tray, box = r.randint(2, 5), r.randint(6, 12), r.randint(2, 6)
    baked = trays * per_tray
    boxes = r.randint(1, (baked - 1) // box)
    sold = baked - box * boxes
    q = (
        f"A bakery bakes {trays} trays of {per_tray} muffins and sells {sold} of them in the morning. "
        f"The rest are packed into boxes of {box}. How many boxes are filled?"
    )
    s1 = _step("The bakery bakes", trays, "*", per_tray, "muffins")
    s2 = _step("After the morning,", s1.result, "-", sold, "muffins are left")
    s3 = _step("The number of boxes is", s2.result, "/", box)
    return q, (s1, s2, s3)


def _pencils(r: random.Random, p: str):
    classes, students, each = r.randint(2, 4), r.randint(15, 30), r.randint(2, 3)
    q = (
        f"A school has {classes} classes with {students} students in each class. Every student gets "
        f"{each} pencils. How many pencils are needed?"
    )
    s1 = _step("The school has", classes, "*", students, "students")
    s2 = _step("The pencils needed are", s1.result, "*", each, "pencils")
    return q, (s1, s2)


def _savings(r: random.Random, p: str):
    weekly, weeks = r.randint(5, 20), r.randint(3, 8)
    spend = r.randint(2, weekly * weeks - 1)
    spend = min(spend, 99)
    q = (
        f"{p} saves {weekly} dollars every week for {weeks} weeks and then spends {spend} dollars on a "
        f"jacket. How much money is left?"
    )
    s1 = _step(f"{p} saves", weekly, "*", weeks, "dollars")
    s2 = _step("The money left is", s1.result, "-", spend, "dollars")
    return q, (s1, s2)


def _garden(r: random.Random, p: str):
    rows, per_row = r.randint(3, 8), r.randint(4, 12)
    die, new = r.randint(2, rows * per_row - 1), r.randint(2, 20)
    die = min(die, 99)
    q = (
        f"A garden has {rows} rows with {per_row} tomato plants in each row. {die} plants die in a storm "
        f"and {new} new plants are added. How many plants are there now?"
    )
    s1 = _step("At first there are", rows, "*", per_row, "plants")
    s2 = _step("After the storm there are", s1.result, "-", die, "plants")
    s3 = _step("With the new plants there are", s2.result, "+", new, "plants")
    return q, (s1, s2, s3)


def _marbles(r: random.Random, p: str):
    friends = r.randint(2, 6)
    each = r.randint(2, 99 // friends)
    total = friends * each
    won = r.randint(2, total - 2)
    q = (
        f"{p} has {total - won} marbles and wins {won} more in a game. {p} shares all the marbles "
        f"equally among {friends} friends. How many marbles does each friend get?"
    )
    s1 = _step(f"{p} has", total - won, "+", won, "marbles")
    s2 = _step("Each friend gets", s1.result, "/", friends, "marbles")
    return q, (s1, s2)


def _bus(r: random.Random, p: str):
    start = r.randint(20, 60)
    off1, on1 = r.randint(2, start - 1), r.randint(2, 30)
    off2 = r.randint(2, start - off1 + on1)
    q = (
        f"A bus starts with {start} passengers. At the first stop {off1} people get off and {on1} get "
        f"on. At the second stop {off2} people get off. How many passengers are on the bus now?"
    )
    s1 = _step("After people get off at the first stop, there are", start, "-", off1, "passengers")
    s2 = _step("After people get on, there are", s1.result, "+", on1, "passengers")
    s3 = _step("After the second stop, there are", s2.result, "-", off2, "passengers")
    return q, (s1, s2, s3)


def _recipe(r: random.Random, p: str):
    cups, batches = r.randint(2, 5), r.randint(3, 9)
    have = r.randint(2, cups * batches - 1)
    q = (
        f"One batch of cookies needs {cups} cups of flour. {p} wants to bake {batches} batches and "
        f"already has {have} cups. How many more cups of flour does {p} need?"
    )
    s1 = _step("The batches need", batches, "*", cups, "cups")
    s2 = _step(f"{p} still needs", s1.result, "-", have, "cups")
    return q, (s1, s2)


def _fruit_stand(r: random.Random, p: str):
    oranges, o_price, melons, m_price = r.randint(5, 20), r.randint(2, 4), r.randint(2, 9), r.randint(3, 8)
    q = (
        f"A fruit stand sells {oranges} oranges for {o_price} dollars each and {melons} melons for "
        f"{m_price} dollars each. How much money does the stand make?"
    )
    s1 = _step("The oranges bring", oranges, "*", o_price, "dollars")
    s2 = _step("The melons bring", melons, "*", m_price, "dollars")
    s3 = _step("Together the stand makes", s1.result, "+", s2.result, "dollars")
    return q, (s1, s2, s3)


def _cycling(r: random.Random, p: str):
    monday, times = r.randint(5, 25), r.randint(2, 4)
    q = (
        f"{p} cycles {monday} kilometers on Monday and {times} times as far on Tuesday. How many "
        f"kilometers does {p} cycle on the two days?"
    )
    s1 = _step(f"On Tuesday {p} cycles", monday, "*", times, "kilometers")
    s2 = _step("On the two days that makes", monday, "+", s1.result, "kilometers")
    return q, (s1, s2)


def _library(r: random.Random, p: str):
    shelves, per_shelf = r.randint(3, 9), r.randint(10, 30)
    lent, back = r.randint(5, min(40, shelves * per_shelf)), r.randint(2, 20)
    q = (
        f"A library has {shelves} shelves with {per_shelf} books on each shelf. On Friday {lent} books "
        f"are borrowed and {back} are returned. How many books are on the shelves now?"
    )
    s1 = _step("At first there are", shelves, "*", per_shelf, "books")
    s2 = _step("After the borrowing there are", s1.result, "-", lent, "books")
    s3 = _step("After the returns there are", s2.result, "+", back, "books")
    return q, (s1, s2, s3)


def _pizza(r: random.Random, p: str):
    pizzas, slices, friends = r.randint(2, 5), r.choice([6, 8, 10, 12]), r.randint(2, 6)
    eat = r.randint(2, pizzas * slices // friends)
    q = (
        f"{p} orders {pizzas} pizzas, and each pizza is cut into {slices} slices. {friends} friends each "
        f"eat {eat} slices. How many slices are left?"
    )
    s1 = _step("There are", pizzas, "*", slices, "slices")
    s2 = _step("The friends eat", friends, "*", eat, "slices")
    s3 = _step("The slices left are", s1.result, "-", s2.result)
    return q, (s1, s2, s3)


def _aquarium(r: random.Random, p: str):
    packs, per_pack, tanks = r.randint(2, 4), r.randint(3, 8), r.randint(2, 5)
    bought = packs * per_pack
    each = r.randint(bought // tanks + 1, 99 // tanks)
    fish = tanks * each - bought
    q = (
        f"An aquarium has {fish} fish. It buys {packs} packs of {per_pack} fish each and then divides all "
        f"the fish equally into {tanks} tanks. How many fish go in each tank?"
    )
    s1 = _step("The packs hold", packs, "*", per_pack, "fish")
    s2 = _step("Now the aquarium has", fish, "+", s1.result, "fish")
    s3 = _step("Each tank gets", s2.result, "/", tanks, "fish")
    return q, (s1, s2, s3)


def _ages(r: random.Random, p: str):
    age, older, times = r.randint(4, 12), r.randint(2, 6), r.randint(2, 3)
    q = (
        f"{p} is {age} years old. {p}'s brother is {older} years older, and their uncle is {times} times "
        f"as old as the brother. How old is the uncle?"
    )
    s1 = _step("The brother is", age, "+", older, "years old")
    s2 = _step("The uncle is", s1.result, "*", times, "years old")
    return q, (s1, s2)


def _stickers(r: random.Random, p: str):
    packs, per_pack = r.randint(2, 5), r.randint(4, 10)
    have = r.randint(2, 40)
    have += (have + packs * per_pack) % 2  # the total must be even
    q = (
        f"{p} has {have} stickers and buys {packs} packs of {per_pack} stickers. {p} splits all the "
        f"stickers equally between 2 albums. How many stickers go in each album?"
    )
    s1 = _step("The packs have", packs, "*", per_pack, "stickers")
    s2 = _step(f"{p} now has", have, "+", s1.result, "stickers")
    s3 = _step("Each album gets", s2.result, "/", 2, "stickers")
    return q, (s1, s2, s3)


def _water_tank(r: random.Random, p: str):
    per_day, days = r.randint(3, 12), r.randint(2, 6)
    holds = r.randint(per_day * days, 99)
    refill = r.randint(5, 50)
    q = (
        f"A tank holds {holds} liters of water. Each day {per_day} liters are used, for {days} days. "
        f"Then {refill} liters are added. How many liters are in the tank now?"
    )
    s1 = _step("The water used is", per_day, "*", days, "liters")
    s2 = _step("After those days the tank has", holds, "-", s1.result, "liters")
    s3 = _step("After the refill it has", s2.result, "+", refill, "liters")
    return q, (s1, s2, s3)


def _chairs(r: random.Random, p: str):
    rows, per_row = r.randint(3, 9), r.randint(5, 12)
    guests = r.randint(2, rows * per_row)
    guests = min(guests, 99)
    q = (
        f"A hall has {rows} rows of {per_row} chairs. {guests} guests arrive and each takes one chair. "
        f"How many chairs are empty?"
    )
    s1 = _step("The hall has", rows, "*", per_row, "chairs")
    s2 = _step("The empty chairs are", s1.result, "-", guests)
    return q, (s1, s2)


ARITH_TEMPLATES: dict[str, Callable[[random.Random, str], tuple[str, tuple[ArithStep, ...]]]] = {
    "shopping": _shopping,
    "apples": _apples,
    "train": _train,
    "pages": _pages,
    "muffins": _muffins,
    "pencils": _pencils,
    "savings": _savings,
    "garden": _garden,
    "marbles": _marbles,
    "bus": _bus,
    "recipe": _recipe,
    "fruit_stand": _fruit_stand,
    "cycling": _cycling,
    "library": _library,
    "pizza": _pizza,
    "aquarium": _aquarium,
    "ages": _ages,
    "stickers": _stickers,
    "water_tank": _water_tank,
    "chairs": _chairs,
}


# Easy problems, for a model that cannot multiply two-digit numbers: two steps, operands 2..20, + and -
# mostly, * only by 2..5 of a single digit, / only exact by 2..5 of a result below 50, every result in
# 2..99. A template is data, (question, steps): the question's operands are `{a}`, `{b}`, `{c}`, and a
# step is (lead, "xoy", unit) where x and y name an operand or `r`, the previous step's result. `_easy`
# draws the operands from 2..20 until every step passes `_easy_ok` (rejection sampling), so they are
# uniform over the valid draws and the bounds live in one function.
_EASY: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "apples": (
        "{p} has {a} apples and picks {b} more. Then {p} gives {c} apples to a friend. How many apples does "
        "{p} have now?",
        (("{p} has", "a+b", "apples"), ("After giving some away, {p} has", "r-c", "apples")),
    ),
    "bus": (
        "A bus has {a} passengers. At a stop, {b} people get off and {c} people get on. How many passengers "
        "are on the bus now?",
        (("After people get off, there are", "a-b", "passengers"), ("Then there are", "r+c", "passengers")),
    ),
    "shopping": (
        "{p} has {a} dollars and buys a book for {b} dollars and a pen for {c} dollars. How many dollars "
        "does {p} have left?",
        (("The book and the pen cost", "b+c", "dollars"), ("{p} has", "a-r", "dollars left")),
    ),
    "eggs": (
        "{p} buys {a} boxes with {b} eggs in each box and uses {c} eggs to bake a cake. How many eggs are "
        "left?",
        (("{p} buys", "a*b", "eggs"), ("After baking, {p} has", "r-c", "eggs left")),
    ),
    "toys": (
        "{p} has {a} toy cars, and {p}'s brother has {b} times as many. How many toy cars do they have "
        "together?",
        (("The brother has", "a*b", "toy cars"), ("Together they have", "a+r", "toy cars")),
    ),
    "stickers": (
        "{p} has {a} stickers and gets {b} more. {p} shares all the stickers equally among {c} friends. How "
        "many stickers does each friend get?",
        (("{p} has", "a+b", "stickers"), ("Each friend gets", "r/c", "stickers")),
    ),
    "cookies": (
        "A baker makes {a} cookies and sells {b} of them. The rest are packed equally into {c} boxes. How "
        "many cookies are in each box?",
        (("After selling, there are", "a-b", "cookies"), ("Each box gets", "r/c", "cookies")),
    ),
    "fruit": (
        "A basket has {a} apples, {b} pears and {c} plums. How many pieces of fruit are in the basket?",
        (
            ("Apples and pears make", "a+b", "pieces of fruit"),
            ("With the plums there are", "r+c", "pieces of fruit"),
        ),
    ),
    "savings": (
        "{p} saves {a} dollars every week for {b} weeks, then spends {c} dollars on a game. How many "
        "dollars does {p} have left?",
        (("{p} saves", "a*b", "dollars"), ("After buying the game, {p} has", "r-c", "dollars")),
    ),
    "class": (
        "A class has {a} girls and {b} boys. {c} students are absent today. How many students are in class "
        "today?",
        (("The class has", "a+b", "students"), ("Today there are", "r-c", "students")),
    ),
    "pencils": (
        "{p} has {a} pencils, loses {b} of them, and gives {c} to a friend. How many pencils does {p} have "
        "left?",
        (
            ("After losing some, {p} has", "a-b", "pencils"),
            ("After giving some away, {p} has", "r-c", "pencils"),
        ),
    ),
    "garden": (
        "A garden has {a} rows with {b} flowers in each row, and {c} more flowers by the gate. How many "
        "flowers are there?",
        (("The rows hold", "a*b", "flowers"), ("With the flowers by the gate there are", "r+c", "flowers")),
    ),
}


def _easy_ok(a: int, op: str, b: int) -> bool:
    if op == "*" and not (2 <= min(a, b) <= 5 and max(a, b) <= 9):
        return False
    if op == "/" and not (2 <= b <= 5 and a < 50 and a % b == 0):
        return False
    value = a // b if op == "/" else OPS[op](a, b)
    return 2 <= value < 100  # 2, not 0: no "0 apples left", no "1 cookies"


def _easy(spec: tuple, r: random.Random, p: str):
    question, plan = spec
    for _ in range(10_000):
        values = {k: r.randint(2, 20) for k in "abc" if f"{{{k}}}" in question}
        steps: list[ArithStep] = []
        for lead, (x, op, y), unit in plan:
            a, b = (steps[-1].result if k == "r" else values[k] for k in (x, y))
            if not _easy_ok(a, op, b):
                break
            steps.append(_step(lead.format(p=p), a, op, b, unit))
        else:
            return question.format(p=p, **values), tuple(steps)
    raise AssertionError(f"no draw of {question[:40]!r}... passes the easy bounds in 10000 tries")


EASY_ARITH_TEMPLATES = {name: functools.partial(_easy, spec) for name, spec in _EASY.items()}
ARITH_DIFFICULTIES = {"standard": ARITH_TEMPLATES, "easy": EASY_ARITH_TEMPLATES}


def arithmetic_problems(n: int, seed: int, difficulty: str = "standard") -> list[ArithProblem]:
    """n distinct problems from the templates of `difficulty` ("standard" or "easy"); the templates cycle
    in a seeded order so each is used about equally often."""
    if n < 0:
        raise ValueError(f"arithmetic_problems: n must be >= 0, got {n}")
    if difficulty not in ARITH_DIFFICULTIES:
        raise ValueError(
            f"arithmetic_problems: difficulty must be one of {list(ARITH_DIFFICULTIES)}, got {difficulty!r}"
        )
    templates = ARITH_DIFFICULTIES[difficulty]
    rng = random.Random(seed)
    names = list(templates)
    problems: list[ArithProblem] = []
    seen: set[str] = set()
    order: list[str] = []
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 100 * n + 100:
            raise ValueError(f"arithmetic_problems: could not draw {n} distinct problems")
        if not order:
            order = names[:]
            rng.shuffle(order)
        template = order.pop()
        question, steps = templates[template](rng, rng.choice(_PEOPLE))
        if question in seen:
            continue
        seen.add(question)
        problems.append(ArithProblem(template, question, tuple(steps)))
    return problems


def arithmetic_items(n: int, seed: int, difficulty: str = "standard") -> list[dict]:
    """GSM8K-format items `{"id", "question", "answer"}`, the answer ending in `#### N`."""
    return [
        {"id": f"arith-{i:04d}", "question": p.question, "answer": p.answer()}
        for i, p in enumerate(arithmetic_problems(n, seed, difficulty))
    ]


# ---------------------------------------------------------------------------------------------------
# Files.


def _write_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Stream `chunks` into a temp file beside `path`, fsync, then `os.replace`: readers see the old file
    or the new one, never a prefix; the temp file is removed if anything fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonl(rows: Iterable[dict]) -> Iterable[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def _author_record(author: Author) -> dict:
    record = asdict(author)
    record["birth_date"] = author.birth_date.isoformat()
    record["books"] = list(author.books)
    return record


def build(
    out_dir: Path,
    *,
    n_authors: int = 8,
    n_forget: int = 2,
    n_arith_train: int = 40,
    n_arith_eval: int = 30,
    seed: int = 0,
    arith_difficulty: str = "easy",
) -> dict[str, Path]:
    """Write the demo set into `out_dir`; returns {"forget", "retain", "arithmetic_train",
    "arithmetic_eval", "authors"} -> path. The first `n_forget` authors are forgotten. The arithmetic is
    "easy" by default: the demo's 135M model solves too few "standard" problems for a useful metric."""
    if not 0 < n_forget < n_authors:
        raise ValueError(
            f"build: need 0 < n_forget < n_authors, got n_forget={n_forget}, n_authors={n_authors}"
        )
    if n_arith_train < 0 or n_arith_eval < 0:
        raise ValueError(f"build: arithmetic sizes must be >= 0, got {n_arith_train}, {n_arith_eval}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    authors = make_authors(n_authors, seed)
    items = [author_items(a, i) for i, a in enumerate(authors)]
    forget = [it for per_author in items[:n_forget] for it in per_author]
    retain = [it for per_author in items[n_forget:] for it in per_author]
    arith = arithmetic_items(n_arith_train + n_arith_eval, seed, arith_difficulty)

    paths = {
        "forget": out_dir / "forget.jsonl",
        "retain": out_dir / "retain.jsonl",
        "arithmetic_train": out_dir / "arithmetic_train.jsonl",
        "arithmetic_eval": out_dir / "arithmetic_eval.jsonl",
        "authors": out_dir / "authors.json",
    }
    _write_atomic(paths["forget"], _jsonl(forget))
    _write_atomic(paths["retain"], _jsonl(retain))
    _write_atomic(paths["arithmetic_train"], _jsonl(arith[:n_arith_train]))
    _write_atomic(paths["arithmetic_eval"], _jsonl(arith[n_arith_train:]))
    records = [_author_record(a) for a in authors]
    _write_atomic(paths["authors"], [json.dumps(records, ensure_ascii=False, indent=2) + "\n"])
    return paths
