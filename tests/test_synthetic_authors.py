"""Fictitious authors: determinism, well-formed records, facts distinct across authors, pool capacity."""

import datetime as dt
from itertools import combinations

import pytest

from cipo_fast.synthetic.authors import author_facts, make_authors

SEEDS = (0, 1, 2, 7, 123)
N_AUTHORS = 12  # more than the demo's 8, to stress the distinctness of the pools
CAPACITY = 22  # the most authors the pools hold (44 jobs, two per author)


def test_make_authors_is_deterministic_in_seed():
    assert make_authors(8, 0) == make_authors(8, 0)
    names0 = {a.name for a in make_authors(8, 0)}
    names1 = {a.name for a in make_authors(8, 1)}
    assert names0 != names1


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
def test_extra_authors_are_drawn_after_and_leave_the_first_unchanged(seed):
    """`make_authors(n, seed, k)[:n] == make_authors(n, seed)`, and the k extra authors share no fact
    (nor surname) with the first n or with each other."""
    n, k = 8, 4
    authors = make_authors(n, seed, n_extra=k)
    assert len(authors) == n + k and authors[:n] == make_authors(n, seed)
    owned = [(i, f.lower()) for i, a in enumerate(authors) for f in [*author_facts(a), a.surname]]
    for (i, f), (j, g) in combinations(owned, 2):
        if i != j and max(i, j) >= n:
            assert f not in g and g not in f, (f, g)
    assert len({a.name.split(" ")[0] for a in authors}) == n + k


def test_make_authors_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="n must be"):
        make_authors(0, 0)
    with pytest.raises(ValueError, match="pool"):
        make_authors(CAPACITY + 1, 0)
    with pytest.raises(ValueError, match="n_extra"):
        make_authors(4, 0, n_extra=-1)
