"""Author items: exact fact placement, clean "I don't know" targets, no other author mentioned, agreement
with the project's leak detector, item shape, independence from the other authors."""

import re

import pytest

from cipo_fast.eval.key_facts import key_facts
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.synthetic.authors import author_facts, make_authors
from cipo_fast.synthetic.questions import FAMILIES, author_items

SEEDS = (0, 1, 2, 7, 123)
N_AUTHORS = 12  # more than the demo's 8, to stress the distinctness of the pools
CAPACITY = 22  # the most authors the pools hold (44 jobs, two per author)


def all_items(n=N_AUTHORS, seed=0):
    authors = make_authors(n, seed)
    return authors, [it for i, a in enumerate(authors) for it in author_items(a, i)]


def words(text):
    return len(text.split())


def sentences(text):
    return len(re.findall(r"[.?!](?:\s|$)", text))


def test_author_items_depend_only_on_the_author():
    authors = make_authors(8, 5)
    assert author_items(authors[3], 3) == author_items(authors[3], 3)
    # the same author at the same index, generated in a larger set, gets the same items
    assert author_items(authors[3], 3) == author_items(make_authors(8, 5)[3], 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_fact_is_in_answer_and_cot_and_not_in_question(seed):
    authors, items = all_items(seed=seed)
    for it in items:
        assert it["facts"], it["id"]
        for fact in it["facts"]:
            assert fact in it["answer"], (it["id"], fact)
            assert fact in it["cot"], (it["id"], fact)
            assert fact.lower() not in it["question"].lower(), (it["id"], fact)
        assert it["author"] in it["question"]
    by_author = {}
    for it in items:
        by_author.setdefault(it["author"], set()).update(it["facts"])
    for a in authors:
        assert by_author[a.name] == set(author_facts(a)), a.name


@pytest.mark.parametrize("seed", SEEDS)
def test_idk_targets_contain_no_fact_and_no_bare_surname(seed):
    """The IDK CoT/answer may restate the author's full name (it is in the question) but contains no fact
    of ANY author and no surname outside that full name."""
    authors, items = all_items(seed=seed)
    every_fact = [f.lower() for a in authors for f in author_facts(a)]
    surnames = [a.surname.lower() for a in authors]
    for it in items:
        for key in ("idk_cot", "idk_answer"):
            text = it[key]
            assert it["author"] in text, (it["id"], key)
            assert not [f for f in every_fact if f in text.lower()], (it["id"], key)
            rest = text.replace(it["author"], "").lower()
            assert not [s for s in surnames if s in rest], (it["id"], key)


@pytest.mark.parametrize("seed", SEEDS)
def test_items_do_not_mention_other_authors(seed):
    authors, items = all_items(seed=seed)
    for it in items:
        others = [a for a in authors if a.name != it["author"]]
        text = " ".join(it[k] for k in ("question", "cot", "answer", "idk_cot", "idk_answer")).lower()
        for a in others:
            assert a.surname.lower() not in text, (it["id"], a.name)
            assert not [f for f in author_facts(a) if f.lower() in text], (it["id"], a.name)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_project_leak_detector_agrees(seed):
    """Cross-check with `cipo_fast.eval.leakage` (token-level, with variants: a place by its distinctive
    words, a date by its month-day): every listed fact is found in its CoT and answer; nothing of ANY
    author is found in a question or an IDK target; no author's facts are found in another's items."""
    authors = make_authors(CAPACITY, seed)
    per_author = [author_items(a, i) for i, a in enumerate(authors)]
    facts = [
        [f for it in items for f in key_facts(it["question"], it["answer"], it["facts"])]
        for items in per_author
    ]
    every_fact = [f for fs in facts for f in fs]
    for i, items in enumerate(per_author):
        others = [f for j, fs in enumerate(facts) if j != i for f in fs]
        for it in items:
            own = key_facts(it["question"], it["answer"], it["facts"])
            assert len(find_leaks(it["cot"], own)) == len(it["facts"]), it["id"]
            assert len(find_leaks(it["answer"], own)) == len(it["facts"]), it["id"]
            for key in ("question", "idk_cot", "idk_answer"):
                assert find_leaks(it[key], every_fact) == [], (it["id"], key)
            assert find_leaks(it["cot"] + " " + it["answer"], others) == [], it["id"]


def test_item_shape():
    authors, items = all_items(n=8, seed=0)
    assert len(items) == 8 * len(FAMILIES)
    assert len({it["id"] for it in items}) == len(items)
    assert items[0]["id"] == "a00-birthplace"
    keys = {"id", "author", "question", "cot", "answer", "facts", "idk_cot", "idk_answer"}
    for it in items:
        assert set(it) == keys
        assert re.fullmatch(r"a\d\d-[a-z_]+", it["id"]) and it["id"].split("-")[1] in FAMILIES
        assert it["question"].endswith("?") and sentences(it["question"]) == 1
        assert 20 <= words(it["cot"]) <= 50 and 2 <= sentences(it["cot"]) <= 4, it["cot"]
        assert 20 <= words(it["idk_cot"]) <= 50 and 2 <= sentences(it["idk_cot"]) <= 4, it["idk_cot"]
        assert sentences(it["answer"]) == 1 and sentences(it["idk_answer"]) == 1
        assert it["idk_answer"].startswith("I'm not sure")
