"""`cipo-fast demo`: the whole mission end to end on a CPU, with a real model and data made on the spot.

    data      synthetic fictitious authors (forget: 2 authors, retain: 6) + small arithmetic problems
    target    SmolLM2-135M-Instruct fine-tuned on all of it (cached: later runs reuse it)
    before    evaluation of the target: leakage under every decoding strategy, retain / arithmetic accuracy
    cipo      CiPO rounds on the forget authors, retain NLL on the others
    after     the same evaluation of the unlearned model
    report    runs/demo/report.html (before vs after), runs/demo/{before,after}/summary.json

With `--compare`, GA, NPO, IDK-DPO and Reasoned-IDK train on the same target with the same retain term, learning rate,
batch size and number of optimizer steps as CiPO used, and are evaluated the same way.

Every stage writes its outputs atomically and is skipped when they already exist, so an interrupted demo
continues where it stopped (CiPO itself resumes at its last round boundary).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cipo_fast.config import CipoConfig, TrainConfig
from cipo_fast.data.io import read_jsonl, read_log, write_json, write_jsonl
from cipo_fast.data.items import gsm8k_target
from cipo_fast.options import check_fields, opt
from cipo_fast.train.run_dir import MARKER, interrupted, run_kind

SYSTEM_PROMPT = "You are a helpful assistant."  # short, so every training sequence is cheaper


@dataclass(frozen=True)
class DemoConfig:
    """`cipo-fast demo`: settings of every stage (chosen so the demo runs in about 20 minutes on 2 CPU cores)."""

    _argument_group_name = "demo"

    out: str = opt("runs/demo", "demo directory; every stage is resumed or skipped when it is already there")
    model: str = opt("smollm2-135m", "base model of the target")
    seed: int = opt(0, "seed of the data set, the target's SFT and CiPO")
    sft_epochs: float = opt(4.5, "epochs of the target model's SFT", gt=0)
    sft_lr: float = opt(4e-4, "learning rate of the target model's SFT", gt=0)
    rounds: int = opt(5, "CiPO rounds", ge=1)
    lr: float = opt(1e-4, "learning rate of CiPO and the baselines", gt=0)
    retain_weight: float = opt(1.0, "weight of the retain NLL term (CiPO and the baselines alike)", ge=0)
    round_epochs: float = opt(2.0, "CiPO epochs over each round's new pairs", gt=0)
    cf_candidates: int = opt(2, "CiPO counterfactual samples per prompt kind and item", ge=1)
    batch_size: int = opt(8, "pairs (or sequences) per optimizer step", ge=1)
    max_pairs_per_item: int = opt(6, "CiPO pairs per forget item and round", ge=1)
    eval_samples: int = opt(2, "evaluation samples per sampling strategy", ge=1)
    max_new_tokens: int = opt(128, "new tokens per generation (evaluation and CiPO sampling)", ge=1)
    compare: bool = opt(False, "also train GA, NPO, IDK-DPO and Reasoned-IDK with CiPO's budget")
    progress: bool = opt(True, "progress bars")

    def __post_init__(self):  # fails before the minutes of SFT that come before the first TrainConfig
        check_fields(self)


def _eval(
    cfg: DemoConfig, model: str, out: Path, data: dict, label: str, original: str | None = None
) -> dict:
    """`cipo-fast eval` of one model; `original` (the target) scores the outputs' fluency and is the
    membership-inference reference."""
    from cipo_fast.eval.evaluate import EvalConfig, evaluate

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    return evaluate(
        EvalConfig(
            out=str(out),
            model=model,
            forget=str(data["forget"]),
            retain=str(data["retain"]),
            utility=str(data["arithmetic_eval"]),
            holdout=str(data["holdout"]) if "holdout" in data else None,
            original=original,
            samples=cfg.eval_samples,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed,
            system_prompt=SYSTEM_PROMPT,
            label=label,
            overwrite=True,  # an interrupted evaluation (OUT.partial) starts over
            progress=cfg.progress,
        )
    )


def _train_config(cfg: DemoConfig, **over):
    base = dict(
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        system_prompt=SYSTEM_PROMPT,
        checkpoint_every=0,
        keep_checkpoints=1,  # one round checkpoint (weights + optimizer, ~1.6 GB for SmolLM2) is enough
        token_budget=4096,
        max_length=1024,
        progress=cfg.progress,
        scheduler="constant",
        retain_weight=cfg.retain_weight,
    )
    base.update(over)
    return TrainConfig(**base)


def retain_with_arithmetic(data: dict, out: Path) -> Path:
    """The retain set of the unlearning runs: the retained authors plus the arithmetic training problems,
    in the target model's format (CoT, then "The answer is N."), so reasoning is protected too."""
    rows = [row for _, row in read_jsonl(data["retain"])]
    rows += [gsm8k_target(row) for _, row in read_jsonl(data["arithmetic_train"])]
    write_jsonl(out, rows)
    return out


def baseline_data(forget: Path, out: Path) -> dict[str, Path]:
    """Forget-set files for the baselines: singles for GA / NPO; pairs over the gold trace with an
    "I don't know" answer (IDK-DPO) or a reasoned "I don't know" CoT + answer (Reasoned-IDK) as chosen."""
    rows = [row for _, row in read_jsonl(forget)]
    out.mkdir(parents=True, exist_ok=True)
    gold = [{"cot": r["cot"], "answer": r["answer"]} for r in rows]
    files = {
        "singles": [{"prompt": r["question"], "completion": g} for r, g in zip(rows, gold)],
        "idk_pairs": [
            {"prompt": r["question"], "chosen": r["idk_answer"], "rejected": g} for r, g in zip(rows, gold)
        ],
        "reasoned_idk_pairs": [
            {
                "prompt": r["question"],
                "chosen": {"cot": r["idk_cot"], "answer": r["idk_answer"]},
                "rejected": g,
            }
            for r, g in zip(rows, gold)
        ],
    }
    for name, data in files.items():
        write_jsonl(out / f"{name}.jsonl", data)
    return {name: out / f"{name}.jsonl" for name in files}


# name -> (method, data file kind)
BASELINES = {
    "ga": ("ga", "singles"),
    "npo": ("npo", "singles"),
    "idk_dpo": ("dpo", "idk_pairs"),
    "reasoned_idk": ("dpo", "reasoned_idk_pairs"),
}


def compare(cfg: DemoConfig, target: str, data: dict, steps: int, out: Path) -> dict:
    """The baselines with CiPO's budget (same steps, batch, learning rate, retain term); returns
    {name: after-summary}."""
    from cipo_fast.trainers.preference import main as train

    files = baseline_data(data["forget"], out / "data")
    n = len(read_jsonl(data["forget"]))
    results = {}
    for name, (method, kind) in BASELINES.items():
        run = out / name
        if not (run / "summary.json").is_file():
            resume = interrupted(run)
            train(
                _train_config(
                    cfg,
                    method=method,
                    model=target,
                    data=str(files[kind]),
                    retain=str(data["retain_all"]),
                    out=str(run),
                    max_steps=steps,
                    epochs=steps * cfg.batch_size / n,
                    resume=resume,
                    overwrite=not resume,
                )
            )
        results[name] = _eval(cfg, str(run / "model"), out / name / "eval", data, name, original=target)
    return results


def main(cfg: DemoConfig) -> dict:
    from cipo_fast import synthetic
    from cipo_fast.eval import report
    from cipo_fast.trainers.cipo import main as cipo
    from cipo_fast.trainers.finetune import FinetuneConfig
    from cipo_fast.trainers.finetune import main as finetune

    t0 = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and not (out.is_dir() and (run_kind(out) == "demo" or not any(out.iterdir()))):
        raise ValueError(f"--out {out}: exists and is not a cipo-fast demo directory; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MARKER, {"kind": "demo"})
    timings = {}

    def stage(name, fn):
        t = time.perf_counter()
        print(f"== {name}", flush=True)
        result = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return result

    data = stage("data", lambda: synthetic.build(out / "data", seed=cfg.seed))
    data["retain_all"] = retain_with_arithmetic(data, out / "data" / "retain_all.jsonl")
    target = stage(
        "target model",
        lambda: finetune(
            FinetuneConfig(
                model=cfg.model,
                data=(str(data["forget"]), str(data["retain"]), str(data["arithmetic_train"])),
                epochs=cfg.sft_epochs,
                lr=cfg.sft_lr,
                seed=cfg.seed,
                direct_answers=True,
                system_prompt=SYSTEM_PROMPT,
                progress=cfg.progress,
            )
        ),
    )
    before = stage("evaluate target", lambda: _eval(cfg, str(target), out / "before", data, "before"))

    cipo_dir = out / "cipo"

    def run_cipo():
        if (cipo_dir / "summary.json").is_file():
            return json.loads((cipo_dir / "summary.json").read_text())
        resume = interrupted(cipo_dir)
        return cipo(
            _train_config(
                cfg,
                method="cipo",
                model=str(target),
                data=str(data["forget"]),
                retain=str(data["retain_all"]),
                out=str(cipo_dir),
                cipo=CipoConfig(
                    rounds=cfg.rounds,
                    max_pairs_per_item=cfg.max_pairs_per_item,
                    round_epochs=cfg.round_epochs,
                    cf_candidates=cfg.cf_candidates,
                    gen_max_new_tokens=cfg.max_new_tokens,
                ),
                resume=resume,
                overwrite=not resume,
            )
        )

    cipo_summary = stage("CiPO", run_cipo)
    after = stage(
        "evaluate unlearned model",
        lambda: _eval(cfg, str(cipo_dir / "model"), out / "after", data, "after", original=str(target)),
    )
    items = read_log(out / "after" / "items.jsonl")  # written by the evaluation above
    report.render_report(out, after, before=before, items=items)
    print(report.console_table(after, before=before))
    result = {
        "target_model": str(target),
        "cipo_rounds": len(cipo_summary["rounds"]),
        "cipo_train_steps": cipo_summary["train_steps"],
        "timings_s": timings,
    }
    if cfg.compare:
        baselines = stage(
            "baselines",
            lambda: compare(cfg, str(target), data, cipo_summary["train_steps"], out / "baselines"),
        )
        table = {"cipo": after, **baselines}
        result["compare"] = {m: _headline(s) for m, s in table.items()}
        print(compare_table(result["compare"], _headline(before)))
    result["total_s"] = round(time.perf_counter() - t0, 1)
    write_json(out / "demo.json", result)
    print(f"report: {out / 'report.html'}   total {result['total_s']:.0f} s")
    return result


def _headline(summary: dict) -> dict:
    st = summary["strategies"]
    cot = [v["leak_cot"] for v in st.values() if v["leak_cot"] is not None]
    fluency = summary.get("fluency") or {}
    mia = summary.get("mia") or {}

    def auc(part):
        entry = ((mia.get(part) or {}).get("attacks") or {}).get("min_k_plus_plus")
        return None if entry is None else entry["auc"]

    return {
        "max_leak_cot": max(cot) if cot else None,
        "max_leak_answer": max(v["leak_answer"] for v in st.values()),
        "greedy_leak_cot": st["greedy"]["leak_cot"],
        "greedy_leak_answer": st["greedy"]["leak_answer"],
        "mcs": summary["mcs"],
        "retain_accuracy": summary.get("retain", {}).get("accuracy"),
        "arithmetic_accuracy": summary.get("utility", {}).get("accuracy"),
        "greedy_logprob": (fluency.get("greedy") or {}).get("mean_logprob"),
        "retain_logprob": (fluency.get("retain") or {}).get("mean_logprob"),
        "sampled_repetition": (fluency.get("sample_t1.0") or {}).get("repetition_rate"),
        "mia_auc_answer": auc("answer"),
        "mia_auc_cot": auc("cot"),
    }


COLUMNS = {  # key -> (header, format)
    "max_leak_cot": ("worst CoT leak", "pct"),
    "max_leak_answer": ("worst answer leak", "pct"),
    "mcs": ("MCS", "pct"),
    "retain_accuracy": ("retain acc", "pct"),
    "arithmetic_accuracy": ("arithmetic acc", "pct"),
    "greedy_logprob": ("log-prob, forget greedy", "num"),
    "retain_logprob": ("log-prob, retain", "num"),
    "sampled_repetition": ("3-gram rep., T = 1.0", "num"),
    "mia_auc_answer": ("MIA AUC answer", "num"),
    "mia_auc_cot": ("MIA AUC CoT", "num"),
}


def compare_table(rows: dict[str, dict], target: dict) -> str:
    """Markdown table of the methods' headline numbers (log-probs under the target model; MIA: Min-K%++ AUC
    of forget vs holdout authors, 0.5 = indistinguishable from unseen authors)."""
    head = ["method", *(h for h, _ in COLUMNS.values())]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, r in {"target (before)": target, **rows}.items():
        cells = []
        for key, (_, kind) in COLUMNS.items():
            v = r.get(key)
            cells.append("–" if v is None else f"{100 * v:.1f}%" if kind == "pct" else f"{v:.2f}")
        lines.append(" | ".join([name, *cells]))
    return "\n".join(lines)
