"""`build`: identical bytes for a seed, disjoint and complete splits, the arithmetic split in order, and
writes that leave the previous files intact when they fail."""

import datetime as dt
import json
from pathlib import Path

import pytest

from cipo_fast import synthetic
from cipo_fast.data import io
from cipo_fast.synthetic.arithmetic import arithmetic_items
from cipo_fast.synthetic.authors import make_authors
from cipo_fast.synthetic.questions import FAMILIES

build = synthetic.build  # the package-level entry point demo.py uses


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_build_same_seed_gives_identical_bytes(tmp_path):
    a = build(tmp_path / "a", seed=3)
    b = build(tmp_path / "b", seed=3)
    assert (
        a.keys()
        == b.keys()
        == {
            "forget",
            "retain",
            "holdout",
            "arithmetic_train",
            "arithmetic_eval",
            "authors",
            "forget_rephrased",
        }
    )
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key
        assert a[key].stat().st_size > 0, key


def test_different_seed_gives_different_files(tmp_path):
    a = build(tmp_path / "a", seed=0)
    b = build(tmp_path / "b", seed=1)
    for key in a:
        assert a[key].read_bytes() != b[key].read_bytes(), key


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


def test_holdout_authors_are_extra_and_leave_the_other_files_unchanged(tmp_path):
    """The holdout items belong to `n_holdout` authors drawn after the others: in neither split, sharing
    no fact with them, ids continuing the numbering; every other file has the bytes of a build without a
    holdout."""
    paths = build(tmp_path / "h", n_authors=6, n_forget=2, n_holdout=3, seed=4)
    bare = build(tmp_path / "bare", n_authors=6, n_forget=2, n_holdout=0, seed=4)
    for key in bare.keys() - {"holdout"}:
        assert paths[key].read_bytes() == bare[key].read_bytes(), key
    assert bare["holdout"].read_bytes() == b""

    holdout = read_jsonl(paths["holdout"])
    trained = read_jsonl(paths["forget"]) + read_jsonl(paths["retain"])
    extra = make_authors(6, 4, n_extra=3)[6:]
    assert [it["author"] for it in holdout] == [a.name for a in extra for _ in FAMILIES]
    assert not {it["author"] for it in holdout} & {it["author"] for it in trained}
    assert not {f for it in holdout for f in it["facts"]} & {f for it in trained for f in it["facts"]}
    assert holdout[0]["id"] == f"a06-{FAMILIES[0]}" and len(holdout) == 3 * len(FAMILIES)
    assert len({it["id"] for it in holdout + trained}) == len(holdout) + len(trained)
    with pytest.raises(ValueError, match="n_holdout"):
        build(tmp_path / "bad", n_holdout=-1)


def test_rephrased_forget_items_ask_the_same_facts_in_unseen_questions(tmp_path):
    """Every forget item comes back once per question template it was not asked in (2 per family here):
    same CoT, answer and facts, `phrasing_of` its id, a question that no trained item asks; the template
    it was asked in is the one left out, so the three questions of a family are exactly its templates."""
    from cipo_fast.synthetic import questions

    paths = build(tmp_path, n_authors=5, n_forget=2, seed=6)
    forget = {it["id"]: it for it in read_jsonl(paths["forget"])}
    trained = {it["question"] for it in read_jsonl(paths["forget"]) + read_jsonl(paths["retain"])}
    rephrased = read_jsonl(paths["forget_rephrased"])
    assert {r["phrasing_of"] for r in rephrased} == set(forget)
    authors = make_authors(5, 6)
    for item_id, item in forget.items():
        rows = [r for r in rephrased if r["phrasing_of"] == item_id]
        family = item_id.split("-", 1)[1]
        templates = questions._FAMILIES[family]["questions"]
        assert len(rows) == len(templates) - 1
        author = next(a for a in authors if a.name == item["author"])
        fields = questions._fields(author)
        assert {item["question"], *(r["question"] for r in rows)} == {t.format(**fields) for t in templates}
        for r in rows:
            assert r["question"] not in trained
            assert {k: r[k] for k in ("cot", "answer", "facts", "author")} == {
                k: item[k] for k in ("cot", "answer", "facts", "author")
            }
    assert len({r["id"] for r in rephrased}) == len(rephrased)


def test_build_writes_one_arithmetic_draw_split_in_order(tmp_path):
    """`build` writes `arithmetic_items(train + eval, seed)`: the first `train` to train, the rest to eval."""
    paths = build(tmp_path, n_arith_train=25, n_arith_eval=15, seed=4)
    expected = arithmetic_items(40, 4)
    assert read_jsonl(paths["arithmetic_train"]) == expected[:25]
    assert read_jsonl(paths["arithmetic_eval"]) == expected[25:]


def test_build_rejects_bad_split(tmp_path):
    for n_forget in (0, 8, 9):
        with pytest.raises(ValueError, match="n_forget"):
            build(tmp_path, n_authors=8, n_forget=n_forget)


def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    """A crash after part of the text reached the temp file leaves the previous file intact and no temp
    file."""
    paths = build(tmp_path, seed=0)
    before = {k: p.read_bytes() for k, p in paths.items()}
    listing = sorted(tmp_path.iterdir())

    real_write_text = Path.write_text

    def crashing_write_text(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(Path, "write_text", crashing_write_text)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(tmp_path, seed=1)
    monkeypatch.undo()
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    assert sorted(tmp_path.iterdir()) == listing


def test_failure_at_replace_keeps_the_old_file(tmp_path, monkeypatch):
    paths = build(tmp_path, seed=0)
    before = paths["forget"].read_bytes()

    def failing_replace(src, dst):
        raise OSError("simulated failure")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated failure"):
        build(tmp_path, seed=1)
    monkeypatch.undo()
    assert paths["forget"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    # and a successful rebuild replaces it
    build(tmp_path, seed=1)
    assert paths["forget"].read_bytes() == build(tmp_path / "fresh", seed=1)["forget"].read_bytes()
