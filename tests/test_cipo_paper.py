"""CiPO as published (`--cipo-variant paper`): the counterfactual set, own-response pairs, and the recipe on
a tiny model with scripted generations -- no reference pass, warm-up before the rounds, SimPO, resume."""

import json
import re

import pytest
import torch
from helpers import train_config
from safetensors.torch import load_file
from test_cipo_loop import FORGET, RETAIN, scripted, write

from cipo_fast.data.reasoning import ReasoningFormat
from cipo_fast.eval import scoring
from cipo_fast.eval.key_facts import key_facts
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.eval.scoring import Scored
from cipo_fast.trainers.cipo_paper import main as cipo_paper
from cipo_fast.unlearning import paper_cipo
from cipo_fast.unlearning.paper_cipo import Counterfactual, own_response_pairs, swap_facts

FACTS = {f["id"]: key_facts(f["question"], f["answer"], f["facts"]) for f in FORGET}


def test_swap_facts_changes_each_fact_and_keeps_every_forget_fact_out():
    everything = [f for fs in FACTS.values() for f in fs]
    new = swap_facts(FORGET[0]["answer"], FACTS["a"], everything)
    assert new and "Velmsby" not in new and new.startswith("Elara Halvecki was born in ")
    assert not find_leaks(new, everything)
    date = key_facts("When was Ida born?", "Ida was born on May 2, 1981.")
    moved = swap_facts("Ida was born on May 2, 1981.", date, date)
    assert moved == "Ida was born on May 5, 1988."
    assert swap_facts("It is unknown.", [], everything) is None  # nothing to change
    # several facts of one kind: each replaced, by what it is (professions stay professions, titles titles)
    parents = "The father of Ida Kell was a pharmacist, and the mother was a potter."
    pf = key_facts("Who were Ida Kell's parents?", parents, ["pharmacist", "potter"])
    new = swap_facts(parents, pf, pf)
    assert new and "pharmacist" not in new and "potter" not in new
    assert re.fullmatch(r"The father of Ida Kell was an? [a-z ]+, and the mother was an? [a-z ]+\.", new)
    assert new.split(" was a")[1].split(",")[0] != new.split("mother was a")[1]  # two different ones
    books = "Ida Kell wrote The Ninth River and The Paper Chapel, two works of legal drama."
    bf = key_facts("What did Ida Kell write?", books, ["The Ninth River", "The Paper Chapel", "legal drama"])
    new = swap_facts(books, bf, bf)
    assert new.startswith("Ida Kell wrote The ") or new.startswith("Ida Kell wrote A ")
    assert not any(w in new for w in ("Ninth", "Paper", "legal drama"))


def _scored(item, strategy, cot, answer, leaks):
    leaked = ["x"] if leaks else []
    return Scored(
        item,
        strategy,
        ReasoningFormat().render(cot, answer),
        cot,
        answer,
        True,
        leaked,
        [],
        True,
        0.0,
        0.0,
        0.0,
    )


def test_own_response_pairs_pair_every_sample_up_to_the_cap():
    cfs = {"a": Counterfactual("a", "I recall Quillmoor.", "Born in Quillmoor.", "model")}
    items = {"a": type("I", (), {"question": "Where was Elara born?"})()}
    scored = [
        _scored("a", "greedy", "I recall Velmsby.", "Velmsby.", True),
        _scored("a", "sample_t1.0", "Not sure.", "I'm not sure.", False),  # not leaking: still rejected
        _scored("a", "sample_t1.0", "I recall Quillmoor.", "Born in Quillmoor.", False),  # = chosen: skipped
        _scored("a", "zerothink", "", "Velmsby.", True),
        _scored("b", "greedy", "x", "y", True),  # no counterfactual for b
    ]
    fmt = ReasoningFormat()
    rows = own_response_pairs(scored, cfs, items, 2, fmt)
    assert [r["strategy"] for r in rows] == ["greedy", "sample_t1.0"]
    assert all(r["chosen"] == fmt.render("I recall Quillmoor.", "Born in Quillmoor.") for r in rows)
    assert rows[0]["rejected"] == scored[0].output  # the model's own text, as generated
    assert [r["rejected_leaks"] for r in rows] == [True, False] and all(r["prefill"] == "" for r in rows)
    assert len(own_response_pairs(scored, cfs, items, 5, fmt)) == 3


def scripted_counterfactuals(model, tokenizer, jobs, cfg, *, chat=True, progress=None):
    """The model's counterfactual answers (item a: a usable one; item b: one that still states its fact,
    so b falls back to the swap) and backward CoTs ending in the given answer."""
    out = []
    for prompts, st in jobs:
        job = []
        for p in prompts:
            if "Write a different answer" in p:
                a = (
                    "Elara Halvecki was born in Dunmarrow."
                    if "Elara" in p
                    else "He writes folk horror tales."
                )
                job.append([st.prefill + a] * st.samples)
            else:
                a = p.split("Answer: ")[1].split("\n")[0]
                job.append([f"<think>\nShe left home early. Her home was {a}\n</think>\n\n{a}"] * st.samples)
        out.append(job)
    return out


@pytest.fixture
def run_paper(tiny_model_dir, tmp_path, monkeypatch):
    def run(leaks, **over):
        monkeypatch.setattr(scoring, "generate_many", scripted(leaks))
        monkeypatch.setattr(paper_cipo, "generate_many", scripted_counterfactuals)
        base = dict(
            method="cipo",
            cipo_variant="paper",
            model=str(tiny_model_dir),
            data=str(write(tmp_path / "forget.jsonl", FORGET)),
            retain=str(write(tmp_path / "retain.jsonl", RETAIN)),
            out=str(tmp_path / "run"),
            rounds=1,
            lr=1e-3,
            batch_size=2,
            round_epochs=1,
            token_budget=256,
            cache_dir=str(tmp_path / "cache"),
            round_strategies=("greedy", "sample_t1.0"),
            round_samples=2,
            leak_judge="spans",
            progress=False,
            checkpoint_every=0,
        )
        base.update(over)
        return cipo_paper(train_config(**base))

    return run


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_paper_variant_warms_up_then_trains_simpo_without_a_reference(run_paper, tmp_path, monkeypatch):
    from cipo_fast.train import reference

    def no_reference(*a, **k):
        raise AssertionError("the paper variant ran a reference pass")

    for name in ("initial_reference", "frozen_reference", "load_frozen"):
        monkeypatch.setattr(reference, name, no_reference)
    monkeypatch.setattr(reference.Reference, "ensure", no_reference)
    summary = run_paper(lambda key: key % 2 == 0, rounds=2)
    run = tmp_path / "run"
    cfs = {r["item_id"]: r for r in rows(run / "counterfactuals.jsonl")}
    assert cfs["a"]["source"] == "model" and cfs["a"]["answer"] == "Elara Halvecki was born in Dunmarrow."
    assert cfs["b"]["source"] == "swap" and "folk horror" not in cfs["b"]["answer"]
    assert summary["counterfactual_sources"] == {"model": 1, "swap": 1}
    assert not (tmp_path / "cache").exists() and not (run / "reference.json").exists()
    assert summary["reference_forward_tokens"] == 0
    metrics = [r for r in rows(run / "metrics.jsonl") if "loss" in r]
    phases = [r.get("phase") for r in metrics]
    assert phases[0] == "warmup" and phases[-1] is None and phases.index(None) == phases.count("warmup")
    round_rows = [r for r in metrics if r["round"] >= 1]
    assert round_rows and all("rewards/margins" in r and "loss/chosen_nll" in r for r in round_rows)
    pairs = rows(run / "rounds" / "round-01" / "pairs.jsonl")
    assert pairs and {p["rejected_leaks"] for p in pairs} == {True, False}  # leaking or not
    assert all(p["chosen"].endswith(cfs[p["id"]]["answer"]) for p in pairs)


def test_paper_variant_resume_matches_an_uninterrupted_run(run_paper, tmp_path):
    leaks = lambda key: key % 3 != 0  # noqa: E731
    run_paper(leaks, rounds=2, out=str(tmp_path / "full"))
    run_paper(leaks, rounds=1, out=str(tmp_path / "part"))
    run_paper(leaks, rounds=2, out=str(tmp_path / "part"), resume=True)
    for r in ("round-01", "round-02"):
        assert (tmp_path / "full" / "rounds" / r / "pairs.jsonl").read_text() == (
            tmp_path / "part" / "rounds" / r / "pairs.jsonl"
        ).read_text()
    wa = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def test_paper_variant_uses_simpo_and_paper_beta():
    cfg = train_config(method="cipo", cipo_variant="paper", model="m", data="d", out="o")
    assert cfg.loss == "simpo" and cfg.cipo.cipo_paper_beta == 2.0 and cfg.chosen_nll_weight == 1.0
    assert train_config(method="cipo", model="m", data="d", out="o").loss == "sigmoid"
