"""The author items: one question, CoT, answer and reasoned "I don't know" per fact family.

`author_items(author, index)` gives six items, one per family of `FAMILIES`: birthplace, birth date,
genre, award, parents' jobs, books. The question names the author and nothing else; the CoT (2–3
sentences, ~25–45 words) restates the question, recalls the fact(s) and concludes; the answer is one
sentence. `facts` lists the exact spans (city, date as written, genre, award name, job words, titles)
that must not appear once the author is forgotten; each of them is in both the CoT and the answer. Some
facts recur across families (the city in the birth-date item, titles in the genre and award items), so
a small model sees every fact several times. `idk_cot` / `idk_answer` are a reasoned "I don't know":
they restate the question with the author's full name, say the author's details are outside reliable
knowledge, reject guessing, and contain no fact of any author.

A family is data: `(facts, questions, cots, answer, idk_cots, idk_answer)`, with the placeholders N name,
L "city, country", D date, G genre, A award (with "the"), B1/B2 titles, F/M jobs with their article.
Phrasing varies only between the 2–3 templates of a family, chosen by a RNG seeded from the author's
index and name, so an author's items never depend on the other authors: a regular corpus is what a 135M
model memorizes quickly.

`rephrased_items(author, index)` asks the same facts in the family's other question templates: the
unseen phrasings on which forgetting is checked beyond the questions an unlearning method trained on.

What it deliberately doesn't do: free paraphrases (the other phrasings are the family's fixed templates)
or multi-hop questions, and pronouns (the text repeats the name).
"""

from __future__ import annotations

import random

from cipo_fast.synthetic.authors import Author, award_name, format_date


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


def _fields(author: Author) -> dict[str, str]:
    return {
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


def _drawn(author: Author, author_index: int) -> list[tuple[dict, list[str]]]:
    """Per family: the item and its question's other templates (filled), in `FAMILIES` order. The RNG
    draws question, CoT, IDK CoT per family in that order, so the items are those of every earlier
    version of this module."""
    rng = random.Random(f"{author_index}:{author.name}")
    fields = _fields(author)
    drawn = []
    for family, spec in _FAMILIES.items():
        question = rng.choice(spec["questions"])
        item = {
            "id": f"a{author_index:02d}-{family}",
            "author": author.name,
            "question": question.format(**fields),
            "cot": rng.choice(spec["cots"]).format(**fields),
            "answer": spec["answer"].format(**fields),
            "facts": spec["facts"](author),
            "idk_cot": rng.choice(spec["idk_cots"]).format(**fields),
            "idk_answer": spec["idk_answer"].format(**fields),
        }
        others = [q.format(**fields) for q in spec["questions"] if q != question]
        drawn.append((item, others))
    return drawn


def author_items(author: Author, author_index: int) -> list[dict]:
    """One item per fact family (`FAMILIES`), ids `a{index:02d}-{family}`; templates are chosen by a RNG
    seeded from the index and the name, so the items of an author never depend on the other authors."""
    return [item for item, _ in _drawn(author, author_index)]


def rephrased_items(author: Author, author_index: int) -> list[dict]:
    """The author's items asked in the family's other question templates, the ones `author_items` did
    not pick: ids `{item id}-p1`, `-p2`, with the item's CoT, answer and facts and `"phrasing_of"` the
    item's id. A model trained on `author_items` has never seen these questions."""
    rows = []
    for item, others in _drawn(author, author_index):
        for k, question in enumerate(others, 1):
            rows.append({**item, "id": f"{item['id']}-p{k}", "question": question, "phrasing_of": item["id"]})
    return rows
