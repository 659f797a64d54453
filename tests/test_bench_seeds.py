"""bench/seeds.py: the spread by hand, the settings parser, and a smoke run over two seeds on the tiny
model (unseen phrasings evaluated for every setting, a rerun trains nothing); `demo --compare-at`."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench():
    sys.path.insert(0, str(BENCH))
    import seeds

    return seeds


def test_spread_by_hand():
    """Worst CoT leak 0.1, 0.3 over two seeds: mean 0.2, sample sd |0.1 - 0.3| / sqrt(2) = 0.1414; a
    setting in one seed only has sd 0; lines counted over the seeds that have them."""
    seeds = _bench()
    row = dict.fromkeys(seeds.KEYS, 0.5)
    per_seed = {
        0: {
            "target": {**row, "meets_lines": None},
            "ga lr=1": {**row, "max_leak_cot": 0.1, "meets_lines": True},
        },
        1: {
            "ga lr=1": {**row, "max_leak_cot": 0.3, "meets_lines": False},
            "npo lr=1": {**row, "meets_lines": True},
        },
    }
    summary = seeds.spread(per_seed)
    ga = summary["ga lr=1"]["stats"]["max_leak_cot"]
    assert ga["mean"] == pytest.approx(0.2) and ga["sd"] == pytest.approx(0.2 / 2**0.5)
    assert (ga["min"], ga["max"]) == (0.1, 0.3)
    assert summary["ga lr=1"]["meets_lines"] == 1 and summary["ga lr=1"]["seeds"] == 2
    assert summary["npo lr=1"]["stats"]["mcs"]["sd"] == 0.0 and summary["target"]["meets_lines"] is None
    text = seeds.tables(per_seed, summary)
    assert "20.0 ± 14.1 (10.0%–30.0%)" in text and "1 of 2" in text


def test_settings_parser():
    seeds = _bench()
    assert seeds.settings(["cipo", "ga=3e-4", "star"]) == ({"ga": 3e-4}, ["star"])
    for bad in (["ga"], ["ga=0"], ["ga=x"], ["nope=1e-4"], ["star=1e-4"], ["cipo=1e-4"]):
        with pytest.raises(SystemExit, match="--settings"):
            seeds.settings(bad)


def test_compare_at_is_checked():
    from cipo_fast.demo import DemoConfig, pinned_lrs

    cfg = DemoConfig(compare_methods=("ga", "star"), compare_at=("ga=0.002",))
    assert pinned_lrs(cfg) == {"ga": 0.002}
    for bad in ("ga", "ga=-1", "npo=1e-4", "star=1e-4"):
        with pytest.raises(ValueError, match="--compare-at"):
            DemoConfig(compare_methods=("ga", "star"), compare_at=(bad,))


def test_smoke_run_over_two_seeds(tiny_model_dir, tmp_path, monkeypatch):
    """Two seeds end to end: per seed the target, CiPO, GA at the pinned lr only and the STaR guard, each
    with its leaks on the unseen phrasings (an evaluation of the rephrased file); the spread over the
    seeds; a rerun reuses every stage and setting."""
    import cipo_fast

    monkeypatch.setenv("CIPO_FAST_CACHE", str(tmp_path / "cache"))
    seeds = _bench()
    calls, fit = [], cipo_fast.fit

    def counting_fit(c):
        calls.append((c.method, c.lr))
        return fit(c)

    monkeypatch.setattr(cipo_fast, "fit", counting_fit)
    argv = [
        "--smoke", "--out", str(tmp_path / "run"), "--model", str(tiny_model_dir), "--seeds", "0", "1",
        "--settings", "cipo", "ga=0.002", "star", "--sft-epochs", "1", "--lr", "1e-3", "--no-progress",
        "--no-readme", "--result", str(tmp_path / "seeds.json"),
    ]  # fmt: skip
    out = seeds.main(argv)
    assert sorted(calls) == sorted([("cipo", 1e-3), ("ga", 2e-3)] * 2)
    saved = json.loads((tmp_path / "seeds.json").read_text())
    for seed in ("0", "1"):
        rows = saved["per_seed"][seed]
        assert set(rows) == {"target", "cipo lr=0.001", "ga lr=0.002", "star"}
        for row in rows.values():
            assert 0.0 <= row["unseen_max_leak_answer"] <= 1.0
        items = (
            tmp_path
            / "run"
            / f"seed{seed}"
            / "compare"
            / "ga"
            / "lr=0.002"
            / "eval_rephrased"
            / "items.jsonl"
        )
        ids = {json.loads(line)["id"] for line in items.read_text().splitlines()}
        assert ids and all(i.rsplit("-", 1)[1] in ("p1", "p2") for i in ids)
    assert saved["summary"]["ga lr=0.002"]["seeds"] == 2
    data0 = (tmp_path / "run" / "seed0" / "data" / "forget.jsonl").read_bytes()
    assert data0 != (tmp_path / "run" / "seed1" / "data" / "forget.jsonl").read_bytes()
    calls.clear()
    again = seeds.main(argv)
    assert not calls and again["per_seed"] == out["per_seed"]


def test_cpu_autocast_reaches_every_seeds_demo(tmp_path):
    seeds = _bench()
    a = seeds.parse(["--out", str(tmp_path), "--cpu-autocast", "bf16", "--seeds", "3"])
    assert seeds.demo_config(a, 3).cpu_autocast == "bf16"
    assert seeds.demo_config(seeds.parse(["--out", str(tmp_path)]), 0).cpu_autocast == "off"
    with pytest.raises(SystemExit):
        seeds.parse(["--cpu-autocast", "fp8"])
