"""Training data: the JSONL formats, validated with file:line:field errors, tokenized into sequences.

Formats (one JSON object per line; blank lines are skipped):

* preference: `{"prompt": P, "chosen": C, "rejected": C}`
* single sequence (GA / NPO / SFT / retain): `{"prompt": P, "completion": C, "prefill"?: str}`, or an
  item row `{"question", "answer", "cot"?}` (read as prompt = question, completion = {cot, answer})

where P is a string or a list of chat messages (`{"role", "content"}`), and C is a string, or
`{"cot": ..., "answer": ...}`, rendered through the run's `ReasoningFormat`
(`<think>\\n{cot}\\n</think>\\n\\n{answer}` by default).

Every string field must be real text (no unpaired surrogate escapes such as `"\\ud800"`, which no
tokenizer encodes); every problem is a `ValueError` naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cipo_fast.data.io import read_jsonl
from cipo_fast.data.packing import Sequence
from cipo_fast.data.tokenize import Tokenizer

LOSS_ON = ("all", "cot", "answer")  # which part of a {cot, answer} completion single-sequence losses train on


@dataclass(frozen=True)
class Pair:
    chosen: Sequence
    rejected: Sequence
    source: str  # "file:line"


@dataclass(frozen=True)
class Single:
    seq: Sequence
    source: str


def check_text(value: str, where: str) -> str:
    """`value` if it encodes as UTF-8 (JSON allows escapes of unpaired surrogates, which do not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} holds an unpaired surrogate escape (not text)") from None
    return value


def text_field(obj: dict, key: str, where: str, required: bool = True) -> str:
    """A string field of a row: missing -> "" (or an error when `required`), another type -> an error."""
    value = obj.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: field {key!r} is missing")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return check_text(value, f"{where}: field {key!r}")


def _check_prompt(value, row_where: str) -> None:
    where = f"{row_where}: field 'prompt'"
    if isinstance(value, str):
        if not check_text(value, where).strip():
            raise ValueError(f"{where} is empty")
        return
    if isinstance(value, list) and value:
        for i, m in enumerate(value):
            if not (
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            ):
                raise ValueError(f"{where}: message {i} must be an object with string 'role' and 'content'")
            check_text(m["role"] + m["content"], f"{where}: message {i}")
        return
    raise ValueError(f"{where}: expected a non-empty string or list of chat messages, got {value!r:.80}")


def _render_completion(value, name, row_where: str, tok: Tokenizer) -> str:
    where = f"{row_where}: field {name!r}"
    if isinstance(value, dict):
        missing = [k for k in ("cot", "answer") if not isinstance(value.get(k), str)]
        if missing:
            raise ValueError(
                f"{where}: a structured completion needs string fields 'cot' and 'answer' "
                f"(missing or not a string: {', '.join(missing)})"
            )
        text = tok.reasoning.render(value["cot"].strip(), value["answer"].strip())
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"{where}: expected a string or {{'cot', 'answer'}}, got {type(value).__name__}")
    if not check_text(text, where).strip():
        raise ValueError(f"{where} is empty")
    return text


def _require(obj, names, where: str) -> None:
    for name in names:
        if name not in obj or obj[name] is None:
            raise ValueError(f"{where}: field {name!r} is missing")


def prompt_ids(tok: Tokenizer, prompt, where: str) -> list[int]:
    try:
        return tok.prompt_ids(prompt)
    except ValueError as e:
        raise ValueError(f"{where}: field 'prompt': {e}") from None


def load_pairs(path: str | Path, tok: Tokenizer) -> list[Pair]:
    pairs = []
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        _require(obj, ("prompt", "chosen", "rejected"), where)
        _check_prompt(obj["prompt"], where)
        chosen = _render_completion(obj["chosen"], "chosen", where, tok)
        rejected = _render_completion(obj["rejected"], "rejected", where, tok)
        p = prompt_ids(tok, obj["prompt"], where)
        pairs.append(Pair(tok.sequence(p, chosen, where), tok.sequence(p, rejected, where), where))
    return pairs


def loss_part(value: dict, loss_on: str, tok: Tokenizer) -> tuple[str, str, bool]:
    """(context, trained text, append EOS) of a `{cot, answer}` completion when only one part is trained.

    `answer`: the rendered think block is context (as a prefill) and the answer + EOS is trained;
    `cot`: the think block up to where the answer starts is trained, without EOS (the sequence goes on).
    """
    head = tok.reasoning.think_block(value["cot"].strip())
    if loss_on == "answer":
        return head, value["answer"].strip(), True
    return "", head, False


def load_singles(path: str | Path, tok: Tokenizer, loss_on: str = "all") -> list[Single]:
    """Single sequences of a JSONL file: `{prompt, completion, prefill?}` rows or question/answer(/cot)
    item rows (see `singles`)."""
    return singles([(f"{path}:{lineno}", obj) for lineno, obj in read_jsonl(path)], tok, loss_on)


def singles(rows: list[tuple[str, dict]], tok: Tokenizer, loss_on: str = "all") -> list[Single]:
    """Single sequences from `(where, row)` pairs (`where` = "file:line", for errors).

    An item row becomes prompt = question, completion = {cot, answer} (or the answer alone without a cot).
    `prefill` is text forced at the start of the assistant turn: part of the prompt, so not trained on
    (e.g. the think block for answer-only gradient ascent). `loss_on` ("all" | "cot" | "answer") trains on
    one part of a `{cot, answer}` completion only (`loss_part`); other completions are an error then.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on: expected one of {', '.join(LOSS_ON)}, got {loss_on!r}")
    out = []
    for where, obj in rows:
        if "completion" not in obj and "question" in obj:
            _require(obj, ("answer",), where)
            cot = text_field(obj, "cot", where, required=False)
            answer = obj["answer"]
            completion = {"cot": cot, "answer": answer} if cot.strip() else answer
            obj = {"prompt": obj["question"], "completion": completion}
        _require(obj, ("prompt", "completion"), where)
        _check_prompt(obj["prompt"], where)
        text = _render_completion(obj["completion"], "completion", where, tok)
        prefill, eos = obj.get("prefill"), True
        if prefill is not None:
            prefill = text_field(obj, "prefill", where)
        if loss_on != "all":
            if not isinstance(obj["completion"], dict):
                raise ValueError(
                    f"{where}: field 'completion': --loss-on {loss_on} needs a {{'cot', 'answer'}} "
                    "completion (or an item row with a cot) to tell the chain of thought from the answer"
                )
            context, text, eos = loss_part(obj["completion"], loss_on, tok)
            prefill = (prefill or "") + context
        ids = prompt_ids(tok, obj["prompt"], where)
        if prefill:
            ids = ids + tok.text_ids(prefill)
        out.append(Single(tok.sequence(ids, text, where, eos), where))
    return out


def load_training_data(path: str | Path, tok: Tokenizer, kind: str, loss_on: str = "all") -> list:
    """`Pair`s (`kind` "pairwise") or `Single`s (`kind` "single") from `--data`, whose rows must be of
    that kind."""
    expected = "pairs" if kind == "pairwise" else "singles"
    if sniff_kind(path) != expected:
        raise ValueError(
            f"--data {path}: this method needs "
            f"{'prompt/chosen/rejected' if expected == 'pairs' else 'prompt/completion (or item)'} rows"
        )
    return load_pairs(path, tok) if expected == "pairs" else load_singles(path, tok, loss_on)


def sniff_kind(path: str | Path) -> str:
    """'pairs' or 'singles' from the first row's fields."""
    lineno, first = read_jsonl(path)[0]
    if {"chosen", "rejected"} & first.keys():
        return "pairs"
    if "completion" in first or {"question", "answer"} <= first.keys():
        return "singles"
    raise ValueError(
        f"{path}:{lineno}: expected fields prompt/chosen/rejected (preference data) or "
        f"prompt/completion (single sequences), got {sorted(first)[:10]}"
    )
