"""Arithmetic problems: every answer recomputed by an independent solver, the easy bounds, the mix of
operations, determinism, distinct items covering every template, no author mentioned."""

import operator
import re
from collections import Counter

import pytest

from cipo_fast.synthetic.arithmetic import TEMPLATES, arithmetic_items, arithmetic_problems
from cipo_fast.synthetic.authors import author_facts, make_authors

SEEDS = (0, 1, 2, 7, 123)

# Each template solved independently from the numbers of its question, in order of appearance.
SOLVERS = {
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
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def test_every_template_has_an_independent_solver():
    assert set(SOLVERS) == set(TEMPLATES)
    assert 10 <= len(TEMPLATES) <= 20


@pytest.mark.parametrize("seed", SEEDS)
def test_arithmetic_is_correct(seed):
    """Recompute every problem from its question's numbers (independent solver) and every step from its
    operands; operands come from the question or earlier steps; intermediates are non-negative ints."""
    problems = arithmetic_problems(2000, seed)
    for p in problems:
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        assert numbers and max(numbers) < 100, p.question
        assert not re.search(r"(?<!\d)1 [a-z]+s\b", p.question), p.question  # "1 apples"
        expected = SOLVERS[p.template](*numbers)
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
    for p in arithmetic_problems(2000, seed):
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
    problems = arithmetic_problems(600, 0)
    ops = Counter(s.op for p in problems for s in p.steps)
    assert set(ops) == {"+", "-", "*", "/"}
    assert ops["+"] + ops["-"] >= 0.7 * sum(ops.values()), ops


def test_arithmetic_is_deterministic_in_seed():
    assert arithmetic_items(50, 3) == arithmetic_items(50, 3)
    assert arithmetic_items(50, 3) != arithmetic_items(50, 4)
    # a longer draw extends a shorter one with the same seed
    assert arithmetic_items(80, 3)[:50] == arithmetic_items(50, 3)


def test_arithmetic_items_are_distinct_and_cover_templates():
    items = arithmetic_items(60, 0)
    assert len(items) == 60
    assert len({it["id"] for it in items}) == len({it["question"] for it in items}) == 60
    problems = arithmetic_problems(60, 0)
    assert {p.template for p in problems} == set(TEMPLATES)
    for it, p in zip(items, problems):
        assert set(it) == {"id", "question", "answer"}
        assert it["question"] == p.question
        assert re.search(r"\n#### \d+$", it["answer"])
    assert arithmetic_items(0, 0) == []


def test_arithmetic_mentions_no_author():
    authors = make_authors(12, 0)
    banned = [s.lower() for a in authors for s in [*author_facts(a), a.surname]]
    for it in arithmetic_items(200, 0):
        text = (it["question"] + it["answer"]).lower()
        assert not [s for s in banned if s in text], it["question"]
