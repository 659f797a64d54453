"""`cipo-fast demo`: the whole mission end to end on a CPU, with a real model and data made on the spot.

    data      synthetic fictitious authors (forget: 2 authors, retain: 6) + small arithmetic problems
    target    SmolLM2-135M-Instruct fine-tuned on all of it (cached: later runs reuse it)
    before    evaluation of the target: leakage under every decoding strategy, retain / arithmetic accuracy
    cipo      CiPO rounds on the forget authors, retain NLL on the others
    after     the same evaluation of the unlearned model
    unseen    target and unlearned model asked the forget facts in the question templates never trained on
              (`cipo_fast.eval.other_questions`): forgetting beyond the training prompts
    report    runs/demo/report.html (before vs after), runs/demo/{before,after}/summary.json

With `--compare`, every method of `cipo_fast.comparison` (CiPO as published, R-TOFU's GA / IDK grid, NPO,
the IDK DPO forms, TRU, R²MU, the STaR and GUARD guards) trains on CiPO's target, retain set, batch size and
step count at each learning rate of its sweep, evaluated the same way; each method's best setting is
reported with the sweep beside it (`--compare-at METHOD=LR`: that setting only, as bench/seeds.py uses it).
Every stage writes its outputs atomically and is skipped when they already exist, so an interrupted demo
continues where it stopped (CiPO itself resumes at its last round boundary).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from cipo_fast.comparison import METHODS as COMPARED
from cipo_fast.config import CipoConfig, R2muConfig, TrainConfig
from cipo_fast.data.io import read_jsonl, read_log, write_json, write_jsonl
from cipo_fast.data.items import gsm8k_target
from cipo_fast.model.generation import STRATEGY_NAMES
from cipo_fast.options import check_fields, opt
from cipo_fast.train.run_dir import MARKER, interrupted, read_marker, run_kind

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
    eval_strategies: tuple[str, ...] = opt(
        STRATEGY_NAMES,
        "decoding strategies of every evaluation (worst leaks: over these)",
        choices=STRATEGY_NAMES,
    )
    compare: bool = opt(False, "also run the other methods with CiPO's budget, a learning-rate sweep each")
    compare_methods: tuple[str, ...] = opt(
        tuple(COMPARED), "methods of --compare (cipo_fast.comparison)", choices=tuple(COMPARED)
    )
    compare_steps: int | None = opt(
        None, "optimizer steps of every compared method (default: as many as the CiPO run took)", ge=1
    )
    compare_at: tuple[str, ...] = opt(
        (),
        "only these settings of --compare's methods, METHOD=LR each (e.g. ga=0.0003); a method not named "
        "runs its whole sweep",
    )
    compare_record: str | None = opt(
        None,
        "JSON file that keeps each compared setting's results across run directories and checkouts "
        "(cipo_fast.comparison_record); settings it holds for the same target weights are not rerun",
    )
    cpu_autocast: str = opt(
        "off",
        "precision on the CPU of every stage (the target's SFT -- another cached target --, CiPO, the compared "
        "methods, the evaluations' decoding): bf16 autocast, auto = when the CPU has bf16 units, off = fp32",
        choices=("auto", "bf16", "off"),
    )
    until: str | None = opt(
        None,
        "stop after this stage: target = the target's SFT and its evaluation (does it memorise the forget "
        "set?) before the hours of unlearning",
        choices=("target",),
    )
    progress: bool = opt(True, "progress bars")

    def __post_init__(self):  # fails before the minutes of SFT that come before the first TrainConfig
        object.__setattr__(self, "compare_methods", tuple(self.compare_methods))
        object.__setattr__(self, "compare_at", tuple(self.compare_at))
        object.__setattr__(self, "eval_strategies", tuple(self.eval_strategies))
        check_fields(self)
        pinned_lrs(self)


def pinned_lrs(cfg: DemoConfig) -> dict[str, float]:
    """`--compare-at`'s {method: lr}; a ValueError names the entry that is not METHOD=LR of a trained
    method of `--compare-methods`."""
    pinned = {}
    for entry in cfg.compare_at:
        name, _, lr = entry.partition("=")
        try:
            value = float(lr)
        except ValueError:
            value = float("nan")
        if name not in cfg.compare_methods or COMPARED[name].method is None or not value > 0:
            raise ValueError(
                f"--compare-at {entry!r}: expected METHOD=LR with LR > 0 and METHOD a trained method of "
                f"--compare-methods ({', '.join(m for m in cfg.compare_methods if COMPARED[m].method)})"
            )
        pinned[name] = value
    return pinned


def eval_config(
    cfg: DemoConfig,
    model: str,
    out: Path,
    data: dict,
    label: str,
    original: str | None = None,
    guard: str = "none",
):
    """The `cipo-fast eval` settings of one model; `original` (the target) scores the outputs' fluency and
    is the membership-inference reference. The R-TOFU utility sets are scored when `data` has them."""
    from cipo_fast.eval.evaluate import EvalConfig

    optional = {k: str(data[k]) for k in ("holdout", "real_authors", "world_facts") if k in data}
    return EvalConfig(
        out=str(out),
        model=model,
        forget=str(data["forget"]),
        retain=str(data["retain"]),
        utility=str(data["arithmetic_eval"]),
        original=original,
        guard=guard,
        samples=cfg.eval_samples,
        strategies=cfg.eval_strategies,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        system_prompt=SYSTEM_PROMPT,
        cpu_autocast=cfg.cpu_autocast,
        label=label,
        overwrite=True,  # an interrupted evaluation (OUT.partial) starts over
        progress=cfg.progress,
        **optional,
    )


def eval_once(cfg: DemoConfig, model: str, out: Path, data: dict, label: str, **kw) -> dict:
    """`cipo-fast eval` of one model (`eval_config`), or the summary it already wrote."""
    from cipo_fast.eval.evaluate import evaluate

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    return evaluate(eval_config(cfg, model, out, data, label, **kw))


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
        cpu_autocast=cfg.cpu_autocast,
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


def compare(
    cfg: DemoConfig, target: str, data: dict, steps: int, out: Path, cipo_after: dict, record=None
) -> dict:
    """Each method `--compare-methods` names at each rate of its sweep with CiPO's budget (steps, batch,
    retain set), the guards on the target; CiPO at `--lr` is the demo's run (`cipo_after`). Returns {method:
    {setting: headline}} (with `wall_s`: training + evaluation); runs are kept and reused, and a setting
    `record` (`comparison_record.CompareRecord`) holds for this target or a sibling is taken from it."""
    from cipo_fast import fit
    from cipo_fast.comparison import headline, sweep_settings
    from cipo_fast.comparison_record import fingerprint, weights_digest
    from cipo_fast.unlearning.baselines import BaselineDataConfig, build

    files = build(
        BaselineDataConfig(
            forget=str(data["forget"]), out=str(out / "data"), seeds=str(data.get("seeds", data["forget"]))
        )
    )
    files["items"] = Path(data["forget"])
    n = len(read_jsonl(data["forget"]))
    results: dict[str, dict] = {}
    digest = weights_digest(target)
    pinned = pinned_lrs(cfg)

    def keep(name, key, row, fp):
        results[name][key] = row
        if record is not None:
            record.put(name, key, row, fingerprint=fp)

    for name in cfg.compare_methods:
        spec = COMPARED[name]
        results[name] = {}
        lrs = sweep_settings(spec, cfg.lr)
        if name in pinned:
            lrs = {f"lr={pinned[name]:g}": pinned[name]}
        for key, lr in lrs.items():
            if name == "cipo" and lr == cfg.lr:  # the demo's own CiPO run
                keep(name, key, headline(cipo_after), None)
                continue
            run = out / name / (key if spec.method else "eval")
            evaluation = dict(original=target, guard=spec.guard)
            train = None
            if spec.method is not None:
                common = dict(model=target, out=str(run), max_steps=steps)
                train = method_config(cfg, spec, files, data, lr, steps * cfg.batch_size / n, **common)
            made = {"train": train, "eval": eval_config(cfg, target, run, data, name, **evaluation)}

            def fp_on(weights, made=made):  # the setting's fingerprint on a target of these weights
                return fingerprint(made, {"target": weights})

            fp = fp_on(digest)
            if record is not None and (row := record.get(name, key, fp_on)) is not None:
                results[name][key] = row
                continue
            _forget_stale(run, fp)
            t = time.perf_counter()
            if spec.method is None:  # a guard: the target, decoded under it
                summary = eval_once(cfg, target, run, data, name, **evaluation)
                keep(name, key, headline(timed(out / name, summary, t)), fp)
                continue
            if not (run / "summary.json").is_file():
                resume = interrupted(run)
                fit(dataclasses.replace(train, resume=resume, overwrite=not resume))
            summary = eval_once(cfg, str(run / "model"), run / "eval", data, f"{name} {key}", **evaluation)
            keep(name, key, headline(timed(run, summary, t)), fp)
    return results


def _forget_stale(run: Path, fp: str) -> None:
    """Remove a setting's run (and its interrupted work) made with other settings or data than `fp`; mark
    the run directory's place with `fp` (`<run>.setting`) before it is made again."""
    import shutil

    from cipo_fast.train.run_dir import partial_of

    mark = run.parent / f"{run.name}.setting"
    if mark.is_file():  # no mark: a run from before the marks, taken as made by these settings
        if mark.read_text().strip() == fp:
            return
        for path in (run, partial_of(run)):
            if path.exists():
                shutil.rmtree(path)
        (run.parent / "wall.json").unlink(missing_ok=True)  # a guard's wall time
    run.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(fp + "\n")


def method_config(cfg: DemoConfig, spec, files: dict, data: dict, lr: float, epochs: float, **common):
    """The `TrainConfig` of one compared setting. R²MU takes its own learning rate and batch options,
    preserves the activations of the demo's arithmetic training problems (its reasoning data) and sets its
    steering coefficient from the model's activations (`--r2mu-adaptive-scale`)."""
    if spec.method == "r2mu":
        return TrainConfig(
            method="r2mu",
            data=str(data["forget"]),
            retain=str(data["retain"]),
            seed=cfg.seed,
            system_prompt=SYSTEM_PROMPT,
            checkpoint_every=0,
            keep_checkpoints=1,
            max_length=1024,
            progress=cfg.progress,
            scheduler="constant",
            # c from the model's own activation scale (Adaptive RMU, β = 5 of its code): the paper's c = 6.5
            # was set for 7-14B models; the demo target's layer-7 outputs have per-token norms of ~130
            r2mu=R2muConfig(
                r2mu_lr=lr,
                r2mu_cot_data=str(data["arithmetic_train"]),
                r2mu_adaptive_scale=5.0,
                **spec.options,
            ),
            **common,
        )
    over = dict(spec.options)
    cipo = {k: over.pop(k) for k in list(over) if k in CipoConfig.__dataclass_fields__}
    return _train_config(
        cfg,
        method=spec.method,
        data=str(files[spec.data]),
        retain=str(data["retain_all"]),
        lr=lr,
        epochs=epochs,
        cipo=_cipo_config(cfg, CipoConfig(**cipo)),
        **over,
        **common,
    )


def timed(run: Path, summary: dict, t0: float) -> dict:
    """`summary` with the setting's wall time, measured once (a rerun that reuses it keeps the first)."""
    path = run / "wall.json"
    if not path.is_file():
        write_json(path, {"wall_s": round(time.perf_counter() - t0, 1)})
    return {**summary, "wall_s": json.loads(path.read_text())["wall_s"]}


def cipo_wall(out: Path) -> float:
    """The demo's CiPO run's wall time (training + its evaluation), as `compare` reports for each setting:
    cipo/wall.json, written by the run that trained it; else (a run directory from before it was kept)
    the rounds' and the evaluation's own timings, without model loading."""
    path = out / "cipo" / "wall.json"
    if not path.is_file():
        rounds = json.loads((out / "cipo" / "summary.json").read_text())["rounds"]
        evaluation = json.loads((out / "after" / "summary.json").read_text()).get("timing", {})
        wall = sum(r.get("seconds") or 0.0 for r in rounds) + (evaluation.get("seconds") or 0.0)
        write_json(path, {"wall_s": round(wall, 1)})
    return json.loads(path.read_text())["wall_s"]


def _cipo_config(cfg: DemoConfig, base: CipoConfig | None = None) -> CipoConfig:
    """The demo's CiPO settings (rounds, pairs, epochs, candidates, generation length) over `base`'s."""
    return dataclasses.replace(
        base or CipoConfig(),
        rounds=cfg.rounds,
        max_pairs_per_item=cfg.max_pairs_per_item,
        round_epochs=cfg.round_epochs,
        cf_candidates=cfg.cf_candidates,
        gen_max_new_tokens=cfg.max_new_tokens,
    )


def target_model(cfg: DemoConfig, data: dict) -> Path:
    """The target: `cfg.model` fine-tuned on the forget, retain and arithmetic training sets (`cipo-fast
    finetune`, cached by the content of its inputs and settings)."""
    from cipo_fast.trainers.finetune import FinetuneConfig
    from cipo_fast.trainers.finetune import main as finetune

    return finetune(
        FinetuneConfig(
            model=cfg.model,
            data=(str(data["forget"]), str(data["retain"]), str(data["arithmetic_train"])),
            epochs=cfg.sft_epochs,
            lr=cfg.sft_lr,
            seed=cfg.seed,
            direct_answers=True,
            system_prompt=SYSTEM_PROMPT,
            cpu_autocast=cfg.cpu_autocast,
            progress=cfg.progress,
        )
    )


def main(cfg: DemoConfig, build_data=None) -> dict:
    """The demo's stages (module docstring). `build_data(folder) -> {name: path}` replaces the synthetic
    set (`synthetic.build`'s names; optional "real_authors", "world_facts", "seeds"): the R-TOFU benchmark
    (bench/rtofu.py) runs the same stages on R-TOFU's files."""
    from cipo_fast import fit, synthetic
    from cipo_fast.eval import report

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

    data = stage("data", lambda: (build_data or (lambda d: synthetic.build(d, seed=cfg.seed)))(out / "data"))
    data["retain_all"] = retain_with_arithmetic(data, out / "data" / "retain_all.jsonl")
    target = stage("target model", lambda: target_model(cfg, data))
    before = stage("evaluate target", lambda: eval_once(cfg, str(target), out / "before", data, "before"))
    if cfg.until == "target":
        return {
            "data": {k: str(v) for k, v in data.items()},
            "target_model": str(target),
            "timings_s": timings,
        }

    cipo_dir = out / "cipo"

    def run_cipo():
        if (cipo_dir / "summary.json").is_file():
            return json.loads((cipo_dir / "summary.json").read_text())
        resume = interrupted(cipo_dir)
        return fit(
            _train_config(
                cfg,
                method="cipo",
                model=str(target),
                data=str(data["forget"]),
                retain=str(data["retain_all"]),
                out=str(cipo_dir),
                cipo=_cipo_config(cfg),
                resume=resume,
                overwrite=not resume,
            )
        )

    ran_cipo = not (cipo_dir / "summary.json").is_file()
    cipo_summary = stage("CiPO", run_cipo)
    after = stage(
        "evaluate unlearned model",
        lambda: eval_once(cfg, str(cipo_dir / "model"), out / "after", data, "after", original=str(target)),
    )
    if ran_cipo:
        write_json(cipo_dir / "wall.json", {"wall_s": timings["CiPO"] + timings["evaluate unlearned model"]})
    items = read_log(out / "after" / "items.jsonl")  # written by the evaluation above
    report.render_report(out, after, before=before, items=items)
    print(report.console_table(after, before=before))
    result = {
        "data": {k: str(v) for k, v in data.items()},
        "target_model": str(target),
        "cipo_rounds": len(cipo_summary["rounds"]),
        "cipo_train_steps": cipo_summary["train_steps"],
        "timings_s": timings,
    }
    if "forget_rephrased" in data:  # forgetting beyond the questions trained on
        from cipo_fast.comparison import headline
        from cipo_fast.eval.other_questions import leakage_on, phrasings_table

        def rephrased(model, name, label):
            return leakage_on(eval_config(cfg, model, out / name, data, label), data["forget_rephrased"])

        unseen = stage(
            "unseen phrasings",
            lambda: {
                "target": rephrased(str(target), "before_rephrased", "before"),
                "cipo": rephrased(str(cipo_dir / "model"), "after_rephrased", "after"),
            },
        )
        result["unseen_phrasings"] = unseen
        rows = {"target": (headline(before), unseen["target"]), "CiPO": (headline(after), unseen["cipo"])}
        print(phrasings_table(rows))
    if cfg.compare:
        from cipo_fast.comparison import compare_table, headline, summarize_sweep, sweep_table
        from cipo_fast.comparison_record import CompareRecord, weights_digest

        record = None
        if cfg.compare_record:
            recipe = read_marker(Path(target).parent).get("key")  # the target's cache key
            record = CompareRecord(cfg.compare_record, weights_digest(target), recipe=recipe)
            if record.siblings():
                print(
                    f"--compare-record: settings missing for this target are taken from "
                    f"{len(record.siblings())} other target(s) of its recipe {recipe} on this host type"
                )
            if len(record.others()) > len(record.siblings()):
                print(
                    f"--compare-record: {len(record.others()) - len(record.siblings())} other target(s) in "
                    "the file are left alone"
                )
            record.put_target(headline(before))
        cipo_after = {**after, "wall_s": cipo_wall(out)}
        steps = cfg.compare_steps or cipo_summary["train_steps"]
        if steps < 1:
            raise ValueError(
                "--compare: the CiPO run took no optimizer step (the target leaked nothing to unlearn), so "
                "the comparison has no step budget; pass --compare-steps"
            )
        runs = stage(
            "compare",
            lambda: compare(cfg, str(target), data, steps, out / "compare", cipo_after, record),
        )
        result["compare"] = summarize_sweep(runs, headline(before))
        print(compare_table(result["compare"], headline(before)))
        print(sweep_table(result["compare"]))
    result["total_s"] = round(time.perf_counter() - t0, 1)
    write_json(out / "demo.json", result)
    print(f"report: {out / 'report.html'}   total {result['total_s']:.0f} s")
    return result
