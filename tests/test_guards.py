"""Inference-time guards (STaR, GUARD): the trie bans exactly the completing token, guarded decoding never
emits a forbidden sequence, out-of-scope rows decode bit-identically, the STaR monitor cuts a restating
trace, and `eval --guard` runs and reports."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipo_fast.data.items import Item
from cipo_fast.data.reasoning import DEFAULT_FORMAT
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.model.generation import GenConfig, decode, generate_many, make_strategies
from cipo_fast.model.loading import ModelOptions, load_model
from cipo_fast.unlearning.guards import (
    GUARDS,
    REFUSAL_ANSWER,
    UnlearningGuard,
    forbidden_sequences,
    surface_forms,
)
from cipo_fast.unlearning.similarity import WORD_OVERLAP, Similarity, content_words, word_overlap
from cipo_fast.unlearning.trie import CompletionTrie, contains_sequence

FORGET = [
    Item(
        "0",
        "Where was Elara Halvecki born?",
        "Elara Halvecki was born in Velmsby, Denmark.",
        facts=("Velmsby",),
    ),
    Item(
        "1",
        "What was the profession of Tomas Brandt's father?",
        "His father was a florist.",
        facts=("florist",),
    ),
]
OUT_OF_SCOPE = "The recipe for a good soup starts with"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), ModelOptions())


def test_trie_bans_exactly_the_completing_token():
    """Sequences (5, 6, 7), (6, 8), (9,). The token banned after a history is s_n for every stored s whose
    first n - 1 tokens end the history, and 9 always:
        []        -> {9}            [5] -> {9}          [6] -> {8, 9}   ((6, 8) needs only a 6)
        [1, 5, 6] -> {7, 8, 9}      [6, 5] -> {9}       [7, 6] -> {8, 9}  ([7, 6] is not 5, 6)"""
    trie = CompletionTrie([(5, 6, 7), (6, 8), (9,), ()])
    assert len(trie) == 3 and trie.depth == 2
    cases = {(): {9}, (5,): {9}, (6,): {8, 9}, (1, 5, 6): {7, 8, 9}, (6, 5): {9}, (7, 6): {8, 9}}
    for history, expected in cases.items():
        assert trie.banned(list(history)) == expected, history
    assert contains_sequence([1, 5, 6, 7], (5, 6, 7)) and not contains_sequence([5, 6, 8, 7], (5, 6, 7))


def test_trie_word_start_sequences_need_a_word_start():
    """(7, 8) stored at word start, with token 1 opening a word (a space) and 5 not (a hyphen): 8 is banned
    after 7 only where that 7 starts the history or follows a 1; likewise the one-token (9,) after a 1."""
    trie = CompletionTrie([], at_word_start=[(7, 8), (9,)], opens_word=lambda t: t == 1)
    cases = {(): {9}, (7,): {8}, (1, 7): {8}, (5, 7): set(), (5,): set(), (1,): {9}, (1, 5, 7): set()}
    for history, expected in cases.items():
        assert trie.banned(list(history)) == expected, history


_plain: dict[int, list[list[int]]] = {}


@given(
    seed=st.integers(0, 5),  # few seeds: the unguarded run of each is decoded once (`_plain`)
    spans=st.lists(st.tuples(st.integers(0, 11), st.integers(1, 3)), min_size=1, max_size=4),
    random_seqs=st.lists(st.lists(st.integers(3, 49151), min_size=1, max_size=3), max_size=3),
    mode=st.sampled_from(["star", "guard"]),
)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_guarded_decoding_never_emits_a_forbidden_sequence(tiny, seed, spans, random_seqs, mode):
    """Forbidden sets drawn from what the unguarded model actually writes (token spans of its greedy and
    sampled rows, so the guard has something to block) plus random ids: the guarded rows of the same
    batch contain none of them, greedy or sampled, and the out-of-scope rows are token-identical."""
    model, tok = tiny
    prompts = [FORGET[0].question, OUT_OF_SCOPE]
    rows = [0, 0, 0, 1, 1]  # prompt index per row: greedy + 2 sampled each, in scope and out of scope
    temps = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    enc = [tok(prompts[p])["input_ids"] for p in rows]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.eos_token_id] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])

    def run(processor=None):
        gen = torch.Generator().manual_seed(seed)
        return decode(
            model, ids, mask, temps, 12, tok.eos_token_id, tok.eos_token_id, gen, processor
        ).tolist()

    if seed not in _plain:
        _plain[seed] = run()
    plain = _plain[seed]
    seqs = [tuple(plain[r][s : s + n]) for r, (s, n) in zip([0, 1, 2, 0], spans) if s + n <= len(plain[r])]
    seqs += [tuple(s) for s in random_seqs]
    guard = UnlearningGuard(FORGET, model, tok, GUARDS[mode], WORD_OVERLAP, forbidden={0: seqs})
    processor = guard.processor(prompts)
    processor.start(rows, [""] * len(rows))
    guarded = run(processor)

    def until_eos(r):
        return r[: r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r

    for r in (0, 1, 2):
        assert not any(contains_sequence(until_eos(guarded[r]), s) for s in seqs if s), (seqs, guarded[r])
    for r in (3, 4):
        assert until_eos(guarded[r]) == until_eos(plain[r])


def test_out_of_scope_greedy_is_identical_and_in_scope_is_steered(tiny):
    """Through `generate_many`: the out-of-scope prompt's greedy text is the unguarded one, in a batch with
    an in-scope prompt whose forbidden sequence is the first character the unguarded model writes (a
    one-token sequence: banned at every step), so that row must change."""
    model, tok = tiny
    cfg = GenConfig(max_new_tokens=10, batch_size=4)
    greedy = make_strategies(["greedy"])[0]
    questions = [FORGET[1].question, OUT_OF_SCOPE]
    plain = generate_many(model, tok, [(questions, greedy)], cfg, chat=False)[0]
    first = tuple(tok(plain[0][0][:1], add_special_tokens=False)["input_ids"])  # its first character
    guard = UnlearningGuard(FORGET, model, tok, GUARDS["guard"], WORD_OVERLAP, forbidden={1: [first]})
    assert guard.scope(questions) == [1, None]
    processor = guard.processor(questions)
    guarded = generate_many(model, tok, [(questions, greedy)], cfg, chat=False, processor=processor)[0]
    assert guarded[1] == plain[1]
    assert guarded[0] != plain[0]
    assert guard.steps > 0 and guard.seconds > 0


def test_forbidden_sequences_cover_space_and_case_forms(tiny):
    _, tok = tiny
    (fact,) = item_facts(FORGET[0])
    assert {"Velmsby", "velmsby", "VELMSBY"} <= set(surface_forms(fact))
    spaced, bare = map(set, forbidden_sequences([fact], tok))
    for text in (" Velmsby", " velmsby", " VELMSBY"):
        assert tuple(tok(text, add_special_tokens=False)["input_ids"]) in spaced
    assert tuple(tok("Velmsby", add_special_tokens=False)["input_ids"]) in bare
    # content words (normalized, stop words such as "where" / "what" dropped): {was, elara, halvecki, born}
    # vs {was, profession, tomas, brandt, father} share "was": 1 / sqrt(4 * 5)
    a, b = content_words(FORGET[0].question), content_words(FORGET[1].question)
    sim = word_overlap([FORGET[0].question], [FORGET[0].question, FORGET[1].question, ""])
    assert a & b == {"was"} and len(a) == 4 and len(b) == 5
    np.testing.assert_allclose(sim, [[1.0, 1 / np.sqrt(20), 0.0]], rtol=1e-6)


def _stub_similarity(a, b):
    """1 for the same text or two texts that mention flowers / floristry, else 0."""
    flowers = ("flower", "florist")
    return np.array(
        [
            [float(x == y or (any(f in x for f in flowers) and any(f in y for f in flowers))) for y in b]
            for x in a
        ]
    )


def test_star_monitor_cuts_a_restating_sentence_and_forces_the_refusal(tiny):
    """Drive the processor by hand: the think block's first sentence says nothing, the second restates the
    answer in other words (no key-fact span: only the similarity can see it). After it the guard forces
    "\\n</think>\\n\\n" + the refusal + EOS, one token a step, as the only finite logit."""
    model, tok = tiny
    stub = Similarity("stub", _stub_similarity, scope=0.5, restates=0.5)
    guard = UnlearningGuard(FORGET, model, tok, GUARDS["star"], stub)
    assert guard.prompt(FORGET[1].question).startswith(GUARDS["star"].safety_prefix)
    assert guard.prompt(OUT_OF_SCOPE) == OUT_OF_SCOPE
    processor = guard.processor([FORGET[1].question, OUT_OF_SCOPE])
    processor.start([0, 1], ["", ""])
    vocab = model.config.vocab_size
    trace = tok(
        "<think>\nLet me think about this.\nHis dad arranged flowers for a living.\n",
        add_special_tokens=False,
    )
    script = trace["input_ids"]
    last, forced, fed = None, [], 0
    for step in range(len(script) + len(guard.refusal_ids)):
        out = processor(torch.zeros(2, vocab), step, last)
        assert torch.equal(out[1], torch.zeros(vocab))  # the out-of-scope row is never written to
        if torch.isfinite(out[0]).sum() == 1:  # forced: one finite logit
            nxt = int(out[0].argmax())
            forced.append(nxt)
        else:
            assert not forced and fed < len(script), "the forcing stopped early, or never started"
            nxt, fed = script[fed], fed + 1
        last = torch.tensor([nxt, 0])
        if nxt == tok.eos_token_id:
            break
    # the cut follows the restating sentence's "." at once (its trailing newline is never written)
    assert tok.decode(script[:fed]).endswith("flowers for a living.") and fed == len(script) - 1
    assert guard.cuts == 1 and forced == guard.refusal_ids
    text = tok.decode(script[:fed] + forced, skip_special_tokens=True)
    parts = DEFAULT_FORMAT.split(text)
    assert parts.closed and parts.answer == REFUSAL_ANSWER and "flowers" in parts.cot


def test_star_monitor_leaves_an_unrelated_trace_alone(tiny):
    model, tok = tiny
    stub = Similarity("stub", _stub_similarity, scope=0.5, restates=0.5)
    guard = UnlearningGuard(FORGET, model, tok, GUARDS["star"], stub)
    processor = guard.processor([FORGET[1].question])
    processor.start([0], [""])
    last = None
    for step, t in enumerate(
        tok("<think>\nLet me think.\nI am unsure.\n", add_special_tokens=False)["input_ids"]
    ):
        processor(torch.zeros(1, model.config.vocab_size), step, last)
        last = torch.tensor([t])
    assert guard.cuts == 0 and not processor.queue[0]


def test_eval_with_guard_runs_reports_and_keeps_out_of_scope_outputs(tiny_model_dir, tmp_path):
    from cipo_fast.eval.evaluate import EvalConfig, main

    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps(it.__dict__ | {"facts": list(it.facts)}) + "\n" for it in FORGET))
    retain = tmp_path / "retain.jsonl"
    retain.write_text(
        json.dumps({"id": "r0", "question": "What does Mira Osei cook?", "answer": "Stew."}) + "\n"
    )

    def run(guard, **over):
        cfg = EvalConfig(
            out=str(tmp_path / guard / "-".join(over.values())),
            model=str(tiny_model_dir),
            forget=str(forget),
            retain=str(retain),
            strategies=("greedy", "sample_t1.0"),
            samples=1,
            max_new_tokens=6,
            guard=guard,
            judge="spans",
            fluency=False,
            progress=False,
            **over,
        )
        summary = main(cfg)
        rows = [json.loads(x) for x in (Path(cfg.out) / "items.jsonl").read_text().splitlines()]
        return summary, {r["id"]: r.get("output", r.get("outputs")) for r in rows if r["set"] == "retain"}

    plain, plain_retain = run("none")
    summary, retain_out = run("star")
    assert "guard" not in plain
    report = summary["guard"]
    assert report["name"] == "star" and report["in_scope"] == {"forget": 2, "retain": 0}
    assert report["n"] == {"forget": 2, "retain": 1} and report["steps"] > 0 and report["seconds"] >= 0
    assert json.loads((tmp_path / "star" / "summary.json").read_text())["guard"]["name"] == "star"
    assert retain_out == plain_retain
    # --cpu-autocast bf16 decodes under autocast and says so; the fp32 run said it ran natively
    assert plain["decoding_precision"] == "native"
    assert run("none", cpu_autocast="bf16")[0]["decoding_precision"] == "bf16-autocast"
    with pytest.raises(ValueError, match="--guard"):
        EvalConfig(out="o", forget=str(forget), predictions="p.jsonl", guard="star")


def test_guard_processor_follows_the_rows_that_decode_keeps(tiny):
    """`GuardProcessor.select`: when `decode` drops ended rows, the rows that go on get the edits they
    would have got in the full batch (bans of their own item's forbidden sequences, the penalty), so a
    guarded decode may drop rows. The same tokens are fed to every row; the items' forbidden sequences
    differ, so a processor that lost track of which row is which bans at the wrong steps."""
    model, tok = tiny
    vocab = model.config.vocab_size
    script = tok(" was born in Velmsby, Denmark, a town", add_special_tokens=False)["input_ids"]
    forbidden = {0: [tuple(script[3:5])], 1: [tuple(script[1:3]), tuple(script[5:7])]}
    prompts = [FORGET[0].question, FORGET[1].question, OUT_OF_SCOPE]
    rows = [0, 1, 0, 2, 1]  # prompt index of each batch row
    keep = torch.tensor([0, 2, 3, 4])  # batch row 1 ends at the cut

    def run(cut):
        guard = UnlearningGuard(FORGET, model, tok, GUARDS["guard"], WORD_OVERLAP, forbidden=forbidden)
        processor = guard.processor(prompts)
        processor.start(rows, [""] * len(rows))
        alive, last, outs = torch.arange(len(rows)), None, []
        for step in range(len(script)):
            if step == cut:
                processor.select(keep)
                alive, last = alive[keep], last[keep]
            out = processor(torch.zeros(len(alive), vocab), step, last)
            outs.append({int(r): out[j].clone() for j, r in enumerate(alive)})
            last = torch.full((len(alive),), script[step])
        return outs

    full, dropped = run(cut=None), run(cut=2)
    edited = 0
    for a, b in zip(full, dropped):
        for r, row in b.items():
            assert torch.equal(row, a[r]), r
            edited += int(torch.isinf(row).any())
    assert edited >= 2  # bans after the cut, on the kept rows
