"""The R-TOFU benchmark on this CPU: every method of `demo --compare` on an R-TOFU target, one table, one plot.

    python bench/rtofu.py                      # the full benchmark (hours; resumes where it stopped)
    python bench/rtofu.py --smoke --out DIR    # a few items, one round, short generations (CI-sized)
    python bench/rtofu.py --methods ga npo     # only these methods (others stay as they are)
    python bench/rtofu.py --target-only        # the target's SFT and evaluation: does it memorise the fold?
    python bench/rtofu.py --settings demo-best # each method at the setting that won its demo sweep only

Protocol (R-TOFU, Yoon et al. 2025, arXiv 2505.15214, scaled to a CPU):

    data      forget = fold `--forget-task` of forget01 (40 questions, two authors); holdout = another fold,
              never trained on (membership inference); retain = the first `--n-retain` rows of retain10;
              utility = real authors, world facts (R-TOFU's MU sets) and GSM8K (`cipo_fast.data.rtofu`)
    target    SmolLM2-135M-Instruct fine-tuned on forget + retain + GSM8K rows (`cipo-fast finetune`,
              cached by the content of its inputs)
    methods   the demo's stages and comparison (`cipo_fast.demo.main`, `--compare`): CiPO at `--lr`, then
              every method of `cipo_fast.comparison` at each learning rate of its sweep with CiPO's step
              budget, evaluated by `cipo-fast eval` with R-TOFU's sets
    outputs   bench/out/rtofu.json; the README table between the `rtofu` markers; the forget efficacy vs
              model utility plot with its Pareto front, docs/results/rtofu_pareto.png; every setting's
              model under OUT/compare/<method>/<setting>/model

Every stage and setting is reused when it is already there: settings by the fingerprint of their
training and evaluation settings and data (`comparison_record.fingerprint`), so an interrupted run
resumes and a rerun with one method's settings changed redoes that method only. `--record` (default
docs/results/rtofu_compare.json) keeps the finished settings beyond the run directory, keyed by the
target's weights. The target's own leakage is checked: below 80 % greedy (CoT or answer) the forgetting
measured would not be forgetting of memorised facts, and the result says so (`target_memorises`).

`--settings demo-best` runs each trained method at one learning rate instead of its three: the multiple of
its base rate that won the method's sweep in `demo --compare` (the demo record's most complete target, as
bench/compare_tables.py shows it; `comparison.best_setting`). That is a third of the training and
evaluation, at the price of assuming the synthetic demo's best is R-TOFU's; the result records which
setting each method took and whether its demo sweep was complete.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import OUT, REPO, SHARED_DATA, machine, publish

sys.path.insert(0, str(REPO))

from cipo_fast.comparison import (
    METHODS,
    best_setting,
    compare_table,
    summarize_sweep,
    sweep_settings,
    sweep_table,
)
from cipo_fast.model.generation import STRATEGY_NAMES

RESULT = OUT / "rtofu.json"
PLOT = REPO / "docs" / "results" / "rtofu_pareto.png"
RECORD = REPO / "docs" / "results" / "rtofu_compare.json"
DEMO_RECORD = REPO / "docs" / "results" / "demo_compare.json"
MEMORISED = 0.80  # greedy leak the target must reach on the forget fold, CoT and answer (the line)
COLUMNS = (
    "rtofu_forget_efficacy",
    "rtofu_cot_forget_efficacy",
    "rtofu_model_utility",
    "max_leak_cot",
    "max_leak_answer",
    "mcs",
    "retain_accuracy",
    "arithmetic_accuracy",
    "mia_auc_answer",
    "mia_auc_cot",
    "privleak_answer",
    "wall_s",
)
SIZES = {  # data sizes: (full, smoke)
    "n_forget": (None, 3),
    "n_retain": (40, 3),
    "n_real_authors": (40, 2),
    "n_world_facts": (40, 2),
    "n_arith_train": (20, 2),
    "n_arith_eval": (30, 2),
}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "rtofu", help="run directory (kept, reused)")
    p.add_argument("--data-root", type=Path, default=SHARED_DATA, help="folder with rtofu/ and gsm8k/")
    p.add_argument("--model", default="smollm2-135m", help="base model of the target")
    p.add_argument("--forget-task", type=int, default=1)
    p.add_argument("--holdout-task", type=int, default=2)
    p.add_argument(
        "--rephrased",
        default="auto",
        help="file of {question, paraphrased_question} to ask the forget fold in other words; auto: "
        "R-TOFU's perturbed dev split when it holds the forget fold (folds 6-10); '' for none",
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--sft-epochs", type=float, default=3.0)
    p.add_argument("--sft-lr", type=float, default=4e-4)
    p.add_argument("--rounds", type=int, default=3, help="CiPO rounds (the step budget of every method)")
    p.add_argument("--lr", type=float, default=1e-4, help="base learning rate of the sweeps")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=768,
        help="forget fold 1's gold CoT + answer: median 473, max 726 SmolLM2 tokens; at 384, 23 of the "
        "target's 40 greedy traces never closed their think block (no answer to score)",
    )
    p.add_argument("--eval-samples", type=int, default=1)
    p.add_argument(
        "--eval-strategies",
        nargs="+",
        default=list(STRATEGY_NAMES),
        choices=list(STRATEGY_NAMES),
        help="decoding strategies of every evaluation (default: all; the worst leaks are over these only)",
    )
    p.add_argument(
        "--cpu-autocast",
        default="off",
        choices=("auto", "bf16", "off"),
        help="precision of every stage on the CPU (cipo-fast demo --cpu-autocast): bf16 autocast, auto = "
        "when the CPU has bf16 units, off = fp32; the target is another cached target in bf16",
    )
    p.add_argument("--record", type=Path, default=RECORD, help="compare record file ('' for none)")
    p.add_argument(
        "--settings",
        default="sweep",
        choices=("sweep", "demo-best"),
        help="sweep: every method at each learning rate of its sweep; demo-best: at the one that won its "
        "sweep in demo --compare (--demo-record), a third of the runs",
    )
    p.add_argument("--demo-record", type=Path, default=DEMO_RECORD, help="demo --compare record file")
    p.add_argument("--smoke", action="store_true", help="a few items, one round, 8 new tokens")
    p.add_argument(
        "--target-only",
        action="store_true",
        help="stop after the target's SFT and evaluation (writes --result with the target's row, no table)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-readme", dest="readme", action="store_false")
    p.add_argument("--result", type=Path, default=RESULT)
    p.add_argument("--plot", type=Path, default=PLOT)
    return p.parse_args(argv)


def demo_best(path: Path, methods, base_lr: float) -> tuple[tuple[str, ...], dict]:
    """`--compare-at` entries that pin each trained method of `methods` to the multiple of its base rate
    that won its sweep in the demo record at `path`, and {method: where its setting came from}. A method
    the record has no sweep setting of runs its whole sweep (said so in the second value)."""
    import compare_tables

    try:
        record = json.loads(path.read_text())
        digest = compare_tables.pick_target(record, None)
    except (OSError, ValueError, SystemExit, KeyError) as e:
        raise SystemExit(f"--settings demo-best: cannot read the demo record {path}: {e}") from None
    runs, _ = compare_tables.merged_settings(record, compare_tables.group(record, digest))
    target = record["targets"][digest].get("target") or {}
    expected = compare_tables.expected_settings(compare_tables.BASE_LR)
    pinned, chosen = [], {}
    for name in methods:
        spec = METHODS[name]
        if spec.method is None:
            continue
        keys = expected[name]  # the demo sweep's settings, in the order of `LR_SWEEP`
        rows = {k: r for k, r in runs.get(name, {}).items() if k in keys}
        if not rows:
            chosen[name] = {"demo_setting": None, "note": "no demo sweep setting: its whole sweep runs"}
            continue
        key = best_setting(rows, target)
        lr = list(sweep_settings(spec, base_lr).values())[keys.index(key)]
        pinned.append(f"{name}={lr:g}")
        chosen[name] = {"demo_setting": key, "lr": lr, "demo_sweep_complete": len(rows) == len(keys)}
    return tuple(pinned), {"record": str(path), "target": digest, "host": target.get("host"), **chosen}


def demo_config(a: argparse.Namespace, compare_at: tuple[str, ...] = ()):
    from cipo_fast.demo import DemoConfig

    return DemoConfig(
        out=str(a.out),
        model=a.model,
        sft_epochs=a.sft_epochs,
        sft_lr=a.sft_lr,
        rounds=1 if a.smoke else a.rounds,
        lr=a.lr,
        eval_samples=a.eval_samples,
        eval_strategies=tuple(a.eval_strategies),
        cpu_autocast=a.cpu_autocast,
        max_new_tokens=8 if a.smoke else a.max_new_tokens,
        batch_size=2 if a.smoke else 8,
        max_pairs_per_item=2 if a.smoke else 6,
        compare=True,
        compare_methods=tuple(a.methods),
        compare_steps=2 if a.smoke else None,  # a tiny target may leak nothing, leaving CiPO without steps
        compare_record=str(a.record) if str(a.record) else None,
        compare_at=compare_at,
        until="target" if a.target_only else None,
        progress=a.progress,
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (higher is better in each),
    ordered by the first coordinate."""
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any((u >= x and v >= y) and (u > x or v > y) for u, v in points)
    ]
    return sorted(front, key=lambda i: points[i])


def plot(summary: dict, target: dict, path: Path) -> bool:
    """Forget efficacy against model utility, one point per method and setting, the front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, points = [], []
    for name, entry in summary.items():
        for key, row in entry["settings"].items():
            x, y = row.get("rtofu_model_utility"), row.get("rtofu_forget_efficacy")
            if x is not None and y is not None:
                labels.append(f"{name} {key}" if key != "target" else name)
                points.append((x, y))
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    methods = sorted({lab.split()[0] for lab in labels})
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}
    for lab, (x, y) in zip(labels, points):
        m = lab.split()[0]
        ax.scatter(100 * x, 100 * y, color=colours[m], s=28, zorder=3)
    for m in methods:
        ax.scatter([], [], color=colours[m], label=m)
    front = pareto_front(points)
    ax.plot(
        [100 * points[i][0] for i in front],
        [100 * points[i][1] for i in front],
        "k--",
        lw=1,
        label="Pareto front",
    )
    for i in front:
        ax.annotate(
            labels[i],
            (100 * points[i][0], 100 * points[i][1]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if target.get("rtofu_model_utility") is not None and target.get("rtofu_forget_efficacy") is not None:
        ax.scatter(
            100 * target["rtofu_model_utility"],
            100 * target["rtofu_forget_efficacy"],
            marker="*",
            s=140,
            color="black",
            label="target (before)",
        )
    ax.set_xlabel("R-TOFU model utility (%)")
    ax.set_ylabel("R-TOFU forget efficacy (%)")
    ax.set_title("R-TOFU on SmolLM2-135M: every method and learning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> dict:
    from cipo_fast import demo
    from cipo_fast.comparison import headline
    from cipo_fast.data import rtofu
    from cipo_fast.data.io import write_json

    a = parse(argv)
    if absent := rtofu.missing(a.data_root):
        raise SystemExit(
            f"bench/rtofu.py needs R-TOFU and GSM8K under {a.data_root} ({', '.join(map(str, absent))} "
            "missing); they are not part of the project. Pass --data-root or point ../shared/data at a copy."
        )
    sizes = {k: v[1] if a.smoke else v[0] for k, v in SIZES.items()}
    rephrased = a.rephrased or None
    if rephrased == "auto":
        dev = a.data_root / rtofu.PARAPHRASES
        rephrased = dev if dev.is_file() and 6 <= a.forget_task <= 10 else None
    pinned, chosen = (), None
    if a.settings == "demo-best" and not a.target_only:
        pinned, chosen = demo_best(a.demo_record, a.methods, a.lr)
        print("--settings demo-best: " + (", ".join(pinned) or "no method pinned"), flush=True)
    t0 = time.perf_counter()
    result = demo.main(
        demo_config(a, pinned),
        build_data=lambda folder: rtofu.build(
            folder,
            a.data_root,
            forget_task=a.forget_task,
            holdout_task=a.holdout_task,
            rephrased=rephrased,
            **sizes,
        ),
    )
    before = headline(json.loads((a.out / "before" / "summary.json").read_text()))
    memorised = all((before.get(k) or 0.0) >= MEMORISED for k in ("greedy_leak_cot", "greedy_leak_answer"))
    note = (
        f"Target greedy leak: CoT {100 * (before.get('greedy_leak_cot') or 0):.0f} %, answer "
        f"{100 * (before.get('greedy_leak_answer') or 0):.0f} %"
        + (
            "."
            if memorised
            else f" -- below the {MEMORISED:.0%} line: the target does not memorise the fold."
        )
    )
    out = {
        "benchmark": "R-TOFU (target only)" if a.target_only else "R-TOFU",
        "machine": machine(),
        "command": "python bench/rtofu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": {"forget_task": a.forget_task, "holdout_task": a.holdout_task, **sizes},
        "target": before,
        "target_memorises": memorised,
        "sft": {"epochs": a.sft_epochs, "lr": a.sft_lr},
        "cpu_autocast": a.cpu_autocast,
        "settings": a.settings,
        "eval_strategies": list(a.eval_strategies),
        **({"demo_best": chosen} if chosen is not None else {}),
    }
    if a.target_only:
        out.update(wall_s=round(time.perf_counter() - t0, 1), stages_s=result["timings_s"])
        a.result.parent.mkdir(parents=True, exist_ok=True)
        write_json(a.result, out)
        print(f"{note} Stages: {result['timings_s']}. Wrote {a.result}")
        return out
    summary = summarize_sweep({m: e["settings"] for m, e in result["compare"].items()}, before)
    out.update(
        methods=summary,
        wall_s=round(time.perf_counter() - t0, 1),
        stages_s=result["timings_s"],
        unseen_phrasings=result.get("unseen_phrasings"),  # target and CiPO, with --rephrased
    )
    a.result.parent.mkdir(parents=True, exist_ok=True)
    write_json(a.result, out)
    plotted = plot(summary, before, a.plot)
    table = (
        f"{note} Host: {out['machine'].get('cpu', '?')}; wall time of this run {out['wall_s'] / 60:.0f} min.\n\n"
        f"{compare_table(summary, before, COLUMNS)}\n\nEvery setting:\n\n{sweep_table(summary)}"
    )
    if plotted and a.plot == PLOT:
        table += f"\n\n![forget efficacy vs model utility]({PLOT.relative_to(REPO)})"
    publish("rtofu", table, a.readme)
    print(f"wrote {a.result}" + (f" and {a.plot}" if plotted else ""))
    return out


if __name__ == "__main__":
    main()
