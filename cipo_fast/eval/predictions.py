"""Scoring generations made elsewhere (vLLM, another framework): `cipo-fast eval --predictions FILE`.

The file holds JSON lines `{"id", "strategy", "output"}`: `id` is a forget item's id (its `id` field, else
its 0-based row index), `strategy` a decoding strategy name (a known name gets that strategy's prefill
semantics, any other name is scored as a free-CoT strategy), `output` the generated text including any
prefilled think block. Every strategy must cover every item.
"""

from __future__ import annotations

from pathlib import Path

from cipo_fast.data.formats import text_field
from cipo_fast.data.io import read_jsonl
from cipo_fast.data.items import Item
from cipo_fast.data.reasoning import ReasoningFormat
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.eval.metrics import aggregate
from cipo_fast.eval.scoring import score_sample, summarize_forget
from cipo_fast.model.generation import STRATEGY_NAMES, Strategy, make_strategies


def read_predictions(path: str | Path, items: list[Item]) -> dict[str, dict[str, list[str]]]:
    """{strategy: {item id: [outputs]}}; ids must match the items, every strategy must cover them all."""
    path = Path(path)
    known = {it.id for it in items}
    out: dict[str, dict[str, list[str]]] = {}
    unknown = []
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        for key in ("id", "strategy", "output"):
            if key not in obj:
                raise ValueError(f"{where}: field {key!r} is missing")
        if isinstance(obj["id"], (dict, list, bool)) or obj["id"] is None:
            raise ValueError(f"{where}: field 'id' must be a string or a number")
        strategy, output = text_field(obj, "strategy", where), text_field(obj, "output", where)
        pid = str(obj["id"])
        if pid not in known:
            unknown.append((lineno, pid))
            continue
        out.setdefault(strategy, {}).setdefault(pid, []).append(output)
    if unknown:
        shown = ", ".join(f"line {ln}: {pid!r}" for ln, pid in unknown[:5])
        raise ValueError(
            f"{path}: {len(unknown)} prediction id(s) match no item of the forget set ({shown}); ids are "
            "the items' 'id' field, else their 0-based line number"
        )
    for strategy, by_id in out.items():
        missing = sorted(known - by_id.keys())
        if missing:
            raise ValueError(
                f"{path}: strategy {strategy!r} has no prediction for {len(missing)} item(s), e.g. "
                f"{', '.join(repr(m) for m in missing[:5])}"
            )
    return out


def predictions_strategy(name: str, samples: int, reasoning: ReasoningFormat) -> Strategy:
    """A known strategy by name; other names are scored as free-CoT strategies (no prefill)."""
    if name in STRATEGY_NAMES:
        return make_strategies([name], samples, reasoning)[0]
    return Strategy(name)


def evaluate_predictions(
    path, items: list[Item], samples: int, reasoning: ReasoningFormat, judge=None
) -> tuple[dict, list[dict]]:
    """(summary, item rows) of a predictions file against the forget `items`; `judge` (a `LeakJudge` of the
    items) decides leaks, else key-fact spans."""
    preds = read_predictions(path, items)
    strategies = [predictions_strategy(n, samples, reasoning) for n in preds]
    facts = {it.id: item_facts(it) for it in items}
    scored = [
        score_sample(it, facts[it.id], st, o, reasoning, judge)
        for st in strategies
        for it in items
        for o in preds[st.name][it.id]
    ]
    per_strategy, mcs, rows = summarize_forget(items, scored, strategies)
    return aggregate(per_strategy, mcs, {}), rows
