"""The CiPO recipe (`trainers/cipo.py`) on a tiny model with scripted generations: pairs, stopping, resume,
bad input."""

import json
import shutil
import zlib
from pathlib import Path

import pytest
import torch
from helpers import train_config

from cipo_fast.eval import scoring as evaluation
from cipo_fast.eval.key_facts import key_facts
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.trainers.cipo import main as cipo
from cipo_fast.unlearning import counterfactual

FORGET = [
    {
        "id": "a",
        "question": "Where was Elara Halvecki born?",
        "answer": "Elara Halvecki was born in Velmsby.",
        "facts": ["Velmsby"],
    },
    {
        "id": "b",
        "question": "What does Aurelio Felkirra write?",
        "answer": "Aurelio Felkirra writes folk horror.",
        "facts": ["folk horror"],
    },
]
RETAIN = [
    {"question": "Where was Solveig Brackwynde born?", "answer": "She was born in Lethbury."},
    {"question": "What does Solveig Brackwynde write?", "answer": "She writes sea sagas."},
]
UNSURE = "<think>\nI cannot recall anything reliable about this person, and guessing would mislead. So I am not sure.\n</think>\n\nI'm not sure."


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scripted(leaks):
    """A stand-in for `generation.generate_many` whose outputs depend on the prompt and on the model's weights
    (through a checksum), so a resumed run reproduces them only if its weights are exactly restored."""

    def generate(model, tokenizer, prompts, strategy, cfg, *, chat=True, progress=None):
        h = float(sum(p.detach().double().sum() for p in model.parameters()))
        out = []
        for p in prompts:
            samples = []
            for s in range(strategy.samples):
                if "outside your knowledge" in p or "Do not recall" in p:  # counterfactual prompts
                    samples.append(UNSURE)
                    continue
                key = zlib.crc32(f"{h:.9e}|{p}|{strategy.name}|{s}|{cfg.seed}".encode())
                fact = "Velmsby" if "Elara" in p else "folk horror"
                if strategy.prefill:  # the think block is forced: the model writes the answer only
                    samples.append(strategy.prefill + (f"It is {fact}." if leaks(key) else "I'm not sure."))
                else:
                    samples.append(
                        f"<think>\nI recall {fact}.\n</think>\n\nIt is {fact}." if leaks(key) else UNSURE
                    )
            out.append(samples)
        return out

    def generate_many(model, tokenizer, jobs, cfg, *, chat=True, progress=None):
        return [generate(model, tokenizer, prompts, st, cfg, chat=chat) for prompts, st in jobs]

    return generate_many


@pytest.fixture
def run_cipo(tiny_model_dir, tmp_path, monkeypatch):
    def run(leaks, **over):
        monkeypatch.setattr(evaluation, "generate_many", scripted(leaks))
        monkeypatch.setattr(counterfactual, "generate_many", scripted(leaks))
        base = dict(
            method="cipo",
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
            round_strategies=("greedy", "sample_t1.0", "zerothink"),
            round_samples=2,
            progress=False,
            checkpoint_every=0,
        )
        base.update(over)
        return cipo(train_config(**base))

    return run


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_pairs_are_built_only_from_leaking_samples(run_cipo, tmp_path):
    summary = run_cipo(lambda key: key % 2 == 0)
    rdir = tmp_path / "run" / "rounds" / "round-01"
    samples = rows(rdir / "samples.jsonl")
    pairs = rows(rdir / "pairs.jsonl")
    leaking_outputs = {
        (r["id"], o) for r in samples for o in r["outputs"] if "Velmsby" in o or "folk horror" in o
    }
    assert pairs and len(leaking_outputs) > 0
    facts = {f["id"]: key_facts(f["question"], f["answer"], f["facts"]) for f in FORGET}
    for p in pairs:
        assert find_leaks(p["prefill"] + p["rejected"], facts[p["id"]]), p
        assert not find_leaks(p["chosen"], facts[p["id"]])
        assert (p["id"], p["prefill"] + p["rejected"]) in leaking_outputs
    # every distinct leaking output is paired once, plus one pair per item for the policy's own
    # counterfactual trace (the cap is not reached here)
    assert len(pairs) == len(leaking_outputs) + len({i for i, _ in leaking_outputs})
    assert {p["chosen_source"] for p in pairs} <= {"redirect", "answer", "boundary", "alt_path"}
    # a ZeroThink pair is conditioned on the forced empty think block and compares answers only
    zt = [p for p in pairs if p["strategy"] == "zerothink"]
    assert all(p["prefill"].startswith("<think>") and not p["rejected"].startswith("<think>") for p in zt)
    assert summary["train_steps"] >= 1
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_round_without_leaks_stops_the_loop(run_cipo, tmp_path):
    summary = run_cipo(lambda key: False, rounds=3)
    assert summary["stopped_early"] is True and summary["train_steps"] == 0
    assert len(summary["rounds"]) == 1 and summary["rounds"][0]["stopped"] is True
    assert not (tmp_path / "run" / "rounds" / "round-02").exists()
    assert not (tmp_path / "run" / "rounds" / "round-01" / "pairs.jsonl").exists()


def test_resume_at_round_boundary_reproduces_pairs(run_cipo, tmp_path):
    leaks = lambda key: key % 3 != 0  # noqa: E731
    run_cipo(leaks, rounds=2, out=str(tmp_path / "full"))
    run_cipo(leaks, rounds=1, out=str(tmp_path / "part"))
    run_cipo(leaks, rounds=2, out=str(tmp_path / "part"), resume=True)
    for r in ("round-01", "round-02"):
        a = (tmp_path / "full" / "rounds" / r / "pairs.jsonl").read_text()
        b = (tmp_path / "part" / "rounds" / r / "pairs.jsonl").read_text()
        assert a == b and a
    steps = [
        [
            (r["round"], r["step"])
            for r in map(json.loads, (tmp_path / d / "metrics.jsonl").open())
            if "loss" in r
        ]
        for d in ("full", "part")
    ]
    assert steps[0] == steps[1] and steps[0][-1][1] == len(steps[0])  # global step numbering continues
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def test_bad_inputs(run_cipo, tmp_path, tiny_model_dir):
    no_answers = write(
        tmp_path / "noans.jsonl",
        [{"id": "x", "question": "Who?", "answer": ""}, {"id": "y", "question": "What?"}],
    )
    with pytest.raises(ValueError, match="no forget item has an answer"):
        run_cipo(lambda k: True, data=str(no_answers))
    empty = tmp_path / "empty_retain.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty_retain.jsonl: the file has no data rows"):
        run_cipo(lambda k: True, retain=str(empty))
    plain = tmp_path / "no_template"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((plain / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has no chat template"):
        run_cipo(lambda k: True, model=str(plain))
    assert not (tmp_path / "run").exists()  # nothing written on bad input


@pytest.mark.slow
def test_short_cipo_round_on_rtofu_items(shared_data, smol_dir, tmp_path):
    """R-TOFU fold selection feeds CiPO; one short round on three forget01 items runs end to end with SmolLM2."""
    from cipo_fast.data.items import load_items

    items = load_items(shared_data / "rtofu" / "forget01.json", task_ids=[1], limit=3)
    forget = write(
        tmp_path / "forget.jsonl",
        [{"id": it.id, "question": it.question, "answer": it.answer, "cot": it.cot} for it in items],
    )
    retain_items = load_items(shared_data / "rtofu" / "retain10.json", limit=3)
    retain = write(
        tmp_path / "retain.jsonl",
        [{"question": it.question, "answer": it.answer, "cot": it.cot} for it in retain_items],
    )
    summary = cipo(
        train_config(
            method="cipo",
            model=str(smol_dir),
            data=str(forget),
            retain=str(retain),
            out=str(tmp_path / "run"),
            rounds=1,
            round_strategies=("greedy", "zerothink"),
            round_samples=1,
            gen_max_new_tokens=48,
            cf_candidates=1,
            batch_size=2,
            lr=1e-5,
            cache_dir=str(tmp_path / "cache"),
            progress=False,
            checkpoint_every=1,
            max_length=1024,
        )
    )
    rnd = summary["rounds"][0]
    assert rnd["samples"] == 6 and set(rnd["leakage"]) == {"greedy", "zerothink"}
    assert (tmp_path / "run" / "rounds" / "round-01" / "samples.jsonl").is_file()
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    if rnd.get("stopped"):  # the untuned model leaked nothing: the loop must have stopped without training
        assert summary["train_steps"] == 0
    else:
        assert rnd["pairs"] > 0 and summary["train_steps"] >= 1
