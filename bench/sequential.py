"""Sequential unlearning requests: forget author A, then author B starting from the first run's model.

    python bench/sequential.py                  # CiPO and GD on the demo's two forget authors
    python bench/sequential.py --smoke --out DIR

Unlearning arrives as requests over time. The demo's data (`--seed`) and target (`cipo_fast.demo`'s
SFT, from the cache when the demo ran): request 1 forgets the first forget author's six items (A),
request 2 the second author's (B), each with the demo's retain set and arithmetic problems; request 2
starts from request 1's model (the second run's `--model` is the first run's output) and trains on B
alone. Methods: CiPO at the demo's settings (its own rounds until nothing leaks) and GD (R-TOFU's
gradient difference: gradient ascent on the request's items plus the retain NLL,
`comparison.METHODS["ga"]`) with as many optimizer steps as CiPO took on the same request, at `--gd-lr`.

Measured on the target and after each request: worst leak over the decoding strategies (CoT and
answer) on A's questions and on B's, retain and arithmetic accuracy. A must stay forgotten after
request 2, B be forgotten, retain kept. Outputs: bench/out/sequential.json and the README table between
the `sequential` markers; every run and evaluation is kept under OUT and reused by a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import OUT, REPO, machine, publish

sys.path.insert(0, str(REPO))

RESULT = OUT / "sequential.json"
METHODS = ("cipo", "ga")  # GD: comparison.METHODS["ga"] trains GA with the retain NLL


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "sequential", help="run directory (reused)")
    p.add_argument("--model", default="smollm2-135m", help="base model of the target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--lr", type=float, default=1e-4, help="CiPO's learning rate (the demo's)")
    p.add_argument("--gd-lr", type=float, default=3e-5, help="GD's learning rate")
    p.add_argument("--sft-epochs", type=float, default=4.5)
    p.add_argument("--smoke", action="store_true", help="3 authors, one round, 8 new tokens, 2 GD steps")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-readme", dest="readme", action="store_false")
    p.add_argument("--result", type=Path, default=RESULT)
    return p.parse_args(argv)


def demo_config(a: argparse.Namespace):
    from cipo_fast.demo import DemoConfig

    smoke = dict(rounds=1, max_new_tokens=8, batch_size=2, max_pairs_per_item=2, eval_samples=1)
    return DemoConfig(
        out=str(a.out),
        model=a.model,
        seed=a.seed,
        sft_epochs=a.sft_epochs,
        lr=a.lr,
        progress=a.progress,
        **(smoke if a.smoke else {}),
    )


def requests(data: dict, folder: Path) -> list[Path]:
    """The forget items split by author, in the order of the forget file: one request file each."""
    from cipo_fast.data.io import read_jsonl, write_jsonl

    by_author: dict[str, list] = {}
    for _, row in read_jsonl(data["forget"]):
        by_author.setdefault(row["author"], []).append(row)
    if len(by_author) < 2:
        raise ValueError(
            f"{data['forget']}: sequential requests need two forget authors, got {len(by_author)}"
        )
    paths = []
    for i, rows in enumerate(list(by_author.values())[:2], 1):
        paths.append(folder / f"request{i}.jsonl")
        write_jsonl(paths[-1], rows)
    return paths


def measure(cfg, model: str, folder: Path, data: dict, asked: list[Path], target: str, label: str) -> dict:
    """The model's leaks on each request's questions and its retain / arithmetic accuracy."""
    from cipo_fast import demo
    from cipo_fast.comparison import headline
    from cipo_fast.eval.other_questions import leakage_on

    first = {**data, "forget": asked[0]}
    main = headline(demo.eval_once(cfg, model, folder / "A", first, label, original=target))
    second = leakage_on(demo.eval_config(cfg, model, folder / "B", first, label), asked[1])
    return {
        "A": {k: main[k] for k in second},
        "B": second,
        "retain_accuracy": main["retain_accuracy"],
        "arithmetic_accuracy": main["arithmetic_accuracy"],
    }


def train(cfg, method: str, model: str, asked: Path, run: Path, data: dict, steps: int | None, lr: float):
    """One request's run (resumed or reused when it is there); returns its summary."""
    import dataclasses

    import cipo_fast
    from cipo_fast import demo
    from cipo_fast.comparison import METHODS as SPECS
    from cipo_fast.data.io import read_jsonl
    from cipo_fast.train.run_dir import interrupted
    from cipo_fast.unlearning.baselines import BaselineDataConfig, build

    if (run / "summary.json").is_file():
        return json.loads((run / "summary.json").read_text())
    files = build(
        BaselineDataConfig(forget=str(asked), out=str(run.parent / f"{run.name}-data"), seeds=str(asked))
    )
    files["items"] = asked
    common = dict(model=model, out=str(run))
    if steps is not None:
        common["max_steps"] = steps
    epochs = (steps or 1) * cfg.batch_size / len(read_jsonl(asked))
    config = demo.method_config(cfg, SPECS[method], files, data, lr, epochs, **common)
    resume = interrupted(run)
    return cipo_fast.fit(dataclasses.replace(config, resume=resume, overwrite=not resume))


def main(argv=None) -> dict:
    from cipo_fast import demo, synthetic
    from cipo_fast.data.io import write_json

    a = parse(argv)
    cfg = demo_config(a)
    t0 = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    small = dict(n_authors=4, n_forget=2, n_arith_train=4, n_arith_eval=2, n_holdout=1) if a.smoke else {}
    data = synthetic.build(a.out / "data", seed=a.seed, **small)
    data["retain_all"] = demo.retain_with_arithmetic(data, a.out / "data" / "retain_all.jsonl")
    asked = requests(data, a.out / "data")
    target = str(demo.target_model(cfg, data))
    rows = [
        {
            "method": "target",
            "after": "–",
            **measure(cfg, target, a.out / "target", data, asked, target, "target"),
        }
    ]
    for method in sorted(a.methods, key=METHODS.index):  # CiPO first: GD takes its step counts
        model = target
        for i, request in enumerate(asked, 1):
            run = a.out / method / f"request{i}"
            cipo_steps = None
            if method != "cipo":
                cipo_run = a.out / "cipo" / f"request{i}" / "summary.json"
                if not cipo_run.is_file():
                    raise SystemExit(
                        f"GD takes CiPO's step count per request, and {cipo_run} is missing: add cipo to --methods"
                    )
                cipo_steps = 2 if a.smoke else max(json.loads(cipo_run.read_text())["train_steps"], 1)
            t = time.perf_counter()
            summary = train(
                cfg, method, model, request, run, data, cipo_steps, a.lr if method == "cipo" else a.gd_lr
            )
            model = str(run / "model")
            label = f"{method} after request {i}"
            row = measure(cfg, model, run.parent / f"eval{i}", data, asked, target, label)
            rows.append({"method": method, "after": f"request {i} ({'AB'[i - 1]})", **row})
            rows[-1]["steps"] = summary.get("train_steps", summary.get("steps"))  # CiPO, the others
            rows[-1]["train_s"] = demo.timed(run, {}, t)["wall_s"]  # measured once, kept in run/wall.json
    out = {
        "benchmark": "sequential unlearning requests",
        "machine": machine(),
        "command": "python bench/sequential.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "requests": [str(p) for p in asked],
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    a.result.parent.mkdir(parents=True, exist_ok=True)
    write_json(a.result, out)
    publish("sequential", note(out) + table(rows), a.readme)
    print(f"wrote {a.result}")
    return out


def note(out: dict) -> str:
    measured = sum(r.get("train_s") or 0.0 for r in out["rows"])
    return (
        f"Host: {out['machine'].get('cpu', '?')}; this run {out['wall_s'] / 60:.0f} min (stages reused from an "
        f"earlier run count as 0); the requests' own times (training + evaluation, measured once) sum to "
        f"{measured / 60:.0f} min. Leaks: worst over greedy, sampling at T = 0.7 / 1.0 (2 samples), ZeroThink "
        "and LessThink, on each author's six questions.\n\n"
    )


def table(rows: list[dict]) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    head = [
        "method", "after", "A: worst CoT leak", "A: worst answer leak", "B: worst CoT leak",
        "B: worst answer leak", "retain acc", "arithmetic acc", "steps", "time (train + eval)",
    ]  # fmt: skip
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [pct(r[s][k]) for s in ("A", "B") for k in ("max_leak_cot", "max_leak_answer")]
        cells += [pct(r["retain_accuracy"]), pct(r["arithmetic_accuracy"])]
        cells += [str(r.get("steps", "–")), f"{r['train_s']:.0f} s" if "train_s" in r else "–"]
        lines.append(" | ".join([r["method"], r["after"], *cells]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
