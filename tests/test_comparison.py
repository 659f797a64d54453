"""`demo --compare`: the selection rule, the sweep, the tables, and a small comparison on the tiny model."""

import dataclasses
import json

import pytest

from cipo_fast.comparison import (
    LR_SWEEP,
    METHODS,
    best_setting,
    compare_table,
    headline,
    summarize_sweep,
    sweep_lrs,
    sweep_settings,
    sweep_table,
)

TARGET = {"retain_accuracy": 0.80, "arithmetic_accuracy": 0.30}


def row(cot, answer, retain, arith):
    return {
        "max_leak_cot": cot,
        "max_leak_answer": answer,
        "retain_accuracy": retain,
        "arithmetic_accuracy": arith,
    }


def test_best_setting_forgets_most_among_those_that_keep_utility():
    rows = {
        "lr=1e-05": row(0.5, 0.4, 0.80, 0.30),
        "lr=3e-05": row(0.1, 0.2, 0.72, 0.25),  # within 10 points on both: kept, worst leak 0.2
        "lr=0.0001": row(0.0, 0.0, 0.50, 0.30),  # forgets everything but loses retain: not kept
    }
    assert best_setting(rows, TARGET) == "lr=3e-05"
    rows["lr=2e-05"] = row(0.2, 0.1, 0.79, 0.30)  # same worst leak, more retain: preferred
    assert best_setting(rows, TARGET) == "lr=2e-05"
    broken = {"a": row(0.0, 0.0, 0.2, 0.0), "b": row(0.0, 0.0, 0.4, 0.05)}  # none keeps utility
    assert best_setting(broken, TARGET) == "b"
    with pytest.raises(ValueError):
        best_setting({}, TARGET)


def test_sweep_learning_rates():
    assert sweep_lrs(METHODS["ga"], 1e-4) == [pytest.approx(m * 1e-4) for m in LR_SWEEP]
    assert sweep_lrs(METHODS["r2mu"], 1e-4, 7.5e-5) == [pytest.approx(m * 7.5e-5) for m in LR_SWEEP]
    assert sweep_lrs(METHODS["star"], 1e-4) == []
    # a variant whose base is scaled: R²MU with RMU's retain weight, around 100x R²MU's own rate
    assert sweep_lrs(METHODS["r2mu_alpha1200"], 1e-4, 7.5e-5) == [pytest.approx(m * 7.5e-3) for m in LR_SWEEP]


def test_sweep_settings_key_each_rate_and_take_r2mus_own_base():
    from cipo_fast.config import R2muConfig

    own = R2muConfig().r2mu_lr
    ga = sweep_settings(METHODS["ga"], 1e-4)
    assert list(ga.values()) == [pytest.approx(m * 1e-4) for m in LR_SWEEP]
    assert list(ga) == [f"lr={lr:g}" for lr in ga.values()]  # the keys the demo and the record use
    r2mu = sweep_settings(METHODS["r2mu"], 1e-4)  # the demo's --lr does not move R²MU's base
    assert list(r2mu.values()) == [pytest.approx(m * own) for m in LR_SWEEP]
    assert list(sweep_settings(METHODS["r2mu_alpha1200"], 1e-4).values()) == [
        pytest.approx(m * 100 * own) for m in LR_SWEEP
    ]
    assert sweep_settings(METHODS["guard"], 1e-4) == {"target": None}


def test_tables_mark_the_best_setting():
    def head(r):
        return headline({"strategies": {"greedy": {"leak_cot": r[0], "leak_answer": r[1]}}, "mcs": 0.5})

    runs = {"ga": {"lr=1": head((0.5, 0.5)), "lr=3": head((0.0, 0.25))}}
    summary = summarize_sweep(runs, {})
    assert summary["ga"]["best"] == "lr=3"
    table = compare_table(summary, {"max_leak_cot": 1.0, "max_leak_answer": 1.0})
    assert "ga | lr=3 | 0.0% | 25.0%" in table and table.count("\n") == 3
    assert "lr=3 (best)" in sweep_table(summary) and "lr=1 |" in sweep_table(summary)


def test_compare_runs_each_setting_once_and_reuses_it(tiny_model_dir, tmp_path, monkeypatch):
    """A small comparison on the tiny model: each setting of the sweep trains and is evaluated, the guard
    evaluates the target, and a rerun reuses every setting (same wall time recorded); a record file
    carries the results to a new run directory for the same target weights, and only to those."""
    from cipo_fast import comparison, demo, synthetic
    from cipo_fast.data.io import read_jsonl, write_jsonl

    monkeypatch.setattr(comparison, "LR_SWEEP", (1.0, 3.0))
    data = synthetic.build(
        tmp_path / "data", n_authors=3, n_forget=1, n_arith_train=4, n_arith_eval=2, n_holdout=1
    )
    data["retain_all"] = demo.retain_with_arithmetic(data, tmp_path / "data" / "retain_all.jsonl")
    for key in ("forget", "retain"):  # fewer items keep the evaluation short
        rows = [r for _, r in read_jsonl(data[key])][:3]
        write_jsonl(data[key], rows)
    cfg = demo.DemoConfig(
        out=str(tmp_path / "demo"),
        lr=1e-3,
        batch_size=2,
        eval_samples=1,
        max_new_tokens=4,
        progress=False,
        compare=True,
        compare_methods=("ga_kl", "answer_idk", "tru", "star"),
    )
    import cipo_fast

    calls, fit = [], cipo_fast.fit

    def counting_fit(c):
        calls.append((c.method, c.lr, c.retain_loss, c.loss_on))
        return fit(c)

    monkeypatch.setattr(cipo_fast, "fit", counting_fit)  # compare looks fit up when it runs
    out = tmp_path / "compare"
    runs = demo.compare(cfg, str(tiny_model_dir), data, 2, out, cipo_after={})
    assert set(runs) == {"ga_kl", "answer_idk", "tru", "star"}
    assert set(runs["ga_kl"]) == {"lr=0.001", "lr=0.003"} and set(runs["star"]) == {"target"}
    assert sorted(calls) == sorted(
        [("ga", lr, "kl", "all") for lr in (1e-3, 3e-3)]
        + [("sft", lr, "nll", "answer") for lr in (1e-3, 3e-3)]
        + [("tru", lr, "nll", "all") for lr in (1e-3, 3e-3)]
    )
    assert json.loads((out / "star" / "eval" / "summary.json").read_text())["guard"]["name"] == "star"
    metrics = [json.loads(x) for x in (out / "ga_kl" / "lr=0.003" / "metrics.jsonl").read_text().splitlines()]
    assert len([m for m in metrics if "loss" in m]) == 2 and "loss/retain_kl" in metrics[-1]
    walls = {k: v["wall_s"] for k, v in runs["tru"].items()}
    calls.clear()
    again = demo.compare(cfg, str(tiny_model_dir), data, 2, out, cipo_after={})
    assert not calls and {k: v["wall_s"] for k, v in again["tru"].items()} == walls
    # a record carries every finished setting to an empty run directory (same target weights)
    from cipo_fast.comparison_record import CompareRecord, weights_digest

    path = tmp_path / "record.json"
    digest = weights_digest(tiny_model_dir)
    demo.compare(cfg, str(tiny_model_dir), data, 2, out, {}, CompareRecord(path, digest))
    stored = json.loads(path.read_text())["targets"][digest]["settings"]
    assert {k: v["wall_s"] for k, v in stored["tru"].items()} == walls and stored["tru"]["lr=0.001"]["host"]
    fresh = demo.compare(
        cfg, str(tiny_model_dir), data, 2, tmp_path / "fresh", {}, CompareRecord(path, digest)
    )
    assert not calls and [p.name for p in (tmp_path / "fresh").iterdir()] == [
        "data"
    ]  # the methods' data only
    assert {k: v["wall_s"] for k, v in fresh["tru"].items()} == walls
    # other weights: nothing is reused, and the first target's entry stays as it was
    cfg2 = dataclasses.replace(cfg, compare_methods=("ga_kl",))
    other = CompareRecord(path, "0" * 64)
    demo.compare(cfg2, str(tiny_model_dir), data, 2, tmp_path / "other", {}, other)
    assert len(calls) == 2 and json.loads(path.read_text())["targets"][digest]["settings"] == stored


def test_compare_record_refuses_a_file_that_is_not_one(tmp_path):
    from cipo_fast.comparison_record import CompareRecord

    bad = tmp_path / "results.json"
    for text in (
        "{not json",
        '{"kind": "something else"}',
        '{"kind": "cipo-fast compare record", "targets": {"x": 3}}',
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=r"--compare-record .*results\.json"):
            CompareRecord(bad, "d")
        assert bad.read_text() == text  # left as it was
    record = CompareRecord(tmp_path / "new.json", "d")  # a missing file is a new record
    assert record.get("ga", "lr=1") is None and not (tmp_path / "new.json").exists()
    record.put("ga", "lr=1", {"wall_s": 1.0})
    assert CompareRecord(tmp_path / "new.json", "d").get("ga", "lr=1")["wall_s"] == 1.0
    assert CompareRecord(tmp_path / "new.json", "e").get("ga", "lr=1") is None


def test_compare_tables_render_a_partial_record():
    """bench/compare_tables.py: the status counts what ran and names what did not; a method with part of
    its sweep is marked; the best setting shown is `best_setting`'s."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import compare_tables

    def row(leak, retain):
        return {"max_leak_cot": leak, "max_leak_answer": leak, "mcs": 0.5, "retain_accuracy": retain,
                "arithmetic_accuracy": 0.2, "wall_s": 100.0, "host": "h", "revision": "abc"}  # fmt: skip

    expected = compare_tables.expected_settings()
    ga_keys = expected["ga"]
    record = {
        "kind": "cipo-fast compare record",
        "targets": {
            "a" * 64: {
                "target": row(1.0, 0.85),
                "settings": {
                    "ga": {ga_keys[0]: row(0.5, 0.84), ga_keys[1]: row(0.0, 0.1), ga_keys[2]: row(0.2, 0.8)},
                    "npo": {expected["npo"][0]: row(0.7, 0.9)},
                },
            },
            "b" * 64: {"settings": {}},
        },
    }
    assert compare_tables.pick_target(record, None) == "a" * 64
    text = compare_tables.render(record, "a" * 64)
    total = sum(len(v) for v in expected.values())
    assert f"4 of {total} settings done (0.1 h" in text
    assert (
        "npo (" + ", ".join(expected["npo"][1:]) + ")" in text and "ga (" not in text.split("Not run yet:")[1]
    )
    # ga: the setting at 0 % leak loses 74 points of retain, so the best is the 20 % one that keeps it
    assert f"ga | {ga_keys[2]} | 20.0% | 20.0%" in text
    assert "(best of an incomplete sweep: npo)" in text
    # rows without a fingerprint (recorded before they existed) are named, but the demo's own CiPO run
    assert "were recorded before settings had fingerprints" in text
    settings = record["targets"]["a" * 64]["settings"]
    assert len(compare_tables.unverified(settings)) == 4 and "ga " + ga_keys[2] in text
    for rows in record["targets"]["a" * 64]["settings"].values():
        for r in rows.values():
            r["fingerprint"] = "f" * 16
    record["targets"]["a" * 64]["settings"]["cipo"] = {f"lr={compare_tables.BASE_LR:g}": row(0.0, 0.85)}
    assert "before settings had fingerprints" not in compare_tables.render(record, "a" * 64)
    del record["targets"]["a" * 64]["settings"]["cipo"]
    # a setting at an lr outside the sweep (--compare-at) is shown but not counted as one of the sweep's
    record["targets"]["a" * 64]["settings"]["npo"]["lr=1"] = row(0.1, 0.2)
    assert f"4 of {total} settings done (+1 outside the sweep) (0.1 h" in compare_tables.render(
        record, "a" * 64
    )


def test_compare_record_takes_settings_from_targets_of_the_same_recipe_and_host(tmp_path):
    """A target of the same recipe built on the same host type in another session (other weights from
    float rounding) lends its settings, fingerprint-checked on its own digest and marked with it; another
    recipe or another host lends nothing."""
    from cipo_fast.comparison_record import CompareRecord, cpu_model

    path = tmp_path / "record.json"
    first = CompareRecord(path, "a" * 64, recipe="r1")
    first.put_target({"retain_accuracy": 0.8})
    full = {"max_leak_cot": 0.5, "max_leak_answer": 0.5, "mcs": 0.5, "retain_accuracy": 0.8,
            "arithmetic_accuracy": 0.2}  # fmt: skip
    first.put("ga", "lr=1", {**full, "wall_s": 5.0}, fingerprint="fp-a")
    CompareRecord(path, "c" * 64, recipe="r2").put_target({"retain_accuracy": 0.8})
    second = CompareRecord(path, "b" * 64, recipe="r1")
    second.put_target({"retain_accuracy": 0.8})
    assert second.siblings() == ["a" * 64]
    row = second.get("ga", "lr=1", lambda d: {"a" * 64: "fp-a", "b" * 64: "fp-b"}[d])
    assert row["wall_s"] == 5.0 and row["target_sha256"] == "a" * 64
    assert second.get("ga", "lr=1", lambda d: "fp-other") is None  # made with other settings
    assert CompareRecord(path, "d" * 64, recipe="r2").get("ga", "lr=1") is None  # another recipe
    assert CompareRecord(path, "e" * 64).get("ga", "lr=1") is None  # no recipe: its own entry only
    data = json.loads(path.read_text())
    data["targets"]["a" * 64]["target"]["host"] = "another CPU"
    assert cpu_model() != "another CPU"
    path.write_text(json.dumps(data))
    assert CompareRecord(path, "b" * 64, recipe="r1").get("ga", "lr=1") is None  # another host type
    from cipo_fast.comparison_record import cpu_isa

    data["targets"]["a" * 64]["target"].update(host=cpu_model(), cpu_isa="not " + cpu_isa())
    path.write_text(json.dumps(data))  # one model name, another instruction set: another host type
    assert CompareRecord(path, "b" * 64, recipe="r1").get("ga", "lr=1") is None
    del data["targets"]["a" * 64]["target"]["cpu_isa"]  # rows from before the field match on the name
    path.write_text(json.dumps(data))
    assert CompareRecord(path, "b" * 64, recipe="r1").get("ga", "lr=1")["target_sha256"] == "a" * 64
    assert json.loads(path.read_text())["targets"]["b" * 64]["target"]["cpu_isa"] == cpu_isa()
    # the tables merge a group into one sweep and say where each setting came from
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import compare_tables

    data["targets"]["a" * 64]["target"]["host"] = cpu_model()
    data["targets"]["b" * 64]["settings"] = {"npo": {"lr=1": {**full, "wall_s": 1.0}}}
    assert compare_tables.group(data, "b" * 64) == ["b" * 64, "a" * 64]
    runs, given = compare_tables.merged_settings(data, ["b" * 64, "a" * 64])
    assert set(runs) == {"npo", "ga"} and given == {"b" * 64: 1, "a" * 64: 1}
    text = compare_tables.render(data, "b" * 64)
    assert "2 builds of one target recipe" in text and "bbbbbbbb… 1, aaaaaaaa… 1" in text
    assert "their own rows equal in retain_accuracy." in text and compare_tables.group(data, "c" * 64) == [
        "c" * 64
    ]


def test_fields_added_later_keep_the_fingerprints_recorded_before_them():
    """EvalConfig gained `cpu_autocast` after settings were recorded: at "off" it is left out (the old
    fingerprint), any other value changes the fingerprint."""
    from cipo_fast.comparison_record import fingerprint
    from cipo_fast.eval.evaluate import EvalConfig

    cfg = EvalConfig(out="o", forget="f", model="m", samples=3)
    before = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "cpu_autocast"}
    assert fingerprint(cfg) == fingerprint(before)
    assert fingerprint(dataclasses.replace(cfg, cpu_autocast="bf16")) != fingerprint(cfg)


def test_r2mu_variant_sets_its_retain_weight_and_leaves_r2mu_alone():
    from cipo_fast.demo import DemoConfig, method_config

    data = {"forget": "f.jsonl", "retain": "r.jsonl", "arithmetic_train": "a.jsonl", "retain_all": "ra.jsonl"}
    made = {
        name: method_config(DemoConfig(), METHODS[name], {}, data, 1e-4, 1.0, model="m", out="o", max_steps=3)
        for name in ("r2mu", "r2mu_alpha1200")
    }
    assert made["r2mu_alpha1200"].r2mu.r2mu_alpha == 1200.0
    assert made["r2mu"].r2mu.r2mu_alpha == 1.7  # the R²MU README's ALPHA, as before the variant existed
    assert made["r2mu"].r2mu.r2mu_adaptive_scale == made["r2mu_alpha1200"].r2mu.r2mu_adaptive_scale == 5.0
