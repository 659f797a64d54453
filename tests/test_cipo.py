"""The CiPO loop on a tiny model with scripted generations: pairs, stopping, resume, bad input."""

import json
import shutil
import zlib
from pathlib import Path

import pytest
import torch

from cipo_fast import counterfactual, evaluation, leakage
from cipo_fast.config import TrainConfig
from cipo_fast.trainers.cipo import main as cipo

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
        return cipo(TrainConfig(**base))

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
    facts = {f["id"]: leakage.key_facts(f["question"], f["answer"], f["facts"]) for f in FORGET}
    for p in pairs:
        assert leakage.find_leaks(p["prefill"] + p["rejected"], facts[p["id"]]), p
        assert not leakage.find_leaks(p["chosen"], facts[p["id"]])
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


def test_counterfactual_filter():
    facts = leakage.key_facts(FORGET[0]["question"], FORGET[0]["answer"], FORGET[0]["facts"])
    cfg = counterfactual.CounterfactualConfig()
    ok = "I cannot recall where this author was born, and guessing would mislead. So I am not sure."
    assert counterfactual.passes_filter(ok, "I'm not sure.", True, facts, cfg)
    assert not counterfactual.passes_filter(
        ok + " Maybe Velmsby.", "I'm not sure.", True, facts, cfg
    )  # leaks
    assert not counterfactual.passes_filter(ok, "She was born in Oslo.", True, facts, cfg)  # other conclusion
    assert not counterfactual.passes_filter(ok, "I'm not sure.", False, facts, cfg)  # unclosed think
    assert not counterfactual.passes_filter("Hmm. I wonder. It is Oslo.", "I'm not sure.", True, facts, cfg)
    alt = counterfactual.CounterfactualConfig(target="alternative")
    assert counterfactual.passes_filter(
        "Thinking it over, the answer must be Oslo.", "Oslo.", True, facts, alt, alternative="Oslo"
    )


@pytest.mark.slow
def test_short_cipo_round_on_rtofu_items(shared_data, smol_dir, tmp_path):
    """R-TOFU fold selection feeds CiPO; one short round on three forget01 items runs end to end with SmolLM2."""
    from cipo_fast.datasets import load_items

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
        TrainConfig(
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


def test_retain_mirror_pairs_by_kind(tiny_model_dir):
    """Retain mirrors: the gold trace over its redirect (kind ""), and for each prefill the gold answer over
    the template answer after that prefill; `mirror_for` draws kinds only from the step's forget pairs."""
    import random

    from transformers import AutoTokenizer

    from cipo_fast.data import TextFormat, Tokenizer
    from cipo_fast.datasets import Item
    from cipo_fast.trainers.cipo import AFTER_COT, mirror_for, retain_mirror_pairs

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok = Tokenizer(hf, TextFormat(prompt_format="raw"))
    items = [
        Item(
            "r0",
            "Where was Solveig born?",
            "Solveig was born in Lethbury.",
            cot="I remember that Solveig was born in Lethbury.",
            facts=("Lethbury",),
        ),
        Item("r1", "What is 2 + 3?", "2 + 3 = 5 #### 5", cot="Add them."),  # arithmetic: skipped
    ]
    zt = "<think>\n\n</think>\n\n"
    ids = lambda text: hf(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    template = "<think>\n{cot}\n</think>\n\n{answer}"
    pairs = retain_mirror_pairs(items, tok, counterfactual.CounterfactualConfig(), template, "r.jsonl", (zt,))
    assert len(pairs[zt]) == len(pairs[AFTER_COT]) == 1
    assert len(pairs[""]) == len(counterfactual.REDIRECTS)  # one trace mirror per turn phrase
    trace = pairs[""][0]
    assert hf.decode(trace.chosen.completion_ids).startswith(
        "<think>\nI remember that Solveig was born in Lethbury."
    )
    turns = [hf.decode(p.rejected.completion_ids) for p in pairs[""]]
    for turn, text in zip(counterfactual.REDIRECTS, turns):
        assert turn.split(",")[0] in text and "Lethbury" not in text  # the redirect drops the fact
    assert {p.chosen for p in pairs[""]} == {trace.chosen}
    answer = pairs[zt][0]
    prompt = hf(items[0].question)["input_ids"]
    assert answer.chosen.prompt_ids == (*prompt, *ids(zt)) == answer.rejected.prompt_ids
    assert answer.chosen.completion_ids == (*ids(items[0].answer), hf.eos_token_id)
    assert answer.rejected.completion_ids == (*ids(counterfactual.TEMPLATE_ANSWER), hf.eos_token_id)
    after = pairs[AFTER_COT][0]
    think = "<think>\nI remember that Solveig was born in Lethbury.\n</think>\n\n"
    assert (
        after.chosen.prompt_ids == (*prompt, *ids(think))
        and after.chosen.completion_ids == answer.chosen.completion_ids
    )
    rng = random.Random(0)
    fp = (trace.rejected, trace.chosen)  # stands in for a forget pair
    step = mirror_for([(zt, fp), (zt, fp)], pairs, 6, rng)  # 6 of the step's kinds, 6 answer-only ones
    assert step[:6] == [(answer.chosen, answer.rejected)] * 6
    assert {c for c, _ in step[6:]} <= {answer.chosen, after.chosen} and len(step) == 12
    mixed = mirror_for([("", fp), (zt, fp), ("unknown prefill", fp)], pairs, 40, rng)
    assert {c for c, _ in mixed[:40]} == {trace.chosen, answer.chosen}


def test_mirrors_match_the_forget_pairs_phrasing():
    """A step's mirror of a forget pair is the retain pair of its kind most like it: the retain gold text
    like the forget rejected text (same question family and phrasing) and the retain refusal like the
    forget chosen text (same turn phrase); ties spread at random."""
    import random

    from cipo_fast.data import Pair
    from cipo_fast.packing import Sequence
    from cipo_fast.trainers.cipo import mirror_for

    def seq(*ids):
        return Sequence((1,), ids)

    award_a = seq(10, 11, 12, 13, 50, 14, 15, 60, 61)  # "The question asks which award <name> ... <facts>"
    award_b = seq(10, 11, 12, 13, 51, 14, 15, 62, 63)
    parents = seq(10, 11, 20, 21, 52, 22, 23, 64, 65)
    golds = [award_a, parents, award_b]
    turn_but, turn_however = (30, 31, 32, 33), (40, 41, 42, 43)
    pool = [
        Pair(g, seq(*g.completion_ids[:4], *turn), "r") for g in golds for turn in (turn_but, turn_however)
    ]
    f_award = seq(10, 11, 12, 13, 53, 14, 15, 66, 67)
    f_parents = seq(10, 11, 20, 21, 53, 22, 23, 68, 69)
    f_parents_however = (seq(10, 11, 20, 21, *turn_however), f_parents)
    rng = random.Random(0)
    step = mirror_for([("", f_parents_however)], {"": pool}, 20, rng)
    assert step == [(parents, pool[3].rejected)] * 20  # same family, same turn phrase
    f_award_but = (seq(10, 11, 12, 13, *turn_but), f_award)
    step = mirror_for([("", f_award_but)], {"": pool}, 60, rng)
    assert {id(c) for c, _ in step} == {id(award_a), id(award_b)}  # the tie between two award items
    assert {r.completion_ids[4:] for _, r in step} == {turn_but}


def test_own_trace_mirrors(tiny_model_dir):
    """A forget pair whose chosen is a whole counterfactual trace (not a redirect of the rejected one) gets a
    mirror on a retain item: that item's gold trace over the same counterfactual trace under the retain
    question. Such mirrors follow `OWN` forget pairs only and are never drawn as answer-only mirrors."""
    import random

    from transformers import AutoTokenizer

    from cipo_fast.data import TextFormat, Tokenizer
    from cipo_fast.packing import Sequence
    from cipo_fast.trainers.cipo import OWN, mirror_for, own_mirrors, pair_kind

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok = Tokenizer(hf, TextFormat(prompt_format="raw"))
    award = "The question asks which award {} received. I remember that {} won the {} Medal."
    family = "I need to recall the family of {}. I know that the father of {} was a {}."
    golds = [
        tok.sequence([5, 6, 7], award.format("Ann Vell", "Ann Vell", "Kestrel"), "g0"),
        tok.sequence([15, 16], family.format("Bo Ried", "Bo Ried", "weaver"), "g1"),
    ]
    own_text = "<think>\nI need to recall that I am not sure.\n</think>\n\nI'm not sure about that."
    rows = [
        {"prefill": "", "chosen_source": "redirect", "chosen": "redirected", "rejected": "r"},
        {"prefill": "<think>\n\n</think>\n\n", "chosen_source": "answer", "chosen": "?", "rejected": "r"},
        {"prefill": "", "chosen_source": "boundary", "chosen": own_text},
        {"prefill": "", "chosen_source": "alt_path", "chosen": own_text + " Really."},
        {"prefill": "", "chosen_source": "template", "chosen": own_text},
    ]
    rows[2]["rejected"] = family.format("Cy Oth", "Cy Oth", "potter")
    rows[3]["rejected"] = award.format("Cy Oth", "Cy Oth", "Ashgrove")
    rows[4]["rejected"] = family.format("Di Lem", "Di Lem", "baker")
    assert [pair_kind(r) for r in rows] == ["", "<think>\n\n</think>\n\n", OWN, OWN, OWN]
    mirrors = own_mirrors(rows, golds, tok, "p.jsonl")
    assert [m.chosen for m in mirrors] == [golds[1], golds[0], golds[1]]  # the retain trace most alike
    own_ids = (*hf(own_text, add_special_tokens=False)["input_ids"], hf.eos_token_id)
    assert mirrors[0].rejected == Sequence(golds[1].prompt_ids, own_ids)  # same trace, retain question
    assert mirrors[1].rejected.prompt_ids == golds[0].prompt_ids
    assert own_mirrors(rows, [], tok, "p.jsonl") == []

    answer_only = (Sequence((1,), (2,)), Sequence((1,), (3,)))
    pairs = {"": [], "zt": [type(mirrors[0])(*answer_only, "a")], OWN: mirrors}
    rng = random.Random(0)
    step = mirror_for([(OWN, (golds[0], golds[1]))], pairs, 5, rng)
    assert all(c in golds for c, _ in step[:5])  # the step's kinds: own-trace mirrors
    assert step[5:] == [answer_only] * 5  # answer-only draws never take an own-trace mirror


def test_out_of_range_weights_and_demo_settings_are_refused():
    """A negative retain weight would turn the retain term into unlearning of the retain set; the demo
    refuses it (and other out-of-range settings) before its SFT stage, the CLI with exit code 2."""
    from cipo_fast.cli import main as cli
    from cipo_fast.config import TrainConfig
    from cipo_fast.demo import DemoConfig

    with pytest.raises(ValueError, match="--retain-weight: expected >= 0, got -1"):
        TrainConfig(method="dpo", data="d.jsonl", model="m", out="o", retain_weight=-1.0)
    for field, value in (("retain_weight", -1.0), ("sft_epochs", 0.0), ("rounds", 0)):
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')}: got {value}"):
            DemoConfig(**{field: value})
    assert cli(["demo", "--retain-weight", "-0.5", "--out", "never-written"]) == 2
