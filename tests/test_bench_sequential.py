"""bench/sequential.py: the requests split the forget items by author; a smoke run on the tiny model
where request 2 starts from request 1's model, GD takes its step budget, and a rerun trains nothing."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench():
    sys.path.insert(0, str(BENCH))
    import sequential

    return sequential


def test_requests_split_the_forget_items_by_author(tmp_path):
    from cipo_fast import synthetic
    from cipo_fast.data.io import read_jsonl

    sequential = _bench()
    data = synthetic.build(tmp_path / "d", n_authors=4, n_forget=2, seed=5)
    first, second = sequential.requests(data, tmp_path / "d")
    a, b = [[row for _, row in read_jsonl(p)] for p in (first, second)]
    assert len({r["author"] for r in a}) == len({r["author"] for r in b}) == 1
    assert a[0]["author"] != b[0]["author"] and a + b == [row for _, row in read_jsonl(data["forget"])]
    one = synthetic.build(tmp_path / "one", n_authors=3, n_forget=1)
    with pytest.raises(ValueError, match="two forget authors"):
        sequential.requests(one, tmp_path / "one")


def test_smoke_run_chains_the_requests(tiny_model_dir, tmp_path, monkeypatch):
    import cipo_fast

    monkeypatch.setenv("CIPO_FAST_CACHE", str(tmp_path / "cache"))
    sequential = _bench()
    calls, fit = [], cipo_fast.fit

    def counting_fit(c):
        calls.append((c.method, c.model, c.data, c.max_steps))
        return fit(c)

    monkeypatch.setattr(cipo_fast, "fit", counting_fit)
    out_dir = tmp_path / "run"
    argv = [
        "--smoke", "--out", str(out_dir), "--model", str(tiny_model_dir), "--sft-epochs", "1", "--lr", "1e-3",
        "--gd-lr", "1e-3", "--no-progress", "--no-readme", "--result", str(tmp_path / "seq.json"),
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="add cipo"):
        sequential.main([*argv, "--methods", "ga"])
    out = sequential.main(argv)
    assert [c[0] for c in calls] == ["cipo", "cipo", "ga", "ga"]
    for method, (first, second) in (("cipo", calls[:2]), ("ga", calls[2:])):
        assert first[1] != second[1] and second[1] == str(out_dir / method / "request1" / "model")
        assert first[2].endswith("request1.jsonl") or "request1" in first[2]
    assert calls[2][3] == calls[3][3] == 2  # GD: the smoke budget
    rows = json.loads((tmp_path / "seq.json").read_text())["rows"]
    assert [(r["method"], r["after"]) for r in rows] == [
        ("target", "–"), ("cipo", "request 1 (A)"), ("cipo", "request 2 (B)"),
        ("ga", "request 1 (A)"), ("ga", "request 2 (B)"),
    ]  # fmt: skip
    for r in rows:
        assert set(r["A"]) == set(r["B"]) and 0.0 <= r["B"]["max_leak_answer"] <= 1.0
    assert "A: worst CoT leak" in sequential.table(rows)
    calls.clear()
    assert sequential.main(argv)["rows"] == out["rows"] and not calls
