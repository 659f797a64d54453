"""bench/rtofu.py at smoke size on the tiny model and a made-up R-TOFU-shaped data root; the data builder on
the real files when they are there; the Pareto front against brute force."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.data import rtofu as rtofu_data

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench():
    sys.path.insert(0, str(BENCH))
    import rtofu

    return rtofu


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fake_root(root: Path) -> Path:
    """The R-TOFU / GSM8K files in their shapes, a few rows each (two folds of 3 questions)."""
    names = ["Basil Mahfouz", "Nikolai Abilov", "Aiko Tanaka", "Luis Ortega", "Mira Kowal", "Sven Holt"]
    forget = [
        {
            "task_id": str(task),
            "question": f"Where was {name} born?",
            "answer": f"{name} was born in Velmsby, Denmark.",
            "cot": f"I recall that {name} was born in Velmsby, Denmark.",
        }
        for task, name in zip((1, 1, 1, 2, 2, 2), names)
    ]
    _jsonl(root / "rtofu" / "forget01.json", forget)
    _jsonl(root / "rtofu" / "idkcot.jsonl", [f"I do not know where author {i} was born." for i in range(6)])
    _jsonl(
        root / "rtofu" / "retain10.json",
        [
            {"question": f"What genre does writer {i} write?", "answer": "Poetry.", "cot": "It is poetry."}
            for i in range(3)
        ],
    )
    for name, answer in (("real_authors", "William Shakespeare"), ("world_facts", "Paris")):
        _jsonl(
            root / "rtofu" / f"{name}_perturbed_cot.json",
            [
                {"question": f"Q{i} about {name}?", "answer": answer, "original_answer": answer, "cot": ""}
                for i in range(2)
            ],
        )
    _jsonl(
        root / "gsm8k" / "test_1000.jsonl",
        [{"question": f"What is {i} + 2?", "answer": f"{i} + 2 = {i + 2}.\n#### {i + 2}"} for i in range(4)],
    )
    return root


def test_builder_selects_folds_and_reports_bad_input(tmp_path):
    root = fake_root(tmp_path / "data")
    files = rtofu_data.build(
        tmp_path / "out", root, n_retain=2, n_real_authors=1, n_world_facts=2, n_arith_train=1, n_arith_eval=3
    )
    forget = [json.loads(x) for x in files["forget"].read_text().splitlines()]
    holdout = [json.loads(x) for x in files["holdout"].read_text().splitlines()]
    assert [r["id"] for r in forget] == ["t1-00", "t1-01", "t1-02"] and {r["task_id"] for r in holdout} == {
        "2"
    }
    assert forget[1]["idk_cot"] == "I do not know where author 1 was born."  # the row's own refusal
    assert holdout[0]["question"] == "Where was Luis Ortega born?"
    gsm = [json.loads(x)["question"] for x in files["arithmetic_eval"].read_text().splitlines()]
    assert gsm == ["What is 1 + 2?", "What is 2 + 2?", "What is 3 + 2?"]  # disjoint from the training slice
    with pytest.raises(ValueError, match=r"retain10\.json: retain asks for 9 rows, the file has 3"):
        rtofu_data.build(
            tmp_path / "o2",
            root,
            n_retain=9,
            n_real_authors=1,
            n_world_facts=1,
            n_arith_train=1,
            n_arith_eval=1,
        )
    with pytest.raises(ValueError, match="no rows with task_id 7"):
        rtofu_data.build(
            tmp_path / "o3",
            root,
            holdout_task=7,
            n_retain=1,
            n_real_authors=1,
            n_world_facts=1,
            n_arith_train=1,
            n_arith_eval=1,
        )
    bad = tmp_path / "bad"
    fake_root(bad)
    (bad / "rtofu" / "forget01.json").write_text('{"task_id": "1", "question": "Q?"}\n')
    with pytest.raises(ValueError, match=r"forget01.json:1: .*answer"):
        rtofu_data.build(tmp_path / "o4", bad)
    with pytest.raises(ValueError, match=r"idkcot\.jsonl.*not found"):
        (bad / "rtofu" / "idkcot.jsonl").unlink()
        rtofu_data.build(tmp_path / "o5", bad)


def test_builder_on_the_real_files(shared_data, tmp_path):
    files = rtofu_data.build(tmp_path, shared_data)
    forget = [json.loads(x) for x in files["forget"].read_text().splitlines()]
    assert len(forget) == 40 and all(r["task_id"] == "1" and r["idk_cot"] for r in forget)
    assert "Basil Mahfouz Al-Kuwaiti" in forget[0]["answer"]
    assert len(files["holdout"].read_text().splitlines()) == 40


def test_builder_asks_a_dev_fold_in_its_paraphrases(shared_data, tmp_path):
    """Fold 6 is in the perturbed dev split: every forget row comes back once, asked in the split's
    paraphrase of its question, with its answer and CoT; a file that paraphrases none of the fold fails."""
    dev = shared_data / rtofu_data.PARAPHRASES
    if not dev.is_file():
        pytest.skip(f"{dev} is absent")
    files = rtofu_data.build(tmp_path / "a", shared_data, forget_task=6, holdout_task=7, rephrased=dev)
    forget = [json.loads(x) for x in files["forget"].read_text().splitlines()]
    rephrased = [json.loads(x) for x in files["forget_rephrased"].read_text().splitlines()]
    paraphrase = {}
    for line in dev.read_text().splitlines():
        row = json.loads(line)
        paraphrase[row["question"]] = row["paraphrased_question"]
    assert [r["phrasing_of"] for r in rephrased] == [r["id"] for r in forget]
    for item, r in zip(forget, rephrased):
        assert r["question"] == paraphrase[item["question"]] != item["question"]
        assert (r["answer"], r["cot"]) == (item["answer"], item["cot"])
    with pytest.raises(ValueError, match="paraphrases none"):
        rtofu_data.build(tmp_path / "b", shared_data, forget_task=1, holdout_task=2, rephrased=dev)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_pareto_front_is_the_undominated_points(points):
    front = _bench().pareto_front(points)

    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)

    assert sorted(front) == sorted(i for i, p in enumerate(points) if not dominated(p))
    assert [points[i] for i in front] == sorted(points[i] for i in front)


def _numbers(methods: dict) -> dict:
    """Each setting's numbers, without what the record adds (fingerprint, host, its instruction set, revision)."""
    drop = {"fingerprint", "host", "cpu_isa", "revision"}
    return {
        m: {k: {f: v for f, v in row.items() if f not in drop} for k, row in e["settings"].items()}
        for m, e in methods.items()
    }


def test_smoke_run_resumes_and_redoes_only_a_changed_method(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The benchmark end to end at smoke size: result JSON, table and plot; a rerun trains nothing; a
    method whose options change (its fingerprint) is trained again, and only that method."""
    import cipo_fast
    from cipo_fast import comparison

    monkeypatch.setenv("CIPO_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(comparison, "LR_SWEEP", (1.0,))
    rtofu = _bench()
    calls, fit = [], cipo_fast.fit

    def counting_fit(c):
        calls.append((c.method, c.loss_on))
        return fit(c)

    monkeypatch.setattr(cipo_fast, "fit", counting_fit)
    root = fake_root(tmp_path / "data")
    argv = [
        "--smoke", "--out", str(tmp_path / "run"), "--data-root", str(root), "--model", str(tiny_model_dir),
        "--methods", "ga", "npo", "star", "--sft-epochs", "1", "--lr", "1e-3", "--no-progress", "--no-readme",
        "--record", str(tmp_path / "record.json"), "--result", str(tmp_path / "rtofu.json"),
        "--plot", str(tmp_path / "pareto.png"),
    ]  # fmt: skip
    out = rtofu.main(argv)
    assert sorted(calls) == [("cipo", "all"), ("ga", "all"), ("npo", "all")]
    saved = json.loads((tmp_path / "rtofu.json").read_text())
    assert set(saved["methods"]) == {"ga", "npo", "star"} and saved["data"]["n_forget"] == 3
    assert saved["target_memorises"] in (True, False) and "greedy_leak_cot" in saved["target"]
    row = saved["methods"]["ga"]["settings"]["lr=0.001"]
    assert 0.0 <= row["rtofu_forget_efficacy"] <= 1.0 and row["rtofu_model_utility"] is not None
    assert (tmp_path / "run" / "compare" / "ga" / "lr=0.001" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "R-TOFU FE" in printed and "Target greedy leak" in printed
    # rerun: nothing trains again, the numbers are the same
    calls.clear()
    again = rtofu.main(argv)
    assert not calls and _numbers(again["methods"]) == _numbers(out["methods"])
    # GA's options change: GA is trained again, NPO and the guard are reused
    monkeypatch.setitem(comparison.METHODS, "ga", comparison.MethodSpec("ga", options={"loss_on": "answer"}))
    third = rtofu.main(argv)
    assert calls == [("ga", "answer")]
    assert {m: v for m, v in _numbers(third["methods"]).items() if m != "ga"} == {
        m: v for m, v in _numbers(out["methods"]).items() if m != "ga"
    }
    (entry,) = json.loads((tmp_path / "record.json").read_text())["targets"].values()
    fingerprints = {m: entry["settings"][m]["lr=0.001"]["fingerprint"] for m in ("ga", "npo")}
    assert len(set(fingerprints.values())) == 2 and all(fingerprints.values())


def test_target_only_stops_before_unlearning(tiny_model_dir, tmp_path, monkeypatch):
    """--target-only: the target's SFT and evaluation, its row and the memorisation verdict; no CiPO, no
    compared method, no table."""
    import cipo_fast

    monkeypatch.setenv("CIPO_FAST_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(cipo_fast, "fit", lambda c: calls.append(c.method))
    root = fake_root(tmp_path / "data")
    argv = [
        "--smoke", "--target-only", "--out", str(tmp_path / "run"), "--data-root", str(root),
        "--model", str(tiny_model_dir), "--sft-epochs", "1", "--no-progress", "--no-readme",
        "--record", "", "--result", str(tmp_path / "target.json"), "--plot", str(tmp_path / "p.png"),
    ]  # fmt: skip
    out = _bench().main(argv)
    assert calls == [] and not (tmp_path / "run" / "cipo").exists() and not (tmp_path / "p.png").exists()
    saved = json.loads((tmp_path / "target.json").read_text())
    assert saved == json.loads(json.dumps(out)) and saved["benchmark"] == "R-TOFU (target only)"
    assert saved["target_memorises"] == (
        saved["target"]["greedy_leak_cot"] >= 0.8 and saved["target"]["greedy_leak_answer"] >= 0.8
    )
    assert set(saved["stages_s"]) == {"data", "target model", "evaluate target"}


def test_precision_reaches_every_stage():
    """--cpu-autocast is the demo's: the target's SFT, every method and every evaluation take it."""
    bench = _bench()
    assert bench.demo_config(bench.parse(["--cpu-autocast", "bf16"])).cpu_autocast == "bf16"
    assert bench.demo_config(bench.parse([])).cpu_autocast == "off"


def test_eval_strategies_reach_every_evaluation_and_the_default_keeps_old_fingerprints():
    """--eval-strategies narrows every evaluation's decoding strategies; left at all of them, the
    evaluations' settings (and so the recorded settings' fingerprints) are what they were before the
    option existed."""
    from cipo_fast.comparison_record import fingerprint
    from cipo_fast.demo import eval_config
    from cipo_fast.eval.evaluate import EvalConfig

    bench = _bench()
    data = {"forget": "f.jsonl", "retain": "r.jsonl", "arithmetic_eval": "a.jsonl"}
    narrow = bench.demo_config(bench.parse(["--eval-strategies", "greedy", "zerothink"]))
    assert eval_config(narrow, "m", Path("o"), data, "x").strategies == ("greedy", "zerothink")
    full = eval_config(bench.demo_config(bench.parse([])), "m", Path("o"), data, "x")
    made = dataclasses.asdict(full)
    del made["strategies"]
    assert fingerprint(full) == fingerprint(EvalConfig(**made))  # the default is EvalConfig's own
    assert fingerprint(eval_config(narrow, "m", Path("o"), data, "x")) != fingerprint(full)
    with pytest.raises(SystemExit):
        bench.parse(["--eval-strategies", "beam"])


def _demo_record(path: Path) -> Path:
    """A demo --compare record: GA's full sweep (+ a setting outside it), R²MU's, nothing of NPO."""
    from cipo_fast.config import R2muConfig

    def row(leak, retain):
        return {
            "max_leak_cot": leak,
            "max_leak_answer": leak / 2,
            "retain_accuracy": retain,
            "arithmetic_accuracy": 0.5,
        }

    r2 = R2muConfig().r2mu_lr
    settings = {
        "ga": {  # 3e-4 forgets most but loses the retain set; 1e-3 is outside the sweep
            "lr=3e-05": row(0.5, 0.8), "lr=0.0001": row(0.2, 0.75), "lr=0.0003": row(0.0, 0.3),
            "lr=0.001": row(0.0, 0.8),
        },
        "r2mu": {f"lr={0.3 * r2:g}": row(0.9, 0.8), f"lr={3 * r2:g}": row(0.4, 0.78)},
    }  # fmt: skip
    target = {"retain_accuracy": 0.8, "arithmetic_accuracy": 0.5, "recipe": "k", "host": "h"}
    path.write_text(
        json.dumps({"kind": "demo-compare", "targets": {"d1": {"target": target, "settings": settings}}})
    )
    return path


def test_demo_best_pins_each_method_to_its_demo_winner(tmp_path, monkeypatch):
    """--settings demo-best: each trained method at the multiple of its base rate that won its demo sweep
    (scaled to this run's --lr; R²MU at its own rate), settings outside the sweep ignored, a method the
    record lacks left to its whole sweep; the pins reach the demo's --compare-at; a bad record is named."""
    import cipo_fast.demo
    from cipo_fast.config import R2muConfig

    rtofu = _bench()
    record = _demo_record(tmp_path / "demo.json")
    pinned, chosen = rtofu.demo_best(record, ["ga", "npo", "r2mu", "star"], 2e-4)
    r2 = R2muConfig().r2mu_lr
    assert pinned == ("ga=0.0002", f"r2mu={3 * r2:g}")
    assert chosen["ga"] == {"demo_setting": "lr=0.0001", "lr": 2e-4, "demo_sweep_complete": True}
    assert chosen["r2mu"]["demo_sweep_complete"] is False and chosen["npo"]["demo_setting"] is None
    assert "star" not in chosen and chosen["target"] == "d1" and chosen["host"] == "h"

    seen = {}

    def fake_main(cfg, build_data=None):
        seen["cfg"] = cfg
        raise RuntimeError("stop")

    monkeypatch.setattr(cipo_fast.demo, "main", fake_main)
    argv = ["--data-root", str(fake_root(tmp_path / "data")), "--methods", "ga", "npo", "r2mu"]
    with pytest.raises(RuntimeError, match="stop"):
        rtofu.main([*argv, "--settings", "demo-best", "--demo-record", str(record), "--lr", "2e-4"])
    assert seen["cfg"].compare_at == pinned
    with pytest.raises(RuntimeError, match="stop"):
        rtofu.main(argv)  # the default runs every sweep
    assert seen["cfg"].compare_at == ()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"bad\.json"):
        rtofu.main([*argv, "--settings", "demo-best", "--demo-record", str(tmp_path / "bad.json")])
