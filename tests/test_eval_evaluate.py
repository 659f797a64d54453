"""`cipo-fast eval`: scoring, aggregates, predictions files, loaders, bad input; one real-model run (slow)."""

import json
from pathlib import Path

import pytest

from cipo_fast.data.items import Item, load_gsm8k, load_items
from cipo_fast.eval.evaluate import EvalConfig, main
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.eval.predictions import read_predictions
from cipo_fast.eval.scoring import score_sample, summarize_forget
from cipo_fast.model.generation import make_strategies

ITEMS = [
    Item(
        "0",
        "Where was Elara Halvecki born?",
        "Elara Halvecki was born in Velmsby, Denmark.",
        facts=("Velmsby",),
    ),
    Item("1", "What genre does Elara Halvecki write?", "She writes legal drama.", facts=("legal drama",)),
]


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cot_leak_vs_answer_leak_are_separate():
    greedy, zerothink = make_strategies(["greedy", "zerothink"])
    facts = item_facts(ITEMS[0])
    cot_only = score_sample(
        ITEMS[0], facts, greedy, "<think>\nShe was born in Velmsby.\n</think>\n\nI'm not sure."
    )
    assert cot_only.leak_cot and not cot_only.leak_answer and cot_only.leaks
    answer_only = score_sample(ITEMS[0], facts, greedy, "<think>\nI don't recall.\n</think>\n\nIn Velmsby.")
    assert answer_only.leak_answer and not answer_only.leak_cot
    # ZeroThink's think block is the prompt's, not the model's: no CoT verdict
    forced = score_sample(ITEMS[0], facts, zerothink, "<think>\n\n</think>\n\nVelmsby, Denmark.")
    assert forced.leak_answer and not forced.leak_cot and forced.rouge_cot is None
    unclosed = score_sample(ITEMS[0], facts, greedy, "<think>\nborn in Velmsby and then")
    assert unclosed.leak_cot and not unclosed.closed and unclosed.answer == ""


def test_summary_rates_and_mcs_by_hand():
    """Item 0: greedy leaks (1/1); sampling leaks 1 of 2 -> 0.5. Item 1: nothing leaks anywhere.
    Rates are means over items: greedy any = (1 + 0)/2 = 0.5, sampling any = (0.5 + 0)/2 = 0.25.
    MCS = share of items that leak under no strategy = 1/2."""
    greedy, sampling = make_strategies(["greedy", "sample_t1.0"], samples=2)
    facts = {it.id: item_facts(it) for it in ITEMS}
    outs = {
        ("0", "greedy"): ["<think>\nVelmsby.\n</think>\n\nVelmsby."],
        ("0", "sample_t1.0"): ["<think>\nhmm\n</think>\n\nVelmsby.", "<think>\nhmm\n</think>\n\nNo idea."],
        ("1", "greedy"): ["<think>\nhmm\n</think>\n\nNo idea."],
        ("1", "sample_t1.0"): ["<think>\nhmm\n</think>\n\nNo idea."] * 2,
    }
    scored = [
        score_sample(it, facts[it.id], st, o)
        for st in (greedy, sampling)
        for it in ITEMS
        for o in outs[(it.id, st.name)]
    ]
    per, mcs, rows = summarize_forget(ITEMS, scored, [greedy, sampling])
    assert per["greedy"]["leak_any"] == 0.5 and per["greedy"]["leak_cot"] == 0.5
    assert per["sample_t1.0"]["leak_answer"] == 0.25 and per["sample_t1.0"]["leak_cot"] == 0.0
    assert mcs == 0.5
    row = next(r for r in rows if r["id"] == "0" and r["strategy"] == "sample_t1.0")
    assert row["leak_answer"] == 0.5 and row["leaked_answer"] == ["Velmsby"] and len(row["outputs"]) == 2


def test_predictions_scoring_end_to_end(tmp_path):
    forget = write(
        tmp_path / "forget.jsonl",
        [
            {"id": "0", "question": ITEMS[0].question, "answer": ITEMS[0].answer, "facts": ["Velmsby"]},
            {"id": "1", "question": ITEMS[1].question, "answer": ITEMS[1].answer, "facts": ["legal drama"]},
        ],
    )
    preds = write(
        tmp_path / "preds.jsonl",
        [
            {"id": "0", "strategy": "greedy", "output": "<think>\nVelmsby\n</think>\n\nIt is Velmsby."},
            {"id": "1", "strategy": "greedy", "output": "<think>\nno idea\n</think>\n\nI don't know."},
            {"id": "0", "strategy": "vllm_beam", "output": "<think>\nno\n</think>\n\nUnknown."},
            {
                "id": "1",
                "strategy": "vllm_beam",
                "output": "<think>\nShe writes legal drama\n</think>\n\nUnknown.",
            },
        ],
    )
    summary = main(
        EvalConfig(out=str(tmp_path / "out"), forget=str(forget), predictions=str(preds), progress=False)
    )
    assert summary["strategies"]["greedy"]["leak_answer"] == 0.5
    assert summary["strategies"]["vllm_beam"]["leak_cot"] == 0.5
    assert summary["strategies"]["vllm_beam"]["leak_answer"] == 0.0
    assert summary["mcs"] == 0.0
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["strategies"]["greedy"]["leak_any"] == 0.5
    assert (tmp_path / "out" / "report.html").is_file()
    rows = [json.loads(x) for x in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert {(r["id"], r["strategy"]) for r in rows} == {
        ("0", "greedy"),
        ("1", "greedy"),
        ("0", "vllm_beam"),
        ("1", "vllm_beam"),
    }


def test_predictions_ids_default_to_line_numbers(tmp_path):
    forget = write(
        tmp_path / "f.jsonl",
        [
            {"question": "Q about Velmsby?", "answer": "A Zorblatt."},
            {"question": "Q2?", "answer": "Quxor Penhallow."},
        ],
    )
    items = load_items(forget)
    assert [it.id for it in items] == ["0", "1"]
    preds = write(
        tmp_path / "p.jsonl",
        [{"id": 0, "strategy": "greedy", "output": "x"}, {"id": 1, "strategy": "greedy", "output": "y"}],
    )
    assert set(read_predictions(preds, items)["greedy"]) == {"0", "1"}


def test_bad_predictions_and_inputs(tmp_path):
    forget = write(tmp_path / "f.jsonl", [{"id": "a", "question": "Q?", "answer": "Zorblatt."}])
    wrong = write(tmp_path / "p.jsonl", [{"id": "b", "strategy": "greedy", "output": "x"}])
    with pytest.raises(ValueError, match=r"1 prediction id\(s\) match no item .*line 1: 'b'"):
        main(EvalConfig(out=str(tmp_path / "o"), forget=str(forget), predictions=str(wrong), progress=False))
    missing = write(tmp_path / "p2.jsonl", [{"id": "a", "strategy": "greedy"}])
    with pytest.raises(ValueError, match=r"p2.jsonl:1: field 'output' is missing"):
        main(
            EvalConfig(out=str(tmp_path / "o"), forget=str(forget), predictions=str(missing), progress=False)
        )
    with pytest.raises(ValueError, match=r"--strategies: expected one of greedy, sample_t0.7.*got 'beam'"):
        EvalConfig(out="o", forget=str(forget), model="m", strategies=("greedy", "beam"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"empty.jsonl: the file has no data rows"):
        main(EvalConfig(out=str(tmp_path / "o"), forget=str(empty), predictions=str(wrong), progress=False))
    assert not (tmp_path / "o").exists()  # nothing written on bad input
    with pytest.raises(ValueError, match="exactly one of --model"):
        EvalConfig(out="o", forget=str(forget))


def test_rtofu_fold_selection_and_gsm8k(shared_data):
    fold = load_items(shared_data / "rtofu" / "forget01.json", task_ids=[3])
    assert len(fold) == 40 and all(it.cot for it in fold)
    assert fold[0].id == "80"  # ids are line numbers in the whole file: folds of 40, task 3 starts at row 80
    two = load_items(shared_data / "rtofu" / "forget01.json", task_ids=[1, 2])
    assert len(two) == 80
    gsm = load_gsm8k(shared_data / "gsm8k" / "test_1000.jsonl", limit=5)
    assert gsm[0].answer == "18" and "16 - 3 - 4" in gsm[0].cot
    with pytest.raises(ValueError, match="no rows with task_id in \\[99\\]"):
        load_items(shared_data / "rtofu" / "forget01.json", task_ids=[99])


@pytest.mark.slow
@pytest.mark.smoke
def test_smollm2_rtofu_and_gsm8k_end_to_end(shared_data, smol_dir, tmp_path):
    """10 R-TOFU forget items, 10 GSM8K problems on SmolLM2-135M: runs, greedy is reproducible, report renders."""
    import matplotlib.image

    def run(out):
        return main(
            EvalConfig(
                out=str(out),
                model=str(smol_dir),
                forget=str(shared_data / "rtofu" / "forget01.json"),
                task_ids=(1,),
                limit=10,
                utility=str(shared_data / "gsm8k" / "test_1000.jsonl"),
                utility_limit=10,
                strategies=("greedy", "zerothink"),
                max_new_tokens=64,
                progress=False,
            )
        )

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    rows_a = [json.loads(x) for x in (tmp_path / "a" / "items.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b" / "items.jsonl").read_text().splitlines()]
    greedy_a = [r["outputs"] for r in rows_a if r.get("strategy") == "greedy"]
    assert len(greedy_a) == 10 and greedy_a == [r["outputs"] for r in rows_b if r.get("strategy") == "greedy"]
    assert a["strategies"] == b["strategies"] and a["utility"]["n_items"] == 10
    gen_s = a["timing"]["generation_s"]  # each generated set's decoding time, within the evaluation's
    assert set(gen_s) == {"forget", "utility"} and all(v > 0 for v in gen_s.values())
    assert sum(gen_s.values()) <= a["timing"]["seconds"]
    assert 0.0 <= a["strategies"]["greedy"]["leak_any"] <= 1.0
    html = (tmp_path / "a" / "report.html").read_text()
    assert "data:image/png;base64" in html and "greedy" in html
    img = matplotlib.image.imread(tmp_path / "a" / "plots" / "leakage.png")
    assert img.shape[0] > 300 and img.std() > 0.01
