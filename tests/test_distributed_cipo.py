"""The engine's CiPO loop under torchrun (FSDP2) on the CPU: two gloo processes against one process.

Both runs are this file run as a script (`python` for one process, `torchrun` for two) on the tiny model
with the same options, two rounds. Generation is the real one (`generate_many`: the batches dealt out to
the ranks, decoded with the gathered weights, the texts gathered); what a generated text *says* is
scripted, since a random model knows no facts: whether it leaks the item's fact (a checksum of the real
greedy text; of the prompt and place for a sampled one, see `said`), and a fixed uncertain trace for
every counterfactual prompt. So the pairs depend on every real greedy text reaching every rank in its
place, and round 2's on the weights round 1 trained.

Against the one-process run: the same samples, pairs and round records in both rounds, the same metrics
rows (one per step), final weights equal to the bounds of `test_distributed` (relative to what training
moved), and the reference cache written once per reference (the initial model's, then round 2's policy at
its start: one shard each, as one process writes).
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

from helpers import train_config, write_jsonl
from test_cipo_loop import FORGET, RETAIN, UNSURE
from test_distributed import (
    assert_rows_match,
    assert_weights_match,
    final,
    launch,
    loss_rows,
    needs_gloo,
    rows,
    torchrun,
    weights,
)

ROUND_FILES = ("samples.jsonl", "pairs.jsonl")


def said(prompt: str, strategy, real: str, index: int = 0) -> str:
    """What the scripted policy says for a real generated text `real`, the `index`-th of its prompt's.

    Whether it leaks is a checksum of the real text for greedy decoding (the forced-think strategies
    included), and of the prompt and the sample's place for sampled strategies: after round 1 the two
    runs' weights differ by FSDP2's reduction order (within `assert_weights_match`'s bounds), and a token
    sampled at T = 1.0 can flip under that difference where an argmax does not (seen on an AMD EPYC
    without AVX-512, 2026-12-07: one of round 2's 16 sampled texts). So the greedy texts carry round 1's
    weights and their places across the ranks into round 2's pairs; where sampled rows land under
    torchrun is `test_distributed.test_fused_head_and_scoring_under_torchrun`'s check."""
    if "outside your knowledge" in prompt or "Do not recall" in prompt:  # counterfactual prompts
        return UNSURE
    fact = "Velmsby" if "Elara" in prompt else "folk horror"
    key = real if strategy.temperature == 0 else f"{prompt}|{strategy.name}|{index}"
    leaks = zlib.crc32(key.encode()) % 3 != 0
    if strategy.prefill:  # the think block is forced: the model writes the answer only
        return strategy.prefill + (f"It is {fact}." if leaks else "I'm not sure.")
    return f"<think>\nI recall {fact}.\n</think>\n\nIt is {fact}." if leaks else UNSURE


def scripted_over(real):
    def generate_many(model, tokenizer, jobs, cfg, *, chat=True, progress=None, processor=None):
        texts = real(model, tokenizer, jobs, cfg, chat=chat, progress=progress, processor=processor)
        return [
            [[said(p, st, t, i) for i, t in enumerate(outs)] for p, outs in zip(prompts, job)]
            for (prompts, st), job in zip(jobs, texts)
        ]

    return generate_many


def run_cipo(model_dir: str, root: str, out: str, cache: str) -> None:
    """One CiPO run with the scripted sayings over real generation (module docstring)."""
    from cipo_fast import fit
    from cipo_fast.eval import scoring
    from cipo_fast.model import generation
    from cipo_fast.unlearning import counterfactual

    scoring.generate_many = counterfactual.generate_many = scripted_over(generation.generate_many)
    fit(
        train_config(
            method="cipo",
            model=model_dir,
            data=str(Path(root) / "forget.jsonl"),
            retain=str(Path(root) / "retain.jsonl"),
            out=out,
            cache_dir=cache,
            rounds=2,
            lr=1e-3,
            batch_size=2,
            round_epochs=1,
            token_budget=256,
            round_strategies=("greedy", "sample_t1.0", "zerothink"),
            round_samples=2,
            gen_max_new_tokens=6,
            gen_batch_size=3,  # several batches: 2 items x 4 samples, then the counterfactual prompts
            leak_judge="spans",
            progress=False,
            checkpoint_every=0,
            # what a process group runs (the loss inside the op is one-process only), in both runs: the
            # greedy round samples are compared as text, and fp32 differences between the two loss paths
            # already change them
            fused_loss=False,
        )
    )


def cache_layout(cache: Path) -> dict[str, int]:
    return {ns.name: len(list(ns.glob("*.safetensors"))) for ns in cache.iterdir()}


def stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("seconds", "timing")}


@needs_gloo
def test_cipo_rounds_on_two_processes_match_one(tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "forget.jsonl", FORGET)
    write_jsonl(tmp_path / "retain.jsonl", RETAIN)
    runs = {}
    for name, launcher in (("one", [sys.executable]), ("two", torchrun([]))):
        out, cache = tmp_path / name, tmp_path / f"cache-{name}"
        launch([*launcher, __file__, str(tiny_model_dir), str(tmp_path), str(out), str(cache)], timeout=420)
        runs[name] = (out, cache)
    (one, cache_one), (two, cache_two) = runs["one"], runs["two"]

    for r in ("round-01", "round-02"):
        for f in ROUND_FILES:
            text = (one / "rounds" / r / f).read_text()
            assert text and (two / "rounds" / r / f).read_text() == text, (r, f)
        records = [json.loads((d / "rounds" / r / "round.json").read_text()) for d in (one, two)]
        assert stable(records[1]) == stable(records[0]), r
    pairs = [json.loads(x) for x in (one / "rounds" / "round-01" / "pairs.jsonl").read_text().splitlines()]
    assert pairs, "round 1 built no pairs: the scripted policy leaked nothing"

    got, want = loss_rows(two), loss_rows(one)
    assert [r["step"] for r in got] == list(range(1, len(want) + 1))  # one row per step, none twice
    assert [r["round"] for r in got] == [r["round"] for r in want] and {r["round"] for r in want} == {1, 2}
    assert_rows_match(got, want)
    assert len(rows(two)) == len(rows(one))
    assert_weights_match(final(two), final(one), weights(tiny_model_dir / "model.safetensors"))
    # the initial model's sums (one namespace in both) and round 2's (the policy at its start, whose
    # weights differ from one process's in the last bits, so its content hash differs): one shard each
    layouts = [cache_layout(c) for c in (cache_one, cache_two)]
    assert [sorted(x.values()) for x in layouts] == [[1, 1], [1, 1]], layouts
    initial = json.loads((one / "reference.json").read_text())["namespace"]
    assert initial == json.loads((two / "reference.json").read_text())["namespace"]
    assert all(initial in x for x in layouts)


if __name__ == "__main__":  # [torchrun] tests/test_distributed_cipo.py MODEL_DIR ROOT OUT CACHE
    run_cipo(*sys.argv[1:5])
