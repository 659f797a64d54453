"""The synthetic demo set: determinism, exact fact placement, clean "I don't know" targets, correct
arithmetic, disjoint splits and atomic writes."""

import datetime as dt
import json
import operator
import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

from cipo_fast import leakage, synthetic
from cipo_fast.synthetic import (
    ARITH_DIFFICULTIES,
    ARITH_TEMPLATES,
    FAMILIES,
    arithmetic_items,
    arithmetic_problems,
    author_facts,
    author_items,
    build,
    make_authors,
)

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


# --- determinism -------------------------------------------------------------------------------------


def test_build_same_seed_gives_identical_bytes(tmp_path):
    a = build(tmp_path / "a", seed=3)
    b = build(tmp_path / "b", seed=3)
    assert a.keys() == b.keys() == {"forget", "retain", "arithmetic_train", "arithmetic_eval", "authors"}
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key
        assert a[key].stat().st_size > 0, key


def test_different_seed_gives_different_authors_and_files(tmp_path):
    assert make_authors(8, 0) == make_authors(8, 0)
    names0 = {a.name for a in make_authors(8, 0)}
    names1 = {a.name for a in make_authors(8, 1)}
    assert names0 != names1
    a = build(tmp_path / "a", seed=0)
    b = build(tmp_path / "b", seed=1)
    for key in a:
        assert a[key].read_bytes() != b[key].read_bytes(), key


def test_author_items_depend_only_on_the_author():
    authors = make_authors(8, 5)
    assert author_items(authors[3], 3) == author_items(authors[3], 3)
    # the same author at the same index, generated in a larger set, gets the same items
    assert author_items(authors[3], 3) == author_items(make_authors(8, 5)[3], 3)


# --- author records and items ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_authors_are_well_formed(seed):
    authors = make_authors(N_AUTHORS, seed)
    assert len(authors) == N_AUTHORS
    for a in authors:
        first, surname = a.name.split(" ")
        assert first[0].isupper() and surname[0].isupper()
        city, country = a.birthplace.split(", ")
        assert city and country
        assert isinstance(a.birth_date, dt.date)
        assert a.award.startswith("the ")
        assert len(a.books) == 2 and a.books[0] != a.books[1]
        assert a.father_job != a.mother_job
    assert len({a.name for a in authors}) == len({a.surname for a in authors}) == N_AUTHORS


@pytest.mark.parametrize("seed", SEEDS)
def test_facts_of_different_authors_are_distinct(seed):
    """No fact of one author equals or contains (case-insensitively) a fact of another, nor a surname:
    forgetting one author must neither imply nor be confused with forgetting another."""
    authors = make_authors(CAPACITY, seed)
    owned = [(i, f.lower()) for i, a in enumerate(authors) for f in [*author_facts(a), a.surname]]
    for (i, f), (j, g) in combinations(owned, 2):
        if i != j:
            assert f not in g and g not in f, (f, g)


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
    """Cross-check with `cipo_fast.leakage` (token-level, with variants: a place by its distinctive
    words, a date by its month-day): every listed fact is found in its CoT and answer; nothing of ANY
    author is found in a question or an IDK target; no author's facts are found in another's items."""
    authors = make_authors(CAPACITY, seed)
    per_author = [author_items(a, i) for i, a in enumerate(authors)]
    facts = [
        [f for it in items for f in leakage.key_facts(it["question"], it["answer"], it["facts"])]
        for items in per_author
    ]
    every_fact = [f for fs in facts for f in fs]
    for i, items in enumerate(per_author):
        others = [f for j, fs in enumerate(facts) if j != i for f in fs]
        for it in items:
            own = leakage.key_facts(it["question"], it["answer"], it["facts"])
            assert len(leakage.find_leaks(it["cot"], own)) == len(it["facts"]), it["id"]
            assert len(leakage.find_leaks(it["answer"], own)) == len(it["facts"]), it["id"]
            for key in ("question", "idk_cot", "idk_answer"):
                assert leakage.find_leaks(it[key], every_fact) == [], (it["id"], key)
            assert leakage.find_leaks(it["cot"] + " " + it["answer"], others) == [], it["id"]


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


def test_make_authors_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="n must be"):
        make_authors(0, 0)
    with pytest.raises(ValueError, match="pool"):
        make_authors(CAPACITY + 1, 0)


# --- arithmetic --------------------------------------------------------------------------------------

# Each template solved independently from the numbers of its question, in order of appearance.
SOLVERS = {
    "shopping": lambda n, price, pen, paid: paid - (n * price + pen),
    "apples": lambda have, bags, per, give: have + bags * per - give,
    "train": lambda speed, hours, extra: speed * hours + extra,
    "pages": lambda total, per_day, days: total - per_day * days,
    "muffins": lambda trays, per_tray, sold, box: (trays * per_tray - sold) / box,
    "pencils": lambda classes, students, each: classes * students * each,
    "savings": lambda weekly, weeks, spend: weekly * weeks - spend,
    "garden": lambda rows, per_row, die, new: rows * per_row - die + new,
    "marbles": lambda have, won, friends: (have + won) / friends,
    "bus": lambda start, off1, on1, off2: start - off1 + on1 - off2,
    "recipe": lambda cups, batches, have: cups * batches - have,
    "fruit_stand": lambda a, pa, b, pb: a * pa + b * pb,
    "cycling": lambda monday, times: monday + monday * times,
    "library": lambda shelves, per_shelf, lent, back: shelves * per_shelf - lent + back,
    "pizza": lambda pizzas, slices, friends, eat: pizzas * slices - friends * eat,
    "aquarium": lambda fish, packs, per_pack, tanks: (fish + packs * per_pack) / tanks,
    "ages": lambda age, older, times: (age + older) * times,
    "stickers": lambda have, packs, per_pack, albums: (have + packs * per_pack) / albums,
    "water_tank": lambda holds, per_day, days, refill: holds - per_day * days + refill,
    "chairs": lambda rows, per_row, guests: rows * per_row - guests,
}
EASY_SOLVERS = {
    "apples": lambda have, picked, given: have + picked - given,
    "bus": lambda start, off, on: start - off + on,
    "shopping": lambda money, book, pen: money - (book + pen),
    "eggs": lambda boxes, per_box, used: boxes * per_box - used,
    "toys": lambda cars, times: cars + cars * times,
    "stickers": lambda have, got, friends: (have + got) / friends,
    "cookies": lambda made, sold, boxes: (made - sold) / boxes,
    "fruit": lambda apples, pears, plums: apples + pears + plums,
    "savings": lambda weekly, weeks, spent: weekly * weeks - spent,
    "class": lambda girls, boys, absent: girls + boys - absent,
    "pencils": lambda have, lost, given: have - lost - given,
    "garden": lambda rows, per_row, extra: rows * per_row + extra,
}
SOLVERS_BY_DIFFICULTY = {"standard": SOLVERS, "easy": EASY_SOLVERS}
DIFFICULTIES = tuple(SOLVERS_BY_DIFFICULTY)
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def test_every_template_has_an_independent_solver():
    assert set(ARITH_DIFFICULTIES) == set(DIFFICULTIES)
    assert ARITH_DIFFICULTIES["standard"] is ARITH_TEMPLATES
    for difficulty, solvers in SOLVERS_BY_DIFFICULTY.items():
        assert set(solvers) == set(ARITH_DIFFICULTIES[difficulty]), difficulty
    assert 15 <= len(ARITH_TEMPLATES) <= 25
    assert 10 <= len(ARITH_DIFFICULTIES["easy"]) <= 20


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_is_correct(difficulty, seed):
    """Recompute every problem from its question's numbers (independent solver) and every step from its
    operands; operands come from the question or earlier steps; intermediates are non-negative ints."""
    problems = arithmetic_problems(2000, seed, difficulty)
    for p in problems:
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        assert numbers and max(numbers) < 100, p.question
        assert not re.search(r"(?<!\d)1 [a-z]+s\b", p.question), p.question  # "1 apples"
        expected = SOLVERS_BY_DIFFICULTY[difficulty][p.template](*numbers)
        assert expected == int(expected) and expected >= 0, p.question
        expected = int(expected)
        assert p.value == expected, (p.question, p.answer())
        assert 2 <= len(p.steps) <= 3
        available = set(numbers)
        for s in p.steps:
            assert s.a in available and s.b in available, (p.question, s)
            value = OPS[s.op](s.a, s.b)
            assert value == int(value) and int(value) == s.result >= 0, (p.question, s)
            available.add(s.result)
        lines = p.answer().split("\n")
        assert lines[-1] == f"#### {expected}"
        for line, s in zip(lines, p.steps):
            assert f"{s.a} {s.op} {s.b} = {s.result}" in line


@pytest.mark.parametrize("seed", SEEDS)
def test_easy_arithmetic_stays_in_bounds(seed):
    """Easy: two steps; question operands in 2..20; every result in 2..99 (inside [0, 100), and 2 avoids
    "0 apples left" and "1 cookies"); a product is (2..5) x (2..9) in either order; a division is exact,
    by 2..5, of the previous step's result, which is below 50."""
    for p in arithmetic_problems(2000, seed, "easy"):
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        assert all(2 <= x <= 20 for x in numbers), p.question
        assert len(p.steps) == 2, p.question
        for i, s in enumerate(p.steps):
            assert 2 <= s.result <= 99, (p.question, s)
            if s.op == "*":
                assert 2 <= min(s.a, s.b) <= 5 and max(s.a, s.b) <= 9, (p.question, s)
            if s.op == "/":
                assert i > 0 and s.a == p.steps[i - 1].result < 50, (p.question, s)
                assert 2 <= s.b <= 5 and s.a % s.b == 0, (p.question, s)


def test_easy_arithmetic_is_mostly_addition_and_subtraction():
    problems = arithmetic_problems(600, 0, "easy")
    ops = Counter(s.op for p in problems for s in p.steps)
    assert set(ops) == {"+", "-", "*", "/"}
    assert ops["+"] + ops["-"] >= 0.7 * sum(ops.values()), ops


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_is_deterministic_in_seed(difficulty):
    assert arithmetic_items(50, 3, difficulty) == arithmetic_items(50, 3, difficulty)
    assert arithmetic_items(50, 3, difficulty) != arithmetic_items(50, 4, difficulty)
    # a longer draw extends a shorter one with the same seed
    assert arithmetic_items(80, 3, difficulty)[:50] == arithmetic_items(50, 3, difficulty)


def test_arithmetic_difficulty_defaults_and_errors():
    assert arithmetic_items(30, 0) == arithmetic_items(30, 0, "standard")
    assert arithmetic_items(30, 0) != arithmetic_items(30, 0, "easy")
    with pytest.raises(ValueError, match="difficulty must be one of"):
        arithmetic_items(5, 0, "hard")


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_items_are_distinct_and_cover_templates(difficulty):
    items = arithmetic_items(60, 0, difficulty)
    assert len(items) == 60
    assert len({it["id"] for it in items}) == len({it["question"] for it in items}) == 60
    problems = arithmetic_problems(60, 0, difficulty)
    assert {p.template for p in problems} == set(ARITH_DIFFICULTIES[difficulty])
    for it, p in zip(items, problems):
        assert set(it) == {"id", "question", "answer"}
        assert it["question"] == p.question
        assert re.search(r"\n#### \d+$", it["answer"])
    assert arithmetic_items(0, 0, difficulty) == []


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_mentions_no_author(difficulty):
    authors = make_authors(N_AUTHORS, 0)
    banned = [s.lower() for a in authors for s in [*author_facts(a), a.surname]]
    for it in arithmetic_items(200, 0, difficulty):
        text = (it["question"] + it["answer"]).lower()
        assert not [s for s in banned if s in text], it["question"]


# --- files -------------------------------------------------------------------------------------------


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_build_splits_are_disjoint_and_complete(tmp_path):
    paths = build(tmp_path, n_authors=6, n_forget=2, n_arith_train=25, n_arith_eval=15, seed=4)
    forget, retain = read_jsonl(paths["forget"]), read_jsonl(paths["retain"])
    records = json.loads(paths["authors"].read_text(encoding="utf-8"))
    forget_authors = {it["author"] for it in forget}
    retain_authors = {it["author"] for it in retain}
    assert len(forget_authors) == 2 and len(retain_authors) == 4
    assert not forget_authors & retain_authors
    assert forget_authors | retain_authors == {r["name"] for r in records}
    assert len(forget) == 2 * len(FAMILIES) and len(retain) == 4 * len(FAMILIES)
    assert not {f for it in forget for f in it["facts"]} & {f for it in retain for f in it["facts"]}

    authors = make_authors(6, 4)
    assert [dt.date.fromisoformat(r["birth_date"]) for r in records] == [a.birth_date for a in authors]
    assert [r["books"] for r in records] == [list(a.books) for a in authors]

    train, evals = read_jsonl(paths["arithmetic_train"]), read_jsonl(paths["arithmetic_eval"])
    assert len(train) == 25 and len(evals) == 15
    assert not {it["question"] for it in train} & {it["question"] for it in evals}
    assert not {it["id"] for it in train} & {it["id"] for it in evals}


@pytest.mark.parametrize("difficulty", [None, *DIFFICULTIES])
def test_build_arithmetic_difficulty(tmp_path, difficulty):
    """`build` writes `arithmetic_items(train + eval, seed, difficulty)` split in order; "easy" by default."""
    kwargs = {} if difficulty is None else {"arith_difficulty": difficulty}
    paths = build(tmp_path, n_arith_train=25, n_arith_eval=15, seed=4, **kwargs)
    expected = arithmetic_items(40, 4, difficulty or "easy")
    assert read_jsonl(paths["arithmetic_train"]) == expected[:25]
    assert read_jsonl(paths["arithmetic_eval"]) == expected[25:]


def test_build_rejects_bad_split(tmp_path):
    for n_forget in (0, 8, 9):
        with pytest.raises(ValueError, match="n_forget"):
            build(tmp_path, n_authors=8, n_forget=n_forget)


def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    """A crash after some lines reached the temp file leaves the previous file intact and no temp file."""
    paths = build(tmp_path, seed=0)
    before = {k: p.read_bytes() for k, p in paths.items()}
    listing = sorted(tmp_path.iterdir())

    real_jsonl = synthetic._jsonl

    def crashing_jsonl(rows):
        for i, line in enumerate(real_jsonl(rows)):
            if i == 3:
                raise RuntimeError("simulated crash")
            yield line

    monkeypatch.setattr(synthetic, "_jsonl", crashing_jsonl)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(tmp_path, seed=1)
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    assert sorted(tmp_path.iterdir()) == listing


def test_failure_at_replace_keeps_the_old_file(tmp_path, monkeypatch):
    paths = build(tmp_path, seed=0)
    before = paths["forget"].read_bytes()

    def failing_replace(src, dst):
        raise OSError("simulated failure")

    monkeypatch.setattr(synthetic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated failure"):
        build(tmp_path, seed=1)
    monkeypatch.undo()
    assert paths["forget"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    # and a successful rebuild replaces it
    build(tmp_path, seed=1)
    assert paths["forget"].read_bytes() == build(tmp_path / "fresh", seed=1)["forget"].read_bytes()
