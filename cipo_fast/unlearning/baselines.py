"""Forget-set files of R-TOFU's baseline grid and of TRU, built from forget items.

R-TOFU (Yoon et al., 2025; its `scripts/tofu/unlearn.sh` and `dataset/data_module.py`) compares, each
with the retain set as regularizer:

    method          what it trains                                   cipo-fast
    GA1 / GA2 / GA3 gradient ascent on CoT + answer / answer / CoT   --method ga --data forget.jsonl
                                                                     --loss-on all | answer | cot
    + GD / + KL     retain NLL / KL to the initial model             --retain R [--retain-loss kl]
    IDK1 Direct     think block and answer both one "I don't know"   --method sft --data direct_idk.jsonl
    IDK2 Answer     gold CoT kept as context, IDK answer trained     --method sft --data answer_idk.jsonl
                                                                     --loss-on answer
    IDK3 Reasoned   a reasoned refusal CoT, then an IDK answer       --method sft --data reasoned_idk.jsonl

The DPO forms (chosen: the IDK completion, rejected: the gold trace) are `*_idk_pairs.jsonl`. TRU (Liao et
al., ICLR 2026) trains pairs whose chosen side is a reasoning-based target (a trace explaining why the
question is out of scope, then an explainable refusal) and whose rejected side is the gold trace
(`tru_pairs.jsonl`, `--method tru`). Reasoned refusals come, per item, from a seeds file (R-TOFU's
`idkcot.jsonl`, items with `idk_cot`, or `{id, cot, answer}` rows; `cipo_fast.unlearning.pairs.load_seeds`),
else from the model itself (CiPO's knowledge-boundary counterfactuals, filtered for leaks), else from a
template. The "I don't know" answers rotate over `IDK_ANSWERS` (R-TOFU draws from its own list at random).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cipo_fast.data.io import write_jsonl
from cipo_fast.data.items import Item, load_items
from cipo_fast.options import check_fields, opt

IDK_ANSWERS = (
    "I'm not sure about that.",
    "I don't know the answer to that.",
    "I can't say; I have no reliable information about this.",
    "That is not something I know.",
    "I'm afraid I don't have that information.",
)


@dataclass(frozen=True)
class Refusal:
    """A reasoned refusal for one item: the CoT and the answer, and where they came from."""

    cot: str
    answer: str
    source: str  # seed | boundary | alt_path | template


def idk_answer(index: int) -> str:
    return IDK_ANSWERS[index % len(IDK_ANSWERS)]


def _gold(it: Item) -> dict:
    return {"cot": it.cot, "answer": it.answer}


def baseline_rows(items: list[Item], refusals: dict[str, Refusal]) -> dict[str, list[dict]]:
    """Every data file of the grid, by name, as rows of the training formats (`prompt` + `completion` for
    single sequences, `prompt` + `chosen` + `rejected` for pairs; completions are `{cot, answer}`)."""
    missing = [it.id for it in items if not it.cot]
    if missing:
        raise ValueError(
            f"items without a gold CoT ({', '.join(missing[:5])}): the grid trains on CoT + answer"
        )
    lacking = [it.id for it in items if it.id not in refusals]
    if lacking:
        raise ValueError(f"no reasoned refusal for items {', '.join(lacking[:5])}")
    singles, direct, answer, reasoned, direct_pairs, reasoned_pairs, tru = ([] for _ in range(7))
    for k, it in enumerate(items):
        idk, ref, gold = idk_answer(k), refusals[it.id], _gold(it)
        q = it.question
        singles.append({"id": it.id, "prompt": q, "completion": gold})
        direct.append({"id": it.id, "prompt": q, "completion": {"cot": idk, "answer": idk}})
        answer.append({"id": it.id, "prompt": q, "completion": {"cot": it.cot, "answer": idk}})
        reasoned.append({"id": it.id, "prompt": q, "completion": {"cot": ref.cot, "answer": idk}})
        direct_pairs.append(
            {"id": it.id, "prompt": q, "chosen": {"cot": idk, "answer": idk}, "rejected": gold}
        )
        reasoned_pairs.append(
            {"id": it.id, "prompt": q, "chosen": {"cot": ref.cot, "answer": idk}, "rejected": gold}
        )
        tru.append(
            {"id": it.id, "prompt": q, "chosen": {"cot": ref.cot, "answer": ref.answer}, "rejected": gold}
        )
    return {
        "forget": singles,
        "direct_idk": direct,
        "answer_idk": answer,
        "reasoned_idk": reasoned,
        "direct_idk_pairs": direct_pairs,
        "reasoned_idk_pairs": reasoned_pairs,
        "tru_pairs": tru,
    }


def refusals_for(items: list[Item], seeds: dict | None = None, generated: dict | None = None) -> dict:
    """One reasoned refusal per item: its first seed, else its first generated counterfactual (a
    `cipo_fast.unlearning.counterfactual.Chosen` list per id), else a template trace."""
    from cipo_fast.unlearning.counterfactual import template_trace

    out = {}
    for k, it in enumerate(items):
        if (seeds or {}).get(it.id):
            cot, answer = seeds[it.id][0]
            out[it.id] = Refusal(cot.strip(), answer.strip(), "seed")
        elif (generated or {}).get(it.id):
            c = generated[it.id][0]
            out[it.id] = Refusal(c.cot, c.answer, c.source)
        else:
            c = template_trace(it, k)
            out[it.id] = Refusal(c.cot, c.answer, "template")
    return out


@dataclass(frozen=True)
class BaselineDataConfig:
    """`cipo-fast baseline-data`: the forget-set files of R-TOFU's baselines and TRU."""

    _argument_group_name = "baseline data"

    forget: str = opt(help="forget items with a gold CoT (R-TOFU / TOFU / synthetic JSON lines)")
    out: str = opt(help="folder for the data files (created; files in it are replaced)")
    task_ids: tuple[int, ...] | None = opt(None, "R-TOFU folds to select from --forget, e.g. 1")
    seeds: str | None = opt(
        None, "reasoned refusals: idkcot.jsonl strings, items with idk_cot, or JSONL {id, cot, answer}"
    )
    model: str | None = opt(
        None, "generate reasoned refusals the seeds lack with this model (CiPO's knowledge-boundary prompt)"
    )
    seed: int = opt(0, "sampling seed of generated refusals")

    def __post_init__(self):
        if self.task_ids is not None:
            object.__setattr__(self, "task_ids", tuple(self.task_ids))
        check_fields(self)


def build(cfg: BaselineDataConfig) -> dict[str, Path]:
    """Write every file of `baseline_rows` to `cfg.out` (each atomically) and `refusals.jsonl` (what each
    reasoned refusal is and where it came from); returns the paths by name."""
    from cipo_fast.unlearning.pairs import load_seeds

    items = load_items(cfg.forget, task_ids=list(cfg.task_ids) if cfg.task_ids else None)
    seeds = load_seeds(cfg.seeds, items) if cfg.seeds else {}
    generated = _generate(cfg, [it for it in items if it.id not in seeds]) if cfg.model else {}
    refusals = refusals_for(items, seeds, generated)
    files = baseline_rows(items, refusals)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in files.items():
        paths[name] = out / f"{name}.jsonl"
        write_jsonl(paths[name], rows)
    write_jsonl(out / "refusals.jsonl", [{"id": i, **vars(r)} for i, r in refusals.items()])
    return paths


def _generate(cfg: BaselineDataConfig, items: list[Item]) -> dict:
    """Knowledge-boundary counterfactuals of `items` from `cfg.model`, filtered for leaks of the items'
    facts (the meaning-aware judge when its embedder is available)."""
    if not items:
        return {}
    from cipo_fast.data.tokenize import Tokenizer
    from cipo_fast.eval.judge import LeakJudge
    from cipo_fast.eval.key_facts import item_facts
    from cipo_fast.model.generation import GenConfig
    from cipo_fast.model.loading import ModelOptions, load_model
    from cipo_fast.unlearning.counterfactual import CounterfactualConfig, generate_counterfactuals

    model, tokenizer = load_model(cfg.model, ModelOptions())
    tok = Tokenizer(tokenizer)
    facts = {it.id: item_facts(it) for it in items}
    return generate_counterfactuals(
        model,
        tok,
        items,
        facts,
        CounterfactualConfig(use_template_fallback=False),
        GenConfig(seed=cfg.seed),
        judge=LeakJudge(items),
    )
