"""Robustness: the demo comparison (CiPO against the best baselines) over seeds, with unseen phrasings.

    python bench/seeds.py                       # seeds 0 1 2 at the default settings
    python bench/seeds.py --seeds 3 4           # more seeds; finished stages are reused
    python bench/seeds.py --smoke --out DIR     # tiny sizes (CI)

Per seed s, one whole demo (`cipo_fast.demo.main` with `--seed s`) in OUT/seed<s>: its own synthetic
authors, arithmetic problems and holdout, its own target SFT and CiPO run, then `--compare --compare-at`
at the settings `--settings` (METHOD=LR, or a guard's name), each with CiPO's step budget of that seed.
The target, CiPO and every compared model are also evaluated on the forget facts asked in the question
templates they never trained on (`cipo_fast.eval.other_questions`). A setting *meets the lines* when its worst
leak (CoT and answer, every decoding strategy) is at most `LEAK_LINE` and its retain and arithmetic
accuracy stay within `comparison.UTILITY_DROP` of that seed's target (`comparison.keeps_utility`).

Outputs: bench/out/seeds.json (per seed and setting; per setting the mean, sample standard deviation,
min and max over the seeds) and the README tables between the `seeds` markers. Every stage of a seed is
reused when it is already there (the demo's own resume), so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import OUT, REPO, machine, publish

sys.path.insert(0, str(REPO))

from cipo_fast.comparison import METHODS
from cipo_fast.demo import DemoConfig, pinned_lrs

RESULT = OUT / "seeds.json"
LEAK_LINE = 0.10  # worst CoT and answer leak a setting may keep and still count as forgetting
# CiPO (the demo's run), CiPO as published at its best setting of the demo sweep on the EPYC target and
# STaR, the best-placed methods there that keep retain accuracy (docs/results/demo_compare.json)
SETTINGS = ("cipo", "cipo_paper=0.0001", "star")
KEYS = (
    "max_leak_cot",
    "max_leak_answer",
    "mcs",
    "retain_accuracy",
    "arithmetic_accuracy",
    "unseen_max_leak_cot",
    "unseen_max_leak_answer",
)
HEADERS = (
    "worst CoT leak",
    "worst answer leak",
    "MCS",
    "retain acc",
    "arithmetic acc",
    "unseen: worst CoT leak",
    "unseen: worst answer leak",
)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "seeds", help="run directory (kept, reused)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), help="cipo, METHOD=LR or a guard")
    p.add_argument("--model", default="smollm2-135m", help="base model of the targets")
    p.add_argument("--lr", type=float, default=1e-4, help="CiPO's learning rate (the demo's)")
    p.add_argument("--sft-epochs", type=float, default=4.5)
    p.add_argument("--record", type=Path, default=None, help="demo --compare record to read and extend")
    p.add_argument(
        "--cpu-autocast",
        choices=("auto", "bf16", "off"),
        default="off",
        help="the demo's --cpu-autocast for every stage of every seed (bf16 targets are other targets)",
    )
    p.add_argument("--smoke", action="store_true", help="3 authors, one round, 8 new tokens")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-readme", dest="readme", action="store_false")
    p.add_argument("--result", type=Path, default=RESULT)
    a = p.parse_args(argv)
    a.pinned, a.guards = settings(a.settings)
    return a


def settings(entries: list[str]) -> tuple[dict[str, float], list[str]]:
    """`--settings` as ({method: lr}, [guards]); "cipo" (the demo's own run) is in neither. The METHOD=LR
    entries are checked by `demo --compare-at`'s own parser (`demo.pinned_lrs`)."""
    guards = [e for e in entries if e in METHODS and METHODS[e].method is None]
    pinned = [e for e in entries if e != "cipo" and e not in guards]
    names = tuple(dict.fromkeys(e.partition("=")[0] for e in pinned if e.partition("=")[0] in METHODS))
    try:
        if "cipo" in names:
            raise ValueError("cipo is the demo's own run")
        lrs = pinned_lrs(DemoConfig(compare_methods=names + tuple(guards), compare_at=tuple(pinned)))
    except ValueError as err:
        raise SystemExit(f"--settings: expected cipo, METHOD=LR (LR > 0) or a guard's name ({err})") from err
    return lrs, guards


def demo_config(a: argparse.Namespace, seed: int):
    smoke = dict(rounds=1, max_new_tokens=8, batch_size=2, max_pairs_per_item=2, eval_samples=1)
    return DemoConfig(
        out=str(a.out / f"seed{seed}"),
        model=a.model,
        seed=seed,
        sft_epochs=a.sft_epochs,
        lr=a.lr,
        compare=True,
        compare_methods=(*a.pinned, *a.guards),
        compare_at=tuple(f"{m}={lr!r}" for m, lr in a.pinned.items()),
        compare_steps=2 if a.smoke else None,  # a tiny target may leak nothing, leaving CiPO without steps
        compare_record=str(a.record) if a.record else None,
        cpu_autocast=a.cpu_autocast,
        progress=a.progress,
        **(smoke if a.smoke else {}),
    )


def seed_rows(a: argparse.Namespace, seed: int) -> dict[str, dict]:
    """One seed's demo with its comparison; {label: headline numbers + unseen-phrasing leaks + lines}."""
    from cipo_fast import demo, synthetic
    from cipo_fast.comparison import headline, keeps_utility, worst_leak
    from cipo_fast.eval.other_questions import LEAK_KEYS, leakage_on

    cfg = demo_config(a, seed)
    small = dict(n_authors=3, n_forget=1, n_arith_train=4, n_arith_eval=2, n_holdout=1)
    build = (lambda d: synthetic.build(d, seed=seed, **small)) if a.smoke else None
    result = demo.main(cfg, build_data=build)
    out, data, target = Path(cfg.out), result["data"], result["target_model"]
    before = headline(json.loads((out / "before" / "summary.json").read_text()))
    after = {
        **headline(json.loads((out / "after" / "summary.json").read_text())),
        "wall_s": demo.cipo_wall(out),
    }
    rows = {"target": (before, result["unseen_phrasings"]["target"])}
    rows[f"cipo lr={cfg.lr:g}"] = (after, result["unseen_phrasings"]["cipo"])
    for name, entry in result["compare"].items():
        spec = METHODS[name]
        for key, row in entry["settings"].items():
            run = out / "compare" / name / key if spec.method else out / "compare" / name
            model = str(run / "model") if spec.method else target
            config = demo.eval_config(
                cfg, model, run / "eval_rephrased", data, f"{name} {key}", guard=spec.guard
            )
            if spec.method and not (run / "model").is_dir():  # taken from --record: no model here to ask
                print(f"{name} {key}: from the record, its model is not in {run}; unseen phrasings left out")
                unseen = dict.fromkeys(LEAK_KEYS)
            else:
                unseen = leakage_on(config, data["forget_rephrased"])
            rows[f"{name} {key}" if spec.method else name] = (row, unseen)
    table = {}
    for label, (row, unseen) in rows.items():
        meets = worst_leak(row) <= LEAK_LINE and keeps_utility(row, before)
        table[label] = {
            **{k: row.get(k) for k in KEYS[:5]},
            "unseen_max_leak_cot": unseen["max_leak_cot"],
            "unseen_max_leak_answer": unseen["max_leak_answer"],
            "meets_lines": meets if label != "target" else None,
            "wall_s": row.get("wall_s"),
        }
    return table


def spread(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Per setting, per key of `KEYS`: mean, sample standard deviation (0 for one seed), min, max over the
    seeds that have it; and how many seeds meet the lines."""
    labels = dict.fromkeys(label for rows in per_seed.values() for label in rows)
    summary = {}
    for label in labels:
        rows = [rows[label] for rows in per_seed.values() if label in rows]
        stats = {}
        for key in KEYS:
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                stats[key] = {
                    "mean": statistics.fmean(values),
                    "sd": sd,
                    "min": min(values),
                    "max": max(values),
                }
        met = [r["meets_lines"] for r in rows if r.get("meets_lines") is not None]
        summary[label] = {"seeds": len(rows), "stats": stats, "meets_lines": sum(met) if met else None}
    return summary


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def tables(per_seed: dict[int, dict[str, dict]], summary: dict[str, dict]) -> str:
    """Markdown: mean ± sd (min–max) per setting, then every seed's row."""
    head = ["setting", *HEADERS, "lines met"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for label, entry in summary.items():
        cells = []
        for key in KEYS:
            s = entry["stats"].get(key)
            cells.append(
                "–"
                if s is None
                else f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f} ({_pct(s['min'])}–{_pct(s['max'])})"
            )
        met = "–" if entry["meets_lines"] is None else f"{entry['meets_lines']} of {entry['seeds']}"
        lines.append(" | ".join([label, *cells, met]))
    head = ["seed", "setting", *HEADERS, "lines met", "wall time"]
    lines += ["", "Every seed:", "", " | ".join(head), " | ".join("---" for _ in head)]
    for seed, rows in per_seed.items():
        for label, row in rows.items():
            met = {None: "–", True: "yes", False: "no"}[row["meets_lines"]]
            wall = "–" if row.get("wall_s") is None else f"{row['wall_s']:.0f} s"
            lines.append(" | ".join([str(seed), label, *(_pct(row[k]) for k in KEYS), met, wall]))
    return "\n".join(lines)


def main(argv=None) -> dict:
    from cipo_fast.data.io import write_json

    a = parse(argv)
    t0 = time.perf_counter()
    per_seed = {seed: seed_rows(a, seed) for seed in a.seeds}
    summary = spread(per_seed)
    out = {
        "benchmark": "demo comparison over seeds",
        "machine": machine(),
        "command": "python bench/seeds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "leak_line": LEAK_LINE,
        "cpu_autocast": a.cpu_autocast,
        "per_seed": {str(s): rows for s, rows in per_seed.items()},
        "summary": summary,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    a.result.parent.mkdir(parents=True, exist_ok=True)
    write_json(a.result, out)
    note = (
        f"Seeds {', '.join(map(str, a.seeds))}; host: {out['machine'].get('cpu', '?')}; "
        f"CPU autocast: {a.cpu_autocast}; wall time of this run "
        f"{out['wall_s'] / 60:.0f} min (stages reused from an earlier run count as 0). Cells: mean ± sample "
        f"sd over the seeds in points (min–max); lines: worst leak ≤ {LEAK_LINE:.0%} and retain / arithmetic "
        "within 10 points of the seed's target; unseen: the same facts asked in question templates never "
        "trained on.\n\n"
    )
    publish("seeds", note + tables(per_seed, summary), a.readme)
    print(f"wrote {a.result}")
    return out


if __name__ == "__main__":
    main()
