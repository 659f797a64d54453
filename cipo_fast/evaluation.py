"""`cipo-fast eval`: is the target knowledge gone from the CoT and the answer, under every decoding, while
reasoning still works?

For the forget set, every strategy (greedy, sampling at T = 0.7 / 1.0 with k samples, ZeroThink, LessThink)
generates, each output is split into CoT and answer, and each part is checked for the item's key facts
(`leakage.find_leaks`), ROUGE-L recall against the gold answer / gold CoT, step-wise leakage and, when the
MiniLM package is installed, embedding cosine to the gold answer. Definitions:

* per sample: `leak_cot` / `leak_answer` = some key fact appears in that part; `leak_any` = either.
  Under ZeroThink / LessThink the think block is fixed by the prompt, so their CoT metrics are null.
* per item and strategy: the mean over the strategy's samples (0/1 for greedy).
* per strategy (summary): the mean over items.
* MCS (multi-decoding consistency): the share of forget items with no leaking sample under any strategy.
* forget efficacy: harmonic mean, under greedy, of 1 - answer leak, 1 - CoT leak, 1 - answer ROUGE-L,
  1 - CoT ROUGE-L (vs the gold CoT when the set has one).
* accuracy on retain / real-authors / world-facts sets (greedy): the fraction of an item's key facts found in
  the answer, averaged over items; utility (GSM8K-style) accuracy: the answer's final number equals the gold.
* model utility: harmonic mean of the accuracies of the retain, real-authors, world-facts and utility sets
  that were given.

The CiPO loop calls `sample_forget` and `score_sample` directly: the same code decides what leaks during
training and during evaluation. `--predictions` scores generations produced elsewhere (e.g. by vLLM).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import harmonic_mean, mean

from cipo_fast import leakage, textmetrics
from cipo_fast.datasets import Item, load_gsm8k, load_items
from cipo_fast.files import write_json, write_jsonl
from cipo_fast.generation import STRATEGY_NAMES, GenConfig, Strategy, generate, generate_many, make_strategies


@dataclass(frozen=True)
class EvalConfig:
    out: str
    forget: str | None = None
    model: str | None = None
    model_before: str | None = None
    retain: str | None = None
    utility: str | None = None
    real_authors: str | None = None
    world_facts: str | None = None
    predictions: str | None = None
    strategies: tuple[str, ...] = STRATEGY_NAMES
    samples: int = 2
    limit: int | None = None
    utility_limit: int | None = 100
    task_ids: tuple[int, ...] | None = None
    max_new_tokens: int = 256
    batch_size: int = 128  # rows (prompts x samples, all strategies) per generation batch
    seed: int = 0
    prompt_format: str = "auto"
    system_prompt: str | None = None
    open_tag: str = "<think>"
    close_tag: str = "</think>"
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False
    label: str | None = None
    progress: bool = True

    def __post_init__(self):
        if not self.forget:
            raise ValueError("--forget: a forget set is required")
        if (self.model is None) == (self.predictions is None):
            raise ValueError(
                "give exactly one of --model (generate) or --predictions (score existing outputs)"
            )
        if self.predictions and self.model_before:
            raise ValueError(
                "--model-before needs --model (it generates); with --predictions score each file separately"
            )
        make_strategies(self.strategies, self.samples, self.open_tag, self.close_tag)  # validates names
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit: expected >= 1, got {self.limit}")


# ----------------------------------------------------------------------------------------------------
# scoring one output
# ----------------------------------------------------------------------------------------------------


@dataclass
class Scored:
    """One generated output of a forget item under one strategy, scored."""

    item_id: str
    strategy: str
    output: str
    cot: str
    answer: str
    closed: bool
    leaked_cot: list[str]
    leaked_answer: list[str]
    free_cot: bool
    rouge_answer: float
    rouge_cot: float | None
    stepwise_cot: float | None

    @property
    def leak_cot(self) -> bool:
        return bool(self.leaked_cot) and self.free_cot

    @property
    def leak_answer(self) -> bool:
        return bool(self.leaked_answer)

    @property
    def leaks(self) -> bool:
        return self.leak_cot or self.leak_answer


def item_facts(item: Item) -> list[leakage.Fact]:
    return leakage.key_facts(item.question, item.answer, list(item.facts) if item.facts else None)


def score_sample(
    item: Item, facts, strategy: Strategy, output: str, open_tag="<think>", close_tag="</think>"
):
    parts = leakage.split_reasoning(output, open_tag, close_tag)
    free = strategy.has_free_cot
    cot = parts.cot if free else ""
    return Scored(
        item_id=item.id,
        strategy=strategy.name,
        output=output,
        cot=parts.cot,
        answer=parts.answer,
        closed=parts.closed,
        leaked_cot=leakage.find_leaks(cot, facts) if free else [],
        leaked_answer=leakage.find_leaks(parts.answer, facts),
        free_cot=free,
        rouge_answer=textmetrics.rouge_l_recall(parts.answer, item.answer),
        rouge_cot=textmetrics.rouge_l_recall(cot, item.cot or item.answer) if free else None,
        stepwise_cot=leakage.stepwise_leakage(cot, facts) if free else None,
    )


# ----------------------------------------------------------------------------------------------------
# generation + scoring of item sets
# ----------------------------------------------------------------------------------------------------


def prompts_for(items: list[Item], tok) -> list[str]:
    """`tok` is a `data.Tokenizer` (chat template or raw, as the run is configured)."""
    return [tok.prompt_text(it.question) for it in items]


def sample_forget(
    model,
    tok,
    items: list[Item],
    strategies: list[Strategy],
    gen: GenConfig,
    open_tag="<think>",
    close_tag="</think>",
    progress: bool = False,
) -> list[Scored]:
    """Generate every strategy's samples for every forget item and score them (used by eval and CiPO)."""
    prompts = prompts_for(items, tok)
    facts = [item_facts(it) for it in items]
    out = []
    texts = generate_many(
        model,
        tok.tok,
        [(prompts, st) for st in strategies],
        gen,
        chat=tok.chat,
        progress="forget samples" if progress else None,
    )
    for st, job in zip(strategies, texts):
        for it, f, outs in zip(items, facts, job):
            out.extend(score_sample(it, f, st, o, open_tag, close_tag) for o in outs)
    return out


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def summarize_forget(items: list[Item], scored: list[Scored], strategies: list[Strategy]):
    """Per-strategy rates, MCS and per-item rows (the items.jsonl content)."""
    by = {(s.item_id, s.strategy): [] for s in scored}
    for s in scored:
        by[(s.item_id, s.strategy)].append(s)
    rows, per_strategy = [], {}
    for st in strategies:
        item_rows = []
        for it in items:
            ss = by.get((it.id, st.name), [])
            if not ss:
                continue
            item_rows.append(
                {
                    "set": "forget",
                    "id": it.id,
                    "strategy": st.name,
                    "samples": len(ss),
                    "leak_cot": mean(s.leak_cot for s in ss) if st.has_free_cot else None,
                    "leak_answer": mean(s.leak_answer for s in ss),
                    "leak_any": mean(s.leaks for s in ss),
                    "leaked_cot": sorted({x for s in ss for x in s.leaked_cot}),
                    "leaked_answer": sorted({x for s in ss for x in s.leaked_answer}),
                    "rouge_answer": mean(s.rouge_answer for s in ss),
                    "rouge_cot": _mean_or_none([s.rouge_cot for s in ss]),
                    "stepwise_cot": _mean_or_none([s.stepwise_cot for s in ss]),
                    "unclosed_think": sum(not s.closed for s in ss),
                    "outputs": [s.output for s in ss],
                }
            )
        rows.extend(item_rows)
        per_strategy[st.name] = {
            "leak_cot": _mean_or_none([r["leak_cot"] for r in item_rows]),
            "leak_answer": _mean_or_none([r["leak_answer"] for r in item_rows]),
            "leak_any": _mean_or_none([r["leak_any"] for r in item_rows]),
            "rouge_answer": _mean_or_none([r["rouge_answer"] for r in item_rows]),
            "rouge_cot": _mean_or_none([r["rouge_cot"] for r in item_rows]),
            "stepwise_cot": _mean_or_none([r["stepwise_cot"] for r in item_rows]),
            "n_items": len(item_rows),
            "samples": st.samples,
            "free_cot": st.has_free_cot,
        }
    leaking = {s.item_id for s in scored if s.leaks}
    mcs = 1.0 - len(leaking & {it.id for it in items}) / len(items) if items else None
    return per_strategy, mcs, rows


def fact_recall(item: Item, answer: str) -> float:
    facts = item_facts(item)
    if not facts:
        return float(textmetrics.rouge_l_recall(answer, item.answer) >= 0.5)
    return len(leakage.find_leaks(answer, facts)) / len(facts)


def accuracy_set(model, tok, items: list[Item], gen: GenConfig, kind: str, cfg: EvalConfig, progress=None):
    """Greedy answers of a retain-like (`facts`) or GSM8K-like (`number`) set: (metrics, rows)."""
    greedy = make_strategies(["greedy"], 1, cfg.open_tag, cfg.close_tag)[0]
    texts = generate(model, tok.tok, prompts_for(items, tok), greedy, gen, chat=tok.chat, progress=progress)
    rows = []
    for it, (text,) in zip(items, texts):
        parts = leakage.split_reasoning(text, cfg.open_tag, cfg.close_tag)
        answer = parts.answer if parts.answer.strip() else text
        if kind == "number":
            pred = textmetrics.extract_final_number(answer)
            score = float(textmetrics.numbers_match(pred, it.answer))
            rows.append({"id": it.id, "correct": score, "pred": pred, "gold": it.answer, "output": text})
        else:
            score = fact_recall(it, answer)
            rows.append(
                {
                    "id": it.id,
                    "accuracy": score,
                    "rouge_answer": textmetrics.rouge_l_recall(answer, it.answer),
                    "output": text,
                }
            )
    acc = mean(r.get("correct", r.get("accuracy")) for r in rows)
    metrics = {"accuracy": acc, "n_items": len(rows)}
    if kind == "facts":
        metrics["rouge_answer"] = mean(r["rouge_answer"] for r in rows)
    return metrics, rows


def aggregate(per_strategy: dict, mcs, extra: dict) -> dict:
    g = per_strategy.get("greedy") or next(iter(per_strategy.values()))
    parts = [1 - g["leak_answer"], 1 - g["rouge_answer"]]
    if g["leak_cot"] is not None:
        parts += [1 - g["leak_cot"], 1 - g["rouge_cot"]]
    utility_parts = [
        extra[k]["accuracy"] for k in ("retain", "real_authors", "world_facts", "utility") if k in extra
    ]
    return {
        "strategies": per_strategy,
        "mcs": mcs,
        "forget_efficacy": harmonic_mean(parts) if all(p >= 0 for p in parts) else None,
        "model_utility": harmonic_mean(utility_parts) if utility_parts else None,
        **extra,
    }


# ----------------------------------------------------------------------------------------------------
# predictions files (generations produced elsewhere)
# ----------------------------------------------------------------------------------------------------


def read_predictions(path: str | Path, items: list[Item]) -> dict[str, dict[str, list[str]]]:
    """{strategy: {item id: [outputs]}} from JSON lines `{"id", "strategy", "output"}`; ids must match."""
    path = Path(path)
    known = {it.id for it in items}
    out: dict[str, dict[str, list[str]]] = {}
    if not path.is_file():
        raise ValueError(f"--predictions {path}: no such file")
    unknown = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            for key in ("id", "strategy", "output"):
                if key not in obj:
                    raise ValueError(f"{path}:{lineno}: field {key!r} is missing")
            if not isinstance(obj["output"], str):
                raise ValueError(f"{path}:{lineno}: field 'output' must be a string")
            pid = str(obj["id"])
            if pid not in known:
                unknown.append((lineno, pid))
                continue
            out.setdefault(str(obj["strategy"]), {}).setdefault(pid, []).append(obj["output"])
    if unknown:
        shown = ", ".join(f"line {ln}: {pid!r}" for ln, pid in unknown[:5])
        raise ValueError(
            f"{path}: {len(unknown)} prediction id(s) match no item of the forget set ({shown}); ids are "
            "the items' 'id' field, else their 0-based line number"
        )
    if not out:
        raise ValueError(f"{path}: the file has no predictions")
    for strategy, by_id in out.items():
        missing = sorted(known - by_id.keys())
        if missing:
            raise ValueError(
                f"{path}: strategy {strategy!r} has no prediction for {len(missing)} item(s), e.g. "
                f"{', '.join(repr(m) for m in missing[:5])}"
            )
    return out


def predictions_strategy(name: str, cfg: EvalConfig) -> Strategy:
    """A known strategy by name; other names are scored as free-CoT strategies (no prefill)."""
    if name in STRATEGY_NAMES:
        return make_strategies([name], cfg.samples, cfg.open_tag, cfg.close_tag)[0]
    return Strategy(name)


# ----------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------


def _write_outputs(out: Path, summary: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "items.jsonl", rows)
    write_json(out / "summary.json", summary)


def load_sets(cfg: EvalConfig) -> dict[str, list[Item]]:
    """Every item set of the run, loaded (and validated) before any model is loaded."""
    sets = {
        "forget": load_items(
            cfg.forget, task_ids=list(cfg.task_ids) if cfg.task_ids else None, limit=cfg.limit
        )
    }
    if not any(it.facts or it.answer.strip() for it in sets["forget"]):
        raise ValueError(f"--forget {cfg.forget}: no item has an answer; leakage needs the gold answers")
    for key, path in (
        ("retain", cfg.retain),
        ("real_authors", cfg.real_authors),
        ("world_facts", cfg.world_facts),
    ):
        if path:
            sets[key] = load_items(path, limit=cfg.limit)
    if cfg.utility:
        sets["utility"] = load_gsm8k(cfg.utility, limit=cfg.utility_limit)
    return sets


def evaluate_model(model, tok, sets: dict[str, list[Item]], cfg: EvalConfig) -> tuple[dict, list[dict]]:
    """Generate and score every set with a loaded model; returns (summary, item rows)."""
    t0 = time.perf_counter()
    strategies = make_strategies(cfg.strategies, cfg.samples, cfg.open_tag, cfg.close_tag)
    gen = GenConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed)
    scored = sample_forget(
        model, tok, sets["forget"], strategies, gen, cfg.open_tag, cfg.close_tag, cfg.progress
    )
    per_strategy, mcs, rows = summarize_forget(sets["forget"], scored, strategies)
    extra = {}
    for key in ("retain", "real_authors", "world_facts", "utility"):
        if key in sets:
            kind = "number" if key == "utility" else "facts"
            metrics, set_rows = accuracy_set(
                model, tok, sets[key], gen, kind, cfg, progress=key if cfg.progress else None
            )
            extra[key] = metrics
            rows.extend({"set": key, **r} for r in set_rows)
    _add_cosine(sets["forget"], rows)
    summary = aggregate(per_strategy, mcs, extra)
    summary["timing"] = {"seconds": round(time.perf_counter() - t0, 1)}
    return summary, rows


def _add_cosine(items: list[Item], rows: list[dict]) -> None:
    """Embedding cosine of each forget answer to the gold answer, when the MiniLM package is installed."""
    if not textmetrics.Embedder.available():
        return
    emb = textmetrics.Embedder()
    gold = {it.id: it.answer for it in items}
    for r in rows:
        if r.get("set") == "forget" and r.get("outputs"):
            answers = [leakage.split_reasoning(o).answer for o in r["outputs"]]
            r["cosine_answer"] = mean(emb.cosine(a, gold[r["id"]]) if a.strip() else 0.0 for a in answers)


def evaluate_predictions(cfg: EvalConfig, sets) -> tuple[dict, list[dict]]:
    preds = read_predictions(cfg.predictions, sets["forget"])
    strategies = [predictions_strategy(n, cfg) for n in preds]
    facts = {it.id: item_facts(it) for it in sets["forget"]}
    scored = [
        score_sample(it, facts[it.id], st, o, cfg.open_tag, cfg.close_tag)
        for st in strategies
        for it in sets["forget"]
        for o in preds[st.name][it.id]
    ]
    per_strategy, mcs, rows = summarize_forget(sets["forget"], scored, strategies)
    return aggregate(per_strategy, mcs, {}), rows


def main(cfg: EvalConfig) -> dict:
    """Run the evaluation; writes summary.json, items.jsonl, report.html (and before/ when comparing)."""
    from cipo_fast import report
    from cipo_fast.data import TextFormat, Tokenizer
    from cipo_fast.modeling import ModelOptions, load_model, quiet_transformers

    quiet_transformers()
    sets = load_sets(cfg)  # bad input fails here, before anything is loaded or written
    out = Path(cfg.out)
    if cfg.predictions:
        summary, rows = evaluate_predictions(cfg, sets)
        summary.update(model=None, predictions=cfg.predictions, label=cfg.label, config=asdict(cfg))
        _write_outputs(out, summary, rows)
        report.render_report(out, summary, items=rows)
        print(report.console_table(summary))
        return summary

    def run(source: str, label: str, where: Path) -> tuple[dict, list[dict]]:
        model, hf_tok = load_model(
            source, ModelOptions(dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
        )
        tok = Tokenizer(hf_tok, TextFormat(prompt_format=cfg.prompt_format, system_prompt=cfg.system_prompt))
        summary, rows = evaluate_model(model, tok, sets, cfg)
        summary.update(model=source, label=label, config=asdict(cfg))
        _write_outputs(where, summary, rows)
        return summary, rows

    before = run(cfg.model_before, "before", out / "before")[0] if cfg.model_before else None
    summary, rows = run(cfg.model, cfg.label or ("after" if before else "model"), out)
    report.render_report(out, summary, before=before, items=rows)
    print(report.console_table(summary, before=before))
    return summary
