"""`cipo-fast eval`: is the target knowledge gone from the CoT and the answer, under every decoding, while
reasoning still works?

    sets      forget items (+ retain, real-authors, world-facts, GSM8K-style utility), validated first
    generate  every strategy's samples for the forget set (greedy, sampling at T = 0.7 / 1.0 with k samples,
              ZeroThink, LessThink: `cipo_fast.model.generation`), greedy answers for the other sets;
              `--guard star|guard` steers every generation (`cipo_fast.unlearning.guards`)
    score     leakage in CoT and answer, ROUGE-L, step-wise leakage, accuracies (`scoring`), embedding
              cosine of each forget answer to the gold answer when the MiniLM package is installed;
              aggregates (`metrics`)
    write     `items.jsonl`, `summary.json`, `report.html` (+ `before/` with `--model-before`), built in
              `OUT.partial` and moved into place at the end (`cipo_fast.train.run_dir`)

`--predictions FILE` scores generations made elsewhere instead of generating (`predictions`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean
from typing import Literal

from cipo_fast.data.io import write_json, write_jsonl
from cipo_fast.data.items import Item, load_gsm8k, load_items
from cipo_fast.data.reasoning import THINK_CLOSE, THINK_OPEN, ReasoningFormat
from cipo_fast.eval.embedder import Embedder
from cipo_fast.eval.fluency import fluency
from cipo_fast.eval.judge import JudgeConfig, LeakJudge
from cipo_fast.eval.metrics import aggregate
from cipo_fast.eval.mia import membership_inference, privleak
from cipo_fast.eval.rtofu import rtofu_summary
from cipo_fast.eval.scoring import generate_sets, score_accuracy, score_forget, summarize_forget
from cipo_fast.model.generation import STRATEGY_NAMES, GenConfig, make_strategies
from cipo_fast.options import check_fields, opt
from cipo_fast.train.precision import autocast_dtype, precision_tag
from cipo_fast.train.run_dir import RunDir
from cipo_fast.unlearning.guards import GUARD_NAMES, build_guard

ACCURACY_SETS = ("retain", "real_authors", "world_facts", "utility")


@dataclass(frozen=True)
class EvalConfig:
    """`cipo-fast eval`."""

    _argument_group_name = "evaluation"

    out: str = opt(help="output directory (built in OUT.partial, moved into place at the end)")
    forget: str = opt(help="forget items (R-TOFU / TOFU / synthetic JSON lines)")
    model: str | None = opt(None, "model to evaluate (HF directory, hub name, .gguf, smollm2-135m)")
    model_before: str | None = opt(None, "a second model (e.g. before unlearning) for a before/after report")
    original: str | None = opt(
        None,
        "the model before unlearning, only to score fluency and as the MIA reference (default: --model-before)",
    )
    predictions: str | None = opt(None, "JSONL {id, strategy, output}: score generations made elsewhere")
    retain: str | None = opt(None, "retain items (key-fact accuracy)")
    utility: str | None = opt(None, "GSM8K-format JSONL (reasoning accuracy)")
    real_authors: str | None = opt(None, "R-TOFU real_authors set (key-fact accuracy)")
    world_facts: str | None = opt(None, "R-TOFU world_facts set (key-fact accuracy)")
    holdout: str | None = opt(
        None, "items the model never trained on: membership inference, forget vs holdout"
    )
    task_ids: tuple[int, ...] | None = opt(None, "R-TOFU folds to select from --forget, e.g. 1 or 1 2")
    strategies: tuple[str, ...] = opt(STRATEGY_NAMES, "decoding strategies", choices=STRATEGY_NAMES)
    samples: int = opt(2, "samples per sampling strategy", ge=1)
    limit: int | None = opt(None, "items per set", ge=1)
    utility_limit: int | None = opt(100, "items of the utility set", ge=1)
    max_new_tokens: int = opt(256, "new tokens per generation", ge=1)
    batch_size: int = opt(128, "rows (prompts x samples, all strategies) per generation batch", ge=1)
    seed: int = opt(0, "sampling seed")
    guard: Literal["none", "star", "guard"] = opt(
        "none",
        "inference-time unlearning guard on every generation, weights untouched: STaR (arXiv 2601.09281) "
        "or GUARD (arXiv 2505.13312); see cipo_fast.unlearning.guards",
        choices=GUARD_NAMES,
    )
    judge: Literal["meaning", "spans"] = opt(
        "meaning", "leak judge: key-fact spans or restated facts (meaning), or spans only (the earlier judge)"
    )
    fluency: bool = opt(
        True, "fluency of the outputs: repetition, token entropy, log-prob under the original model"
    )
    mia_k: float = opt(0.4, "Min-K% / Min-K%++ share of tokens (open-unlearning's default 0.4)", gt=0, le=1)
    prompt_format: str = opt(
        "auto", "auto | chat | raw (see cipo-fast train --help)", choices=("auto", "chat", "raw")
    )
    system_prompt: str | None = opt(None, "system message added to chat prompts")
    think_open: str = opt(THINK_OPEN, "tag that opens the think block")
    think_close: str = opt(THINK_CLOSE, "tag that closes the think block")
    device: str = opt("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    dtype: str = opt("float32", "parameter dtype", choices=("float32", "bfloat16", "float16"))
    cpu_autocast: str = opt(
        "off",
        "fp32 weights on the CPU: decode under bf16 autocast (bf16; auto = when the CPU has bf16 units); "
        "log-prob scoring stays fp32",
        choices=("auto", "bf16", "off"),
    )
    trust_remote_code: bool = opt(False, "allow models that ship their own code")
    label: str | None = opt(None, "label of the evaluated model in the report")
    overwrite: bool = opt(False, "replace an earlier evaluation in --out")
    progress: bool = opt(True, "progress bars")

    def __post_init__(self):
        for name in ("strategies", "task_ids"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        check_fields(self)
        if (self.model is None) == (self.predictions is None):
            raise ValueError(
                "give exactly one of --model (generate) or --predictions (score existing outputs)"
            )
        if self.predictions and self.guard != "none":
            raise ValueError("--guard needs --model (it steers generation); --predictions only scores")
        if self.predictions and self.model_before:
            raise ValueError(
                "--model-before needs --model (it generates); with --predictions score each file separately"
            )
        self.reasoning  # noqa: B018 -- validates the tags

    @property
    def reasoning(self) -> ReasoningFormat:
        return ReasoningFormat(self.think_open, self.think_close)


def load_sets(cfg: EvalConfig) -> dict[str, list[Item]]:
    """Every item set of the run, loaded (and validated) before any model is loaded."""
    task_ids = list(cfg.task_ids) if cfg.task_ids else None
    sets = {"forget": load_items(cfg.forget, task_ids=task_ids, limit=cfg.limit)}
    if not any(it.facts or it.answer.strip() for it in sets["forget"]):
        raise ValueError(f"--forget {cfg.forget}: no item has an answer; leakage needs the gold answers")
    for key in ("retain", "real_authors", "world_facts", "holdout"):
        if path := getattr(cfg, key):
            sets[key] = load_items(path, limit=cfg.limit)
    if cfg.utility:
        sets["utility"] = load_gsm8k(cfg.utility, limit=cfg.utility_limit)
    return sets


def make_judge(sets: dict[str, list[Item]], cfg: EvalConfig) -> LeakJudge:
    """The leak judge of the forget set; the other sets' facts serve as its alternatives."""
    pool = [it for key in ("retain", "real_authors", "world_facts", "holdout") for it in sets.get(key, [])]
    return LeakJudge(sets["forget"], JudgeConfig(semantic=cfg.judge == "meaning"), pool_items=pool)


def evaluate_model(
    model, tok, sets: dict[str, list[Item]], cfg: EvalConfig, judge: LeakJudge, original=None
) -> tuple[dict, list[dict]]:
    """Generate and score every set with a loaded model; returns (summary, item rows). `original` (the
    model before unlearning, when known) scores the outputs' fluency and is the reference of membership
    inference; without it the model scores its own outputs."""
    t0, judged = time.perf_counter(), judge.seconds
    strategies = make_strategies(cfg.strategies, cfg.samples, tok.reasoning)
    device = next(model.parameters()).device
    autocast = autocast_dtype(cfg, device) if device.type == "cpu" else None  # CUDA: the model's dtype
    gen = GenConfig(cfg.max_new_tokens, cfg.batch_size, cfg.seed, autocast)
    embed = judge.embed if Embedder.available() else None  # the guard shares the judge's embeddings
    guard = build_guard(cfg.guard, sets["forget"], model, tok.tok, tok.reasoning, embed)
    generated = [k for k in ("forget", *ACCURACY_SETS) if k in sets]  # not the holdout: MIA scores it
    generation_s: dict[str, float] = {}
    texts = generate_sets(
        model,
        tok,
        {k: sets[k] for k in generated},
        strategies,
        gen,
        cfg.progress,
        guard,
        seconds=generation_s,
    )
    scored = score_forget(sets["forget"], strategies, texts["forget"], tok.reasoning, judge)
    per_strategy, mcs, rows = summarize_forget(sets["forget"], scored, strategies)
    extra = {}
    for key in generated[1:]:
        kind = "number" if key == "utility" else "facts"
        (job,) = texts[key]
        extra[key], set_rows = score_accuracy(sets[key], job, kind, tok.reasoning)
        rows.extend({"set": key, **r} for r in set_rows)
    embedder = judge.embedder() if Embedder.available() else None
    add_cosine(sets["forget"], rows, tok.reasoning, embedder)
    summary = aggregate(per_strategy, mcs, extra)
    if guard is not None:  # which guard ran, its time, and how many questions of each set it steered
        asked = ["forget", *ACCURACY_SETS]
        summary["guard"] = guard.summary({k: [it.question for it in sets[k]] for k in asked if k in sets})
    if cfg.fluency:
        summary["fluency"] = add_fluency(original or model, tok, sets, rows, strategies)
    summary["rtofu"] = rtofu_summary(sets, rows, tok.reasoning, tok.tok, embedder)
    if "holdout" in sets:
        summary["mia"] = membership_inference(
            model, tok, sets["forget"], sets["holdout"], reference_model=original, k=cfg.mia_k
        )
        for part in ("answer", "cot"):  # open-unlearning's privleak with no retain model: reference AUC 0.5
            for entry in summary["mia"].get(part, {}).get("attacks", {}).values():
                entry["privleak"] = privleak(entry["auc"], 0.5)
    summary["decoding_precision"] = precision_tag(autocast)
    summary["timing"] = {
        "seconds": round(time.perf_counter() - t0, 1),
        "judge_s": round(judge.seconds - judged, 1),
        "generation_s": generation_s,  # each set's decoding, the forget set's strategies together
    }
    return summary, rows


def add_cosine(items: list[Item], rows: list[dict], reasoning: ReasoningFormat, embedder) -> None:
    """Embedding cosine of each forget answer to the gold answer, when an embedder is available."""
    if embedder is None:
        return
    gold = {it.id: it.answer for it in items}
    for r in rows:
        if r.get("set") == "forget" and r.get("outputs"):
            answers = [reasoning.split(o).answer for o in r["outputs"]]
            r["cosine_answer"] = mean(
                _cosine(embedder, a, gold[r["id"]]) if a.strip() else 0.0 for a in answers
            )


def _cosine(embedder, a: str, b: str) -> float:
    ea, eb = embedder.embed([a, b])
    return float(ea @ eb)


def add_fluency(scorer, tok, sets, rows: list[dict], strategies) -> dict:
    """Fluency of every forget output and retain answer (`fluency.fluency`, log-probs under `scorer`):
    per strategy and for the retain set, the means; per row, the per-output values."""
    by_id = {name: {it.id: it for it in items} for name, items in sets.items()}
    prefills = {st.name: st.prefill for st in strategies}
    jobs = []  # (row, prompt ids with the strategy's prefill, generated text)
    for r in rows:
        if r.get("set") == "forget":
            prompt = tok.prompt_ids(by_id["forget"][r["id"]].question)
            pre = prefills.get(r["strategy"], "")
            ids = prompt + tok.text_ids(pre) if pre else prompt
            jobs += [(r, ids, o[len(pre) :]) for o in r["outputs"]]
        elif r.get("set") == "retain":
            jobs.append((r, tok.prompt_ids(by_id["retain"][r["id"]].question), r["output"]))
    if not jobs:
        return {}
    scores = fluency(scorer, tok, [p for _, p, _ in jobs], [t for _, _, t in jobs])
    groups: dict[str, list[dict]] = {}
    for (r, _, _), sc in zip(jobs, scores):
        r.setdefault("fluency", []).append(sc)
        groups.setdefault(r["strategy"] if r["set"] == "forget" else "retain", []).append(sc)
    return {
        g: {k: _mean_or_none([x[k] for x in v]) for k in ("repetition_rate", "token_entropy", "mean_logprob")}
        for g, v in groups.items()
    }


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def _write_outputs(where: Path, summary: dict, rows: list[dict]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    write_jsonl(where / "items.jsonl", rows)
    write_json(where / "summary.json", summary)


def main(cfg: EvalConfig) -> dict:
    """Run the evaluation; writes summary.json, items.jsonl, report.html (and before/ when comparing)."""
    from cipo_fast.data.tokenize import TextFormat, Tokenizer
    from cipo_fast.eval import report
    from cipo_fast.eval.predictions import evaluate_predictions
    from cipo_fast.model.loading import ModelOptions, load_model, quiet_transformers, resolve_device
    from cipo_fast.model.sources import resolve_source

    quiet_transformers()
    sets = load_sets(cfg)  # bad input fails here, before anything is loaded or written
    run = RunDir.plan(cfg.out, "eval", overwrite=cfg.overwrite)
    if cfg.predictions:
        summary, rows = evaluate_predictions(
            cfg.predictions, sets["forget"], cfg.samples, cfg.reasoning, make_judge(sets, cfg)
        )
        summary.update(model=None, predictions=cfg.predictions, label=cfg.label, config=asdict(cfg))
        work = run.start()
        _write_outputs(work, summary, rows)
        report.render_report(work, summary, items=rows)
        run.finish()
        print(report.console_table(summary))
        return summary
    resolve_device(cfg.device)
    for source in (cfg.model_before, cfg.original, cfg.model):
        if source:
            resolve_source(source)  # a missing directory fails before any generation
    work = None

    def evaluate_source(source: str, label: str, sub: str) -> tuple[dict, list[dict]]:
        nonlocal work, original
        model, hf_tok = load_model(
            source, ModelOptions(dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
        )
        fmt = TextFormat(
            prompt_format=cfg.prompt_format, reasoning=cfg.reasoning, system_prompt=cfg.system_prompt
        )
        summary, rows = evaluate_model(model, Tokenizer(hf_tok, fmt), sets, cfg, judge, original)
        summary.update(model=source, label=label, config=asdict(cfg))
        if sub == "before" and original is None:
            original = model
        work = work or run.start()
        _write_outputs(work / sub if sub else work, summary, rows)
        return summary, rows

    judge = make_judge(sets, cfg)
    original = None  # the model before unlearning: scores fluency and is the MIA reference
    if cfg.original:
        original = load_model(
            cfg.original,
            ModelOptions(dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code),
        )[0]
    before = evaluate_source(cfg.model_before, "before", "before")[0] if cfg.model_before else None
    summary, rows = evaluate_source(cfg.model, cfg.label or ("after" if before else "model"), "")
    report.render_report(work, summary, before=before, items=rows)
    run.finish()
    print(report.console_table(summary, before=before))
    return summary


evaluate = main
