"""Evaluation / unlearning item sets: R-TOFU and TOFU JSON lines, GSM8K, generic JSONL with field mapping.

Every loader returns `Item`s with a stable `id` (the row's `id` field, else its 0-based line number among
the data rows of the file), the question, the gold answer, the gold CoT when there is one, and the explicit
target facts when the dataset lists them (the synthetic demo set does; R-TOFU does not, and facts are then
extracted from the answer by `leakage.key_facts`).

* R-TOFU / TOFU: `{"task_id"?, "question", "answer", "cot"?}`; `task_ids` selects folds.
* GSM8K: `{"question", "answer": "... #### N"}`; the CoT is the reasoning before `####`, the answer is N.
* generic: any JSONL; `fields` maps our names to the file's (e.g. `{"question": "prompt", "answer": "gold"}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str
    cot: str = ""
    facts: tuple[str, ...] | None = None  # explicit target facts, when the dataset lists them


def _rows(path: Path) -> list[tuple[int, int, dict]]:
    """(line number, data-row index, object) for the non-blank lines of a JSON-lines file."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: malformed JSON ({e.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            out.append((lineno, len(out), obj))
    if not out:
        raise ValueError(f"{path}: the file has no data rows")
    return out


def _text(obj: dict, key: str, path: Path, lineno: int, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ValueError(f"{path}:{lineno}: field {key!r} is missing")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{path}:{lineno}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def load_items(
    path: str | Path,
    *,
    task_ids: list[int] | None = None,
    fields: dict[str, str] | None = None,
    limit: int | None = None,
    require_answer: bool = True,
) -> list[Item]:
    """Question/answer(/cot/facts) items from a JSON-lines file (R-TOFU, TOFU, synthetic, generic)."""
    path = Path(path)
    f = {
        "id": "id",
        "question": "question",
        "answer": "answer",
        "cot": "cot",
        "facts": "facts",
        **(fields or {}),
    }
    items = []
    for lineno, idx, obj in _rows(path):
        if task_ids is not None:
            if "task_id" not in obj:
                raise ValueError(f"{path}:{lineno}: fold selection needs a 'task_id' field")
            if int(obj["task_id"]) not in task_ids:
                continue
        question = _text(obj, f["question"], path, lineno)
        answer = _text(obj, f["answer"], path, lineno, required=require_answer)
        if not question.strip():
            raise ValueError(f"{path}:{lineno}: field {f['question']!r} is empty")
        facts = obj.get(f["facts"])
        if facts is not None and not (
            isinstance(facts, list) and all(isinstance(x, str) and x for x in facts)
        ):
            raise ValueError(f"{path}:{lineno}: field {f['facts']!r} must be a list of non-empty strings")
        items.append(
            Item(
                id=str(obj.get(f["id"], idx)),
                question=question,
                answer=answer,
                cot=_text(obj, f["cot"], path, lineno, required=False),
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
    for lineno, idx, obj in _rows(path):
        question = _text(obj, "question", path, lineno)
        full = _text(obj, "answer", path, lineno)
        if "####" not in full:
            raise ValueError(
                f"{path}:{lineno}: field 'answer' has no '#### <number>' final answer (GSM8K format)"
            )
        cot, _, gold = full.rpartition("####")
        items.append(
            Item(
                id=str(obj.get("id", idx)),
                question=question,
                answer=gold.strip().replace(",", ""),
                cot=cot.strip(),
            )
        )
        if limit and len(items) >= limit:
            break
    return items


def parse_fields(spec: str | None) -> dict[str, str] | None:
    """`question=prompt,answer=gold` -> {"question": "prompt", "answer": "gold"}."""
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        ours, sep, theirs = part.partition("=")
        if not sep or ours.strip() not in ("id", "question", "answer", "cot", "facts") or not theirs.strip():
            raise ValueError(
                f"--fields: expected name=column pairs with names id/question/answer/cot/facts, got {part!r}"
            )
        out[ours.strip()] = theirs.strip()
    return out
