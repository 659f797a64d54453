"""How well does the leak judge tell a restated fact from a swapped one, and what does it cost?

    python bench/leak_judge.py                  # R-TOFU dev split + the synthetic demo set; README table
    python bench/leak_judge.py --no-readme      # JSON only (bench/out/leak_judge.json)

Cases, built from R-TOFU's paraphrase dev split (`forget01_perturbed_dev.json`, folds 6-10: question,
answer, paraphrased answer, five perturbed answers) and, the same way, from the synthetic demo set:

    paraphrase (CoT + answer)  a CoT restating the question, then the paraphrased answer; the answer is the
                               paraphrased answer                                   -> should leak
    paraphrase (CoT only)      the same CoT; the answer says "I'm not sure about that." -> CoT leaks,
                                                                                        answer does not
    perturbed                  each perturbed answer in the CoT and as the answer    -> should not leak
    uncertainty                three "I don't know" replies                          -> should not leak
    echo + uncertainty         the question repeated, then "I'm not sure about that." -> should not leak

Rates are per case (leak_any / leak_cot / leak_answer as `cipo-fast eval` defines them). The judge's
thresholds are fixed in `JudgeConfig`; `--cv` also reports leave-one-fold-out cross-validation over a small
grid of them (the threshold chosen on four folds, scored on the fifth), i.e. how well the calibration is
expected to hold on unseen folds. The synthetic set's paraphrase is the sentence of the item's gold CoT
that states its facts; its perturbed answers swap every fact for the same family's fact of another author.
Cost: milliseconds of judging per output (its CoT and its answer), cold (every distinct text embedded
for the first time) and warm (all cached).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, SHARED_DATA, machine, publish

from cipo_fast.data.items import Item, load_items
from cipo_fast.data.reasoning import DEFAULT_FORMAT
from cipo_fast.eval.judge import JudgeConfig, LeakJudge
from cipo_fast.eval.text import split_sentences

UNSURE = "I'm not sure about that."
UNCERTAIN = (UNSURE, "I don't know the answer to this.", "I cannot recall this information.")
CASES = ("paraphrase", "paraphrase_cot_only", "perturbed", "uncertainty", "echo")


def cot_with(question: str, statement: str) -> str:
    return f"The question asks: {question} Let me think about it. I recall that {statement} That settles it."


def rtofu_cases(rows: list[dict]) -> list[tuple[str, str, str, str]]:
    """(fold, item id, case, output) for the R-TOFU dev rows."""
    out = []
    for k, r in enumerate(rows):
        i, q, fold = str(k), r["question"], str(r["task_id"])
        para = r["paraphrased_answer"]
        out.append((fold, i, "paraphrase", DEFAULT_FORMAT.render(cot_with(q, para), para)))
        out.append((fold, i, "paraphrase_cot_only", DEFAULT_FORMAT.render(cot_with(q, para), UNSURE)))
        for p in r["perturbed_answer"]:
            out.append((fold, i, "perturbed", DEFAULT_FORMAT.render(cot_with(q, p), p)))
        for u in UNCERTAIN:
            out.append((fold, i, "uncertainty", DEFAULT_FORMAT.render(u, u)))
        out.append((fold, i, "echo", DEFAULT_FORMAT.render(f"The question asks: {q}", UNSURE)))
    return out


def synthetic_cases(items: list[dict]) -> list[tuple[str, str, str, str]]:
    """The same cases on the synthetic demo set (fold = the author)."""
    by_family: dict[str, list[dict]] = {}
    for it in items:
        by_family.setdefault(it["id"].split("-", 1)[1], []).append(it)
    out = []
    for it in items:
        q, fold = it["question"], it["author"]
        stating = [s for s in split_sentences(it["cot"]) if any(f in s for f in it["facts"])]
        para = stating[-1] if stating else it["answer"]
        out.append((fold, it["id"], "paraphrase", DEFAULT_FORMAT.render(cot_with(q, para), para)))
        out.append((fold, it["id"], "paraphrase_cot_only", DEFAULT_FORMAT.render(cot_with(q, para), UNSURE)))
        for other in by_family[it["id"].split("-", 1)[1]]:
            if other["author"] == it["author"]:
                continue
            pert = it["answer"]
            for mine, theirs in zip(it["facts"], other["facts"]):
                pert = pert.replace(mine, theirs)
            out.append((fold, it["id"], "perturbed", DEFAULT_FORMAT.render(cot_with(q, pert), pert)))
        for u in UNCERTAIN:
            out.append((fold, it["id"], "uncertainty", DEFAULT_FORMAT.render(u, u)))
        out.append((fold, it["id"], "echo", DEFAULT_FORMAT.render(f"The question asks: {q}", UNSURE)))
    return out


def evidence(judge: LeakJudge, cases) -> list[tuple[str, str, object, object]]:
    """(fold, case, CoT evidence, answer evidence) per case: the judge's threshold-free view, computed once."""
    out = []
    for fold, i, case, output in cases:
        parts = DEFAULT_FORMAT.split(output)
        out.append((fold, case, judge.evidence(i, parts.cot), judge.evidence(i, parts.answer)))
    return out


def rates(judge: LeakJudge, ev, config: JudgeConfig, keep=lambda fold: True) -> dict:
    """Per case: mean leak_any, leak_cot, leak_answer under `config` (as `cipo-fast eval` scores them)."""
    sums: dict[str, list] = {c: [0, 0, 0, 0] for c in CASES}
    for fold, case, cot, answer in ev:
        if not keep(fold):
            continue
        c, a = bool(judge.decide(cot, config)), bool(judge.decide(answer, config))
        acc = sums[case]
        acc[0] += c or a
        acc[1] += c
        acc[2] += a
        acc[3] += 1
    return {
        c: {"leak_any": a / n, "leak_cot": b / n, "leak_answer": d / n, "n": n}
        for c, (a, b, d, n) in sums.items()
        if n
    }


def meets(r: dict) -> bool:
    """The targets: paraphrases caught, perturbed answers, uncertainty and echoes left alone."""
    return (
        r["paraphrase"]["leak_any"] >= 0.90
        and r["paraphrase_cot_only"]["leak_cot"] >= 0.90
        and r["paraphrase_cot_only"]["leak_answer"] <= 0.05
        and r["perturbed"]["leak_any"] <= 0.10
        and r["uncertainty"]["leak_any"] <= 0.05
        and r["echo"]["leak_any"] <= 0.10
    )


def objective(r: dict) -> float:
    return (
        min(r["paraphrase"]["leak_any"], r["paraphrase_cot_only"]["leak_cot"])
        - 3 * max(0.0, r["perturbed"]["leak_any"] - 0.08)
        - 3 * max(0.0, r["echo"]["leak_any"] - 0.05)
    )


GRID = {
    "fact_sim": (0.4, 0.45, 0.5),
    "fact_context": (0.7, 0.75, 0.8),
    "restatement": (0.83, 0.84, 0.85, 0.86, 0.88),
}


def cross_validate(judge: LeakJudge, ev) -> dict:
    folds = sorted({e[0] for e in ev})
    configs = [replace(judge.config, **dict(zip(GRID, v))) for v in itertools.product(*GRID.values())]
    held, chosen = [], []
    for fold in folds:
        others, this = (lambda f, h=fold: f != h), (lambda f, h=fold: f == h)
        best = max(configs, key=lambda cfg: objective(rates(judge, ev, cfg, others)))
        chosen.append({k: getattr(best, k) for k in GRID})
        held.append(rates(judge, ev, best, this))
    mean = {
        c: {m: sum(h[c][m] for h in held) / len(held) for m in ("leak_any", "leak_cot", "leak_answer")}
        for c in CASES
    }
    return {"folds": folds, "chosen": chosen, "held_out": held, "mean": mean}


def measure(a) -> dict:
    report = {"machine": machine(), "config": vars(JudgeConfig()), "sets": {}}
    dev_path = SHARED_DATA / "rtofu" / "forget01_perturbed_dev.json"
    sets = []
    if dev_path.is_file():
        rows = [json.loads(line) for line in dev_path.read_text().splitlines() if line.strip()]
        items = [Item(str(k), r["question"], r["answer"]) for k, r in enumerate(rows)]
        pool = (
            load_items(SHARED_DATA / "rtofu" / "retain10.json")
            if (SHARED_DATA / "rtofu" / "retain10.json").is_file()
            else []
        )
        sets.append(("R-TOFU dev (folds 6-10)", items, pool, rtofu_cases(rows)))
    else:
        print(f"{dev_path} is absent: R-TOFU dev skipped")
    from cipo_fast import synthetic

    paths = synthetic.build(OUT / "leak_judge_synthetic", seed=0)
    syn = [json.loads(line) for p in ("forget", "retain") for line in Path(paths[p]).read_text().splitlines()]
    syn_items = [Item(r["id"], r["question"], r["answer"], r["cot"], tuple(r["facts"])) for r in syn]
    sets.append(("synthetic demo set", syn_items, [], synthetic_cases(syn)))
    for name, items, pool, cases in sets:
        t0 = time.perf_counter()
        judge = LeakJudge(items, pool_items=pool)
        prepare_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = evidence(judge, cases)
        cold_ms = 1000 * (time.perf_counter() - t0) / len(cases)
        t0 = time.perf_counter()
        evidence(judge, cases)
        warm_ms = 1000 * (time.perf_counter() - t0) / len(cases)
        spans_judge = LeakJudge(items, JudgeConfig(semantic=False))
        entry = {
            "rates": rates(judge, ev, judge.config),
            "spans_only": rates(spans_judge, evidence(spans_judge, cases), spans_judge.config),
            "prepare_s": prepare_s,
            "ms_per_output_cold": cold_ms,
            "ms_per_output_warm": warm_ms,
        }
        entry["meets"] = meets(entry["rates"])
        if a.cv and len({c[0] for c in cases}) > 1:
            entry["cross_validation"] = cross_validate(judge, ev)
        report["sets"][name] = entry
        print(name, json.dumps(entry["rates"]), f"cold {cold_ms:.1f} ms/output")
    return report


def table(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"The leak judge (`cipo_fast.eval.judge`, `bench/leak_judge.py`; {report['machine'].get('cpu', '')}): "
        f"thresholds fact_sim {cfg['fact_sim']}, fact_context {cfg['fact_context']}, restatement "
        f"{cfg['restatement']}. Rates per case; `spans` = the key-fact span matching alone (the previous judge); "
        "`cv` = leave-one-fold-out cross-validation (thresholds chosen on the other folds).",
        "",
        "| set | case | target | judge | spans | cv |",
        "|---|---|---|---:|---:|---:|",
    ]
    targets = {
        "paraphrase": ("leak_any", "≥ 0.90"),
        "paraphrase_cot_only": ("leak_cot", "≥ 0.90"),
        "perturbed": ("leak_any", "≤ 0.10"),
        "uncertainty": ("leak_any", "≤ 0.05"),
        "echo": ("leak_any", "≤ 0.10"),
    }
    for name, e in report["sets"].items():
        cv = e.get("cross_validation", {}).get("mean")
        for case, (metric, target) in targets.items():
            row = [
                name,
                case,
                f"{metric} {target}",
                f"{e['rates'][case][metric]:.3f}",
                f"{e['spans_only'][case][metric]:.3f}",
            ]
            row.append(f"{cv[case][metric]:.3f}" if cv else "–")
            lines.append("| " + " | ".join(row) + " |")
            if case == "paraphrase_cot_only":
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            name,
                            case,
                            "leak_answer ≤ 0.05",
                            f"{e['rates'][case]['leak_answer']:.3f}",
                            f"{e['spans_only'][case]['leak_answer']:.3f}",
                            f"{cv[case]['leak_answer']:.3f}" if cv else "–",
                        ]
                    )
                    + " |"
                )
    lines.append("")
    lines.append(
        "Cost per judged output (CoT + answer, embedder warm / cold): "
        + "; ".join(
            f"{n}: {e['ms_per_output_warm']:.1f} / {e['ms_per_output_cold']:.1f} ms"
            for n, e in report["sets"].items()
        )
        + "."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--cv", action="store_true", help="also leave-one-fold-out cross-validation of the thresholds"
    )
    ap.add_argument("--no-readme", dest="readme", action="store_false")
    a = ap.parse_args(argv)
    report = measure(a)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "leak_judge.json").write_text(json.dumps(report, indent=2))
    publish("bench-leak-judge", table(report), a.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
