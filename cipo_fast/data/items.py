"""Question/answer items: R-TOFU and TOFU JSON lines, GSM8K, the synthetic set, generic JSONL.

Every loader returns `Item`s with a stable `id` (the row's `id` field, else its 0-based index among the
data rows of the file), the question, the gold answer, the gold CoT when there is one, and the explicit
target facts when the dataset lists them (the synthetic demo set does; R-TOFU does not, and facts are then
extracted from the answer by `cipo_fast.eval.facts.key_facts`).

* R-TOFU / TOFU: `{"task_id"?, "question", "answer", "cot"?}`; `task_ids` selects folds.
* GSM8K: `{"question", "answer": "... #### N"}`; the CoT is the reasoning before `####`, the answer is N
  (`split_gsm8k`, the one parser of that format).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cipo_fast.data.formats import text_field
from cipo_fast.data.io import read_jsonl

GSM8K_MARK = "####"


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str
    cot: str = ""
    facts: tuple[str, ...] | None = None  # explicit target facts, when the dataset lists them


def is_gsm8k(answer: str) -> bool:
    return GSM8K_MARK in answer


def split_gsm8k(answer: str) -> tuple[str, str]:
    """`"reasoning ... #### 1,200"` -> `("reasoning ...", "1,200")`: the text before the last `####` and
    the final answer after it, both stripped (thousands separators kept; see `gsm8k_number`)."""
    if not is_gsm8k(answer):
        raise ValueError(f"a GSM8K answer needs a '{GSM8K_MARK} <number>' final line, got {answer[-80:]!r}")
    cot, _, gold = answer.rpartition(GSM8K_MARK)
    return cot.strip(), gold.strip()


def gsm8k_number(answer: str) -> str:
    """The final answer of a GSM8K answer as a plain number string (`$` and thousands separators dropped)."""
    return split_gsm8k(answer)[1].replace(",", "").replace("$", "")


def gsm8k_target(row: dict) -> dict:
    """A GSM8K row as an item in the target models' format: cot = the reasoning, answer = "The answer is N."
    (so arithmetic is learned and evaluated in the same CoT + answer form as everything else)."""
    cot, gold = split_gsm8k(str(row["answer"]))
    return {**row, "cot": cot, "answer": f"The answer is {gold}."}


def _item_id(obj: dict, key: str, index: int, where: str) -> str:
    value = obj.get(key, index)
    if isinstance(value, (dict, list)) or value is None:
        raise ValueError(f"{where}: field {key!r} must be a string or a number")
    return str(value)


def load_items(
    path: str | Path,
    *,
    task_ids: list[int] | None = None,
    limit: int | None = None,
    require_answer: bool = True,
) -> list[Item]:
    """Question/answer(/cot/facts) items from a JSON-lines file (R-TOFU, TOFU, synthetic, generic)."""
    path = Path(path)
    items = []
    for index, (lineno, obj) in enumerate(read_jsonl(path)):
        where = f"{path}:{lineno}"
        if task_ids is not None:
            task = obj.get("task_id")
            if isinstance(task, bool) or not isinstance(task, (int, str)) or not str(task).strip().isdigit():
                raise ValueError(
                    f"{where}: fold selection needs an integer 'task_id' field, got {task!r:.40}"
                )
            if int(task) not in task_ids:
                continue
        question = text_field(obj, "question", where)
        answer = text_field(obj, "answer", where, required=require_answer)
        if not question.strip():
            raise ValueError(f"{where}: field 'question' is empty")
        facts = obj.get("facts")
        if facts is not None and not (
            isinstance(facts, list) and all(isinstance(x, str) and x.strip() for x in facts)
        ):
            raise ValueError(f"{where}: field 'facts' must be a list of non-empty strings")
        for x in facts or ():
            text_field({"facts": x}, "facts", where)
        items.append(
            Item(
                id=_item_id(obj, "id", index, where),
                question=question,
                answer=answer,
                cot=text_field(obj, "cot", where, required=False),
                facts=tuple(facts) if facts else None,
            )
        )
    if task_ids is not None and not items:
        raise ValueError(f"{path}: no rows with task_id in {sorted(task_ids)}")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{path}: duplicate item id {dup!r}; ids must be unique")
    return items[:limit] if limit else items


def load_gsm8k(path: str | Path, limit: int | None = None) -> list[Item]:
    """GSM8K-format items: answer = the number after `####`, cot = the reasoning before it."""
    path = Path(path)
    items = []
    for index, (lineno, obj) in enumerate(read_jsonl(path)):
        where = f"{path}:{lineno}"
        question = text_field(obj, "question", where)
        full = text_field(obj, "answer", where)
        if not is_gsm8k(full):
            raise ValueError(
                f"{where}: field 'answer' has no '{GSM8K_MARK} <number>' final answer (GSM8K format)"
            )
        cot, _ = split_gsm8k(full)
        items.append(
            Item(id=_item_id(obj, "id", index, where), question=question, answer=gsm8k_number(full), cot=cot)
        )
        if limit and len(items) >= limit:
            break
    return items
