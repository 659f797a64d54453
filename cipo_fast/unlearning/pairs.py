"""CiPO's preference pairs: leaking outputs of the policy (rejected) against counterfactual traces (chosen).

* `build_pairs` turns a round's leaking samples into pair rows (the `pairs.jsonl` of a round), preferring
  each leaking trace's own *redirect* (see `counterfactual.redirect_trace`);
* `tokenize_pairs` turns rows back into tokenized `Pair`s under the item's question prompt (+ prefill), so
  a resumed run rebuilds its earlier rounds' pairs from the files;
* `pair_kind` names what a pair trains (its prefill, a redirect, or a whole own counterfactual trace), which
  is what its retain mirror must match (`mirrors`);
* `load_seeds` / `load_alternatives` read the optional seed traces and alternative answers.
"""

from __future__ import annotations

from pathlib import Path

from cipo_fast.data.formats import Pair, text_field
from cipo_fast.data.io import read_jsonl
from cipo_fast.data.items import Item
from cipo_fast.data.tokenize import Tokenizer
from cipo_fast.unlearning.counterfactual import TEMPLATE_ANSWER, CounterfactualConfig, redirect_trace

OWN = "own_trace"  # kind of the forget pairs whose chosen is a whole counterfactual trace, not a redirect


def load_seeds(path: str, items: list[Item]) -> dict[str, list[tuple[str, str]]]:
    """Seed chosen traces: JSONL `{id, cot, answer}`, item rows with `idk_cot`/`idk_answer`, or JSON strings
    (R-TOFU's idkcot.jsonl: line i seeds the item with id `i`, with the template uncertain answer)."""
    ids = {it.id for it in items}
    out: dict[str, list[tuple[str, str]]] = {}
    for idx, (lineno, obj) in enumerate(read_jsonl(path, objects=False)):
        where = f"{path}:{lineno}"
        if isinstance(obj, str):
            key, cot, answer = str(idx), text_field({"cot": obj}, "cot", where), TEMPLATE_ANSWER
        elif isinstance(obj, dict) and "idk_cot" in obj:
            key = _key(obj, idx, where)
            cot = text_field(obj, "idk_cot", where)
            answer = text_field(obj, "idk_answer", where, required=False) or TEMPLATE_ANSWER
        elif isinstance(obj, dict) and {"cot", "answer"} <= obj.keys():
            key, cot, answer = (
                _key(obj, idx, where),
                text_field(obj, "cot", where),
                text_field(obj, "answer", where),
            )
        else:
            raise ValueError(f"{where}: expected a JSON string, {{id, cot, answer}} or an item with idk_cot")
        if key in ids:
            out.setdefault(key, []).append((cot, answer))
    return out


def _key(obj: dict, idx: int, where: str) -> str:
    value = obj.get("id", idx)
    if isinstance(value, (dict, list)) or value is None:
        raise ValueError(f"{where}: field 'id' must be a string or a number")
    return str(value)


def load_alternatives(path: str) -> dict[str, str]:
    """`{id, alternative}` rows: the counterfactual answer per forget item for `--cf-target alternative`."""
    out = {}
    for idx, (lineno, obj) in enumerate(read_jsonl(path)):
        where = f"{path}:{lineno}"
        alternative = text_field(obj, "alternative", where)
        if not alternative.strip():
            raise ValueError(f"{where}: field 'alternative' is empty")
        out[_key(obj, idx, where)] = alternative
    return out


def build_pairs(
    leaking,
    items: dict,
    facts: dict,
    chosen: dict,
    strategies,
    reasoning,
    max_pairs_per_item: int,
    cf_cfg: CounterfactualConfig,
    alternatives: dict | None = None,
    judge=None,
) -> list[dict]:
    """(chosen, rejected) texts, built only from leaking outputs.

    * Every distinct leaking output with a free CoT is paired with its own redirect (shared leak-free
      prefix, then a knowledge-boundary turn; `judge` decides where the first leak is); if the redirect
      fails the filter, with one of the item's counterfactual traces.
    * Outputs of a strategy with a prefill (ZeroThink, LessThink) were generated after a forced think
      block: their pair is conditioned on it (`prefill`, part of the prompt) and compares answers only.
    * Each item whose counterfactual traces came from the policy or a seed also gets one pair of such a
      whole trace against its first leaking output, so the policy's own counterfactual reasoning is learned.
    At most `max_pairs_per_item` pairs per item.
    """
    prefills = {st.name: st.prefill for st in strategies}
    alt = alternatives or {}
    pairs, per_item, seen = [], {}, set()

    def add(s, chosen_text, source, prefill=""):
        if per_item.get(s.item_id, 0) >= max_pairs_per_item:
            return
        per_item[s.item_id] = per_item.get(s.item_id, 0) + 1
        pairs.append(
            {
                "id": s.item_id,
                "strategy": s.strategy,
                "prefill": prefill,
                "chosen": chosen_text,
                "rejected": s.output[len(prefill) :],
                "chosen_source": source,
                "leaked": sorted(set(s.leaked_cot + s.leaked_answer)),
            }
        )

    for k, s in enumerate(leaking):
        if (s.item_id, s.output) in seen:
            continue
        seen.add((s.item_id, s.output))
        item, prefill = items[s.item_id], prefills.get(s.strategy, "")
        if prefill:
            answer = alt.get(s.item_id) if cf_cfg.target == "alternative" else TEMPLATE_ANSWER
            add(s, answer, "answer", prefill)
            continue
        c = redirect_trace(item, s.cot, facts[s.item_id], k, cf_cfg, alt.get(s.item_id), judge)
        if c is None and chosen.get(s.item_id):
            c = chosen[s.item_id][k % len(chosen[s.item_id])]
        if c is not None:
            add(s, reasoning.render(c.cot, c.answer), c.source)
    for item_id, cs in chosen.items():
        own = [c for c in cs if c.source != "template"]
        first = next((s for s in leaking if s.item_id == item_id and not prefills.get(s.strategy)), None)
        if own and first is not None:
            add(first, reasoning.render(own[0].cot, own[0].answer), own[0].source)
    return pairs


def tokenize_pairs(rows: list[dict], items: list[Item], tok: Tokenizer, source: Path) -> list[Pair]:
    """Pair rows (as written to pairs.jsonl) -> tokenized pairs under the item's question prompt (+ prefill)."""
    by_id = {it.id: it for it in items}
    pairs = []
    for k, pr in enumerate(rows):
        where = f"{source}:{k + 1}"
        if pr.get("id") not in by_id:
            raise ValueError(f"{where}: pair of item {pr.get('id')!r}, which the forget set does not have")
        p_ids = tok.prompt_ids(by_id[pr["id"]].question)
        if pr["prefill"]:
            p_ids = p_ids + tok.text_ids(pr["prefill"])
        pairs.append(
            Pair(tok.sequence(p_ids, pr["chosen"], where), tok.sequence(p_ids, pr["rejected"], where), where)
        )
    return pairs


def pair_kind(row: dict) -> str:
    """The mirror kind of a pair row: its prefill (answer-only pairs), "" (a redirect of the rejected
    trace), or `OWN` (a whole counterfactual trace written apart from the rejected one)."""
    if row["prefill"]:
        return row["prefill"]
    return "" if row["chosen_source"] == "redirect" else OWN


def source_counts(rows: list[dict]) -> dict[str, int]:
    """How many of a round's pairs took their chosen side from each source (redirect, boundary, ...)."""
    out: dict[str, int] = {}
    for row in rows:
        out[row["chosen_source"]] = out.get(row["chosen_source"], 0) + 1
    return out
