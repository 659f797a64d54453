"""An evaluation's generations on this CPU: what dropping ended rows and attending only filled positions save.

Question: how much of an evaluation's (or a CiPO round's) decoding is spent on rows that have already
said EOS, and on cache positions not yet written? A batch of `cipo-fast eval` mixes strategies whose
outputs differ ~10x in length (ZeroThink / LessThink answers of ~50 tokens beside thinking traces of
~400), every step of a CPU decode costs in proportion to its rows, and transformers' `StaticCache` has
each step attend over the whole allocation (prompt + `--new` positions) with the unwritten ones masked.

Method: the forget items' prompts (the demo's synthetic set, or `--forget FILE` with `--task-ids`) under
the evaluation's strategies (`--strategies`, `--samples`), exactly as `cipo-fast eval` generates them
(`scoring.prompts_for`, `generate_many`, the demo's system prompt), at `--new` new tokens, under each arm
of `ARMS` (`GenConfig.compact`, `GenConfig.filled_only`; `--compact-at` adds arms that drop ended rows at
other shares of the batch, `GenConfig.compact_at`), alternated `--repeats` times; the median wall
time of each, the decode steps, the row-steps (rows summed over decode steps) and the keys read (rows ×
key positions attended, summed over steps), counted by a hook on the model, and how many texts differ
from the first arm's (in exact arithmetic none would: the sampled rows draw the same uniforms either way;
in fp32 a batch of other rows or a sum over other lengths may round a near-tie the other way).

    python bench/eval_generation.py --model DIR     # a target that ends its traces (e.g. the demo's)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, REPO, machine, resolve_model, save_and_publish

sys.path.insert(0, str(REPO))

ARMS = (  # (name, GenConfig options): the decode before 2026-12-04, then each change added
    ("whole cache, ended rows kept", {"compact": False, "filled_only": False}),
    ("whole cache, ended rows dropped", {"compact": True, "filled_only": False}),
    ("filled positions, ended rows dropped", {"compact": True, "filled_only": True}),
)


def arms(compact_at: list[float]) -> tuple:
    """`ARMS`, then the last one dropping ended rows at each share of `--compact-at` (the default drops
    them once a quarter of the rows still decoding have ended; 0: at every row that ends)."""
    extra = tuple(
        (
            f"filled positions, rows dropped at {x:g} ended",
            {"compact": True, "filled_only": True, "compact_at": x},
        )
        for x in compact_at
    )
    return ARMS + extra


def forget_items(a: argparse.Namespace, work: Path):
    from cipo_fast import synthetic
    from cipo_fast.data.items import load_items

    path = a.forget or synthetic.build(work, seed=0)["forget"]
    return load_items(path, task_ids=a.task_ids, limit=a.limit)


def run(a: argparse.Namespace) -> dict:
    import torch

    from cipo_fast.data.tokenize import TextFormat, Tokenizer
    from cipo_fast.demo import SYSTEM_PROMPT
    from cipo_fast.eval.scoring import prompts_for
    from cipo_fast.model.generation import GenConfig, generate_many, make_strategies
    from cipo_fast.model.loading import ModelOptions, load_model

    work = Path(tempfile.mkdtemp(prefix="cipo-evalgen-"))
    model, hf_tok = load_model(str(resolve_model(a.model, work)), ModelOptions())
    tok = Tokenizer(hf_tok, TextFormat(system_prompt=SYSTEM_PROMPT))
    items = forget_items(a, work)
    prompts = prompts_for(items, tok)
    jobs = [(prompts, st) for st in make_strategies(a.strategies, a.samples, tok.reasoning)]
    counts = {"steps": 0, "row_steps": 0, "keys_read": 0}
    arm = {}

    def count(module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] == 1:  # a decode step (the prefill has the prompts' width)
            counts["steps"] += 1
            counts["row_steps"] += ids.shape[0]
            filled = kwargs["attention_mask"].shape[1]  # the positions filled, this step's included
            allocated = kwargs["past_key_values"].layers[0].max_cache_len
            counts["keys_read"] += ids.shape[0] * (filled if arm["filled_only"] else allocated)

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    tried = arms(a.compact_at)
    results = {name: [] for name, _ in tried}
    texts = {}
    for rep in range(a.repeats):
        for name, options in tried if rep % 2 == 0 else tried[::-1]:
            counts.update(steps=0, row_steps=0, keys_read=0)
            arm.update(options)
            cfg = GenConfig(a.new, a.batch, seed=0, **options)
            t = time.perf_counter()
            texts[name] = generate_many(model, tok.tok, jobs, cfg, chat=tok.chat)
            results[name].append({"s": time.perf_counter() - t, **counts})
    hook.remove()
    first = tried[0][0]
    flat = {name: [o for job in texts[name] for outs in job for o in outs] for name, _ in tried}
    new_tokens = [len(hf_tok(o, add_special_tokens=False)["input_ids"]) for o in flat[first]]
    rows = []
    for name, options in tried:
        runs = results[name]
        rows.append(
            {
                "system": name,
                **options,
                "median_s": statistics.median(r["s"] for r in runs),
                "times_s": [r["s"] for r in runs],
                "decode_steps": runs[-1]["steps"],
                "row_steps": runs[-1]["row_steps"],
                "keys_read": runs[-1]["keys_read"],
                "texts_unlike_first": sum(x != y for x, y in zip(flat[name], flat[first])),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "model": a.model,
        "forget": a.forget or "the demo's synthetic forget set",
        "items": len(items),
        "strategies": a.strategies,
        "samples": a.samples,
        "rows": len(new_tokens),
        "batch": a.batch,
        "new_tokens": a.new,
        "threads": torch.get_num_threads(),
        "generated_tokens": {"sum": sum(new_tokens), "median": statistics.median(new_tokens)},
        "same_texts": all(r["texts_unlike_first"] == 0 for r in rows),
        "systems": rows,
    }


def table(r: dict, facts: dict) -> str:
    base = r["systems"][0]
    lines = [
        f"The evaluation's generations for {r['items']} forget items ({r['forget']}), strategies "
        f"{', '.join(r['strategies'])} × {r['samples']} sample(s): {r['rows']} rows in batches of up to "
        f"{r['batch']}, up to {r['new_tokens']} new tokens, model `{Path(r['model']).name}`; {facts['cores']} "
        f"cores ({facts['cpu']}), torch {facts['torch']}. {r['generated_tokens']['sum']} tokens generated "
        f"(median {r['generated_tokens']['median']:.0f} per row). Texts unlike the first row's are fp32 "
        "rounding (a batch of other rows, keys summed over other lengths), not another algorithm: the "
        "float64 tests give the same tokens.",
        "",
        "| decoding | s per call (median) | decode steps | row-steps | keys read (row × position) | texts unlike the first | time ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["systems"]:
        lines.append(
            f"| {row['system']} | {row['median_s']:.1f} | {row['decode_steps']} | {row['row_steps']} | "
            f"{row['keys_read']:.3g} | {row['texts_unlike_first']} / {r['rows']} | "
            f"{row['median_s'] / base['median_s']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    from cipo_fast.model.generation import STRATEGY_NAMES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | an HF model directory")
    ap.add_argument("--forget", default=None, help="forget items (default: the demo's synthetic set)")
    ap.add_argument("--task-ids", type=int, nargs="+", default=None, help="R-TOFU folds of --forget")
    ap.add_argument("--limit", type=int, default=None, help="first N items only")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES), choices=list(STRATEGY_NAMES))
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--new", type=int, default=384, help="max new tokens")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--compact-at",
        type=float,
        nargs="*",
        default=[],
        help="also these shares of ended rows at which rows leave the batch (GenConfig.compact_at; 0 = each)",
    )
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    ap.add_argument("--marker", default="bench-eval-generation", help="README marker of the table")
    a = ap.parse_args(argv)
    facts = machine()
    r = run(a)
    save_and_publish(a.out, "eval_generation.json", facts, r, a.marker, table(r, facts), a.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
