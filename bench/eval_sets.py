"""An evaluation's generations in one call for all its sets, or one call per set.

Question: `cipo-fast eval` generates the forget set under every strategy and the greedy answers of each
accuracy set (retain, real authors, world facts, GSM8K), one `generate_many` call per set
(`scoring.generate_sets`), so a set of 30-40 rows is a batch of its own. Would one call for all sets,
their rows sharing batches, save time on this CPU? (On the demo's sets, no: 1.15x the time, more
row-steps -- mixed batches carry rows that ended long before their batch's longest.)

Method: the demo's sets (synthetic forget and retain authors, the arithmetic evaluation problems; or
R-TOFU's with `--rtofu`), the demo's system prompt, strategies and samples per strategy, `--new` new
tokens; `generate_sets` with `one_call` and without, alternated `--repeats` times; the median
wall time of each, the batches and the row-steps (rows summed over decode steps, counted by a hook).

    python bench/eval_sets.py --model DIR           # a target that ends its traces (e.g. the demo's)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, REPO, SHARED_DATA, machine, resolve_model, save_and_publish

sys.path.insert(0, str(REPO))


def load(a: argparse.Namespace, work: Path) -> dict:
    from cipo_fast.data.items import load_gsm8k, load_items

    if a.rtofu:
        from rtofu import SIZES  # bench/rtofu.py's data sizes

        from cipo_fast.data import rtofu

        sizes = {k: full for k, (full, _smoke) in SIZES.items()}
        files = rtofu.build(work, SHARED_DATA, forget_task=1, holdout_task=2, **sizes)
        keys = ("forget", "retain", "real_authors", "world_facts")
    else:
        from cipo_fast import synthetic

        files = synthetic.build(work, seed=0)
        keys = ("forget", "retain")
    sets = {k: load_items(files[k], limit=a.limit) for k in keys}
    sets["utility"] = load_gsm8k(files["arithmetic_eval"], limit=a.limit or 100)
    return sets


def run(a: argparse.Namespace) -> dict:
    import torch

    from cipo_fast.data.tokenize import TextFormat, Tokenizer
    from cipo_fast.demo import SYSTEM_PROMPT
    from cipo_fast.eval.scoring import generate_sets
    from cipo_fast.model.generation import GenConfig, make_strategies
    from cipo_fast.model.loading import ModelOptions, load_model

    work = Path(tempfile.mkdtemp(prefix="cipo-evalsets-"))
    model, hf_tok = load_model(str(resolve_model(a.model, work)), ModelOptions())
    tok = Tokenizer(hf_tok, TextFormat(system_prompt=SYSTEM_PROMPT))
    sets = load(a, work)
    strategies = make_strategies(a.strategies, a.samples, tok.reasoning)
    cfg = GenConfig(a.new, a.batch, seed=0)
    counts = {"batches": 0, "row_steps": 0}

    def count(module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] == 1:  # a decode step
            counts["row_steps"] += ids.shape[0]
        else:  # a batch's prefill
            counts["batches"] += 1

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    arms = {
        "one call for all sets": lambda: generate_sets(model, tok, sets, strategies, cfg, one_call=True),
        "one call per set": lambda: generate_sets(model, tok, sets, strategies, cfg),
    }
    results = {name: [] for name in arms}
    for rep in range(a.repeats):
        for name in arms if rep % 2 == 0 else list(arms)[::-1]:
            counts.update(batches=0, row_steps=0)
            t = time.perf_counter()
            arms[name]()
            results[name].append({"s": time.perf_counter() - t, **counts})
    hook.remove()
    rows = []
    for name, runs in results.items():
        rows.append(
            {
                "system": name,
                "median_s": statistics.median(r["s"] for r in runs),
                "times_s": [r["s"] for r in runs],
                "batches": runs[-1]["batches"],
                "row_steps": runs[-1]["row_steps"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "model": a.model,
        "data": "R-TOFU fold 1 and its utility sets" if a.rtofu else "the demo's synthetic sets",
        "sets": {k: len(v) for k, v in sets.items()},
        "strategies": a.strategies,
        "samples": a.samples,
        "batch": a.batch,
        "new_tokens": a.new,
        "threads": torch.get_num_threads(),
        "systems": rows,
    }


def table(r: dict, facts: dict) -> str:
    one, per_set = r["systems"]
    sizes = ", ".join(f"{k} {n}" for k, n in r["sets"].items())
    lines = [
        f"An evaluation's generations ({r['data']}: {sizes} items; forget under "
        f"{', '.join(r['strategies'])} × {r['samples']} sample(s), the other sets greedy), batches of up to "
        f"{r['batch']} rows, up to {r['new_tokens']} new tokens, model `{Path(r['model']).name}`; "
        f"{facts['cores']} cores ({facts['cpu']}), torch {facts['torch']}.",
        "",
        "| generation | s (median) | batches | row-steps | time ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in (per_set, one):
        lines.append(
            f"| {row['system']} | {row['median_s']:.1f} | {row['batches']} | {row['row_steps']} | "
            f"{row['median_s'] / per_set['median_s']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    from cipo_fast.model.generation import STRATEGY_NAMES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | an HF model directory")
    ap.add_argument("--rtofu", action="store_true", help=f"R-TOFU's sets (from {SHARED_DATA})")
    ap.add_argument("--limit", type=int, default=None, help="first N items of each set")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES), choices=list(STRATEGY_NAMES))
    ap.add_argument("--samples", type=int, default=2, help="samples per sampling strategy (the demo's 2)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--new", type=int, default=128, help="max new tokens (the demo's 128)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    a = ap.parse_args(argv)
    facts = machine()
    r = run(a)
    save_and_publish(a.out, "eval_sets.json", facts, r, "bench-eval-sets", table(r, facts), a.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
