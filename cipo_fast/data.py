"""Training data: JSONL formats, validation with file:line:field errors, and tokenization.

Formats (one JSON object per line; blank lines are skipped):

* preference: `{"prompt": P, "chosen": C, "rejected": C}`
* single sequence (GA / NPO / SFT / retain): `{"prompt": P, "completion": C, "prefill"?: str}`, or an
  item row `{"question", "answer", "cot"?}` (read as prompt = question, completion = {cot, answer})

where P is a string or a list of chat messages (`{"role", "content"}`), and C is a string, or
`{"cot": ..., "answer": ...}`, rendered through the reasoning template (default
`<think>\\n{cot}\\n</think>\\n\\n{answer}`).

Tokenization (DESIGN.md §3): prompt and completion are tokenized separately and concatenated, so the
completion boundary is exact; the completion gets the tokenizer's EOS appended; the loss covers the
completion tokens, EOS included. Prompts go through the chat template (with the generation prompt) when
`prompt_format` is `chat`, or `auto` and the tokenizer has a template; `raw` tokenizes the prompt as plain
text with the tokenizer's default special tokens, exactly as TRL does for plain-text data.

Sequences longer than `max_length` lose the end of their completion; they are counted and reported.
A prompt that alone reaches `max_length` is an error (it would leave nothing to learn from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cipo_fast.packing import Sequence

DEFAULT_REASONING_TEMPLATE = "<think>\n{cot}\n</think>\n\n{answer}"
PROMPT_FORMATS = ("auto", "chat", "raw")
LOSS_ON = ("all", "cot", "answer")  # which part of a {cot, answer} completion single-sequence losses train on


@dataclass(frozen=True)
class TextFormat:
    prompt_format: str = "auto"  # auto | chat | raw
    reasoning_template: str = DEFAULT_REASONING_TEMPLATE
    system_prompt: str | None = None  # added as a system message in chat format
    max_length: int = 2048


@dataclass
class TruncationReport:
    truncated: int = 0  # sequences whose completion end was cut
    tokens_dropped: int = 0
    examples: list[str] = field(default_factory=list)  # "file:line" of the first few


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """`(line_number, object)` for every non-blank line; a malformed line raises naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append((lineno, obj))
    if not rows:
        raise ValueError(f"{path}: the file has no data rows")
    return rows


def _where(path, lineno, name) -> str:
    return f"{path}:{lineno}: field {name!r}"


def _check_prompt(value, path, lineno) -> None:
    where = _where(path, lineno, "prompt")
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where} is empty")
        return
    if isinstance(value, list) and value:
        for i, m in enumerate(value):
            if not (
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            ):
                raise ValueError(f"{where}: message {i} must be an object with string 'role' and 'content'")
        return
    raise ValueError(f"{where}: expected a non-empty string or list of chat messages, got {value!r:.80}")


def _render_completion(value, name, path, lineno, fmt: TextFormat) -> str:
    where = _where(path, lineno, name)
    if isinstance(value, dict):
        missing = [k for k in ("cot", "answer") if not isinstance(value.get(k), str)]
        if missing:
            raise ValueError(
                f"{where}: a structured completion needs string fields 'cot' and 'answer' "
                f"(missing or not a string: {', '.join(missing)})"
            )
        text = fmt.reasoning_template.format(cot=value["cot"].strip(), answer=value["answer"].strip())
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"{where}: expected a string or {{'cot', 'answer'}}, got {type(value).__name__}")
    if not text.strip():
        raise ValueError(f"{where} is empty")
    return text


def _require(obj, names, path, lineno) -> None:
    for name in names:
        if name not in obj or obj[name] is None:
            raise ValueError(f"{_where(path, lineno, name)} is missing")


class Tokenizer:
    """Prompt/completion tokenization with the conventions above, bound to one HF tokenizer."""

    def __init__(self, hf_tokenizer, fmt: TextFormat):
        if fmt.prompt_format not in PROMPT_FORMATS:
            raise ValueError(
                f"prompt_format: expected one of {', '.join(PROMPT_FORMATS)}, got {fmt.prompt_format!r}"
            )
        has_template = bool(getattr(hf_tokenizer, "chat_template", None))
        if fmt.prompt_format == "chat" and not has_template:
            raise ValueError(
                "prompt_format='chat': the tokenizer has no chat template; use prompt_format='raw' "
                "or a model whose tokenizer has one"
            )
        self.tok = hf_tokenizer
        self.fmt = fmt
        self.chat = fmt.prompt_format == "chat" or (fmt.prompt_format == "auto" and has_template)
        self.eos = hf_tokenizer.eos_token_id
        self.report = TruncationReport()

    def messages(self, prompt) -> list[dict]:
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.fmt.system_prompt and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": self.fmt.system_prompt}, *msgs]
        return msgs

    def prompt_text(self, prompt) -> str:
        """The prompt as the model sees it, for generation."""
        if self.chat:
            return self.tok.apply_chat_template(
                self.messages(prompt), add_generation_prompt=True, tokenize=False
            )
        if not isinstance(prompt, str):
            raise ValueError(
                "a chat-message prompt needs the chat format (the tokenizer has no chat template)"
            )
        return prompt

    def prompt_ids(self, prompt) -> list[int]:
        if self.chat:
            return self.tok(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]
        return self.tok(self.prompt_text(prompt))["input_ids"]

    def completion_ids(self, text: str, eos: bool = True) -> list[int]:
        return [*self.tok(text, add_special_tokens=False)["input_ids"], *([self.eos] if eos else [])]

    def sequence(self, prompt_ids: list[int], completion: str, where: str, eos: bool = True) -> Sequence:
        c = self.completion_ids(completion, eos)
        if len(prompt_ids) >= self.fmt.max_length:
            raise ValueError(
                f"{where}: the prompt has {len(prompt_ids)} tokens, not less than max_length="
                f"{self.fmt.max_length}; raise --max-length or shorten the prompt"
            )
        if not prompt_ids:
            raise ValueError(f"{where}: the prompt tokenizes to nothing")
        room = self.fmt.max_length - len(prompt_ids)
        if len(c) > room:
            self.report.truncated += 1
            self.report.tokens_dropped += len(c) - room
            if len(self.report.examples) < 5:
                self.report.examples.append(where)
            c = c[:room]
        return Sequence(tuple(prompt_ids), tuple(c))


@dataclass(frozen=True)
class Pair:
    chosen: Sequence
    rejected: Sequence
    source: str  # "file:line"


@dataclass(frozen=True)
class Single:
    seq: Sequence
    source: str


def load_pairs(path: str | Path, tok: Tokenizer) -> list[Pair]:
    pairs = []
    for lineno, obj in read_jsonl(path):
        _require(obj, ("prompt", "chosen", "rejected"), path, lineno)
        _check_prompt(obj["prompt"], path, lineno)
        chosen = _render_completion(obj["chosen"], "chosen", path, lineno, tok.fmt)
        rejected = _render_completion(obj["rejected"], "rejected", path, lineno, tok.fmt)
        p = tok.prompt_ids(obj["prompt"])
        where = f"{path}:{lineno}"
        pairs.append(Pair(tok.sequence(p, chosen, where), tok.sequence(p, rejected, where), where))
    return pairs


def split_reasoning(value: dict, loss_on: str, template: str) -> tuple[str, str, bool]:
    """(context, trained text, append EOS) of a `{cot, answer}` completion when only one part is trained.

    `answer`: the rendered think block is context (as a prefill) and the answer + EOS is trained;
    `cot`: the think block up to where the answer starts is trained, without EOS (the sequence goes on).
    """
    head = template.split("{answer}", 1)[0].format(cot=value["cot"].strip())
    if loss_on == "answer":
        return head, value["answer"].strip(), True
    return "", head, False


def load_singles(path: str | Path, tok: Tokenizer, loss_on: str = "all") -> list[Single]:
    """Single sequences: `{prompt, completion, prefill?}` rows, or question/answer(/cot) item rows.

    An item row becomes prompt = question, completion = {cot, answer} (or the answer alone without a cot).
    `prefill` is text forced at the start of the assistant turn: part of the prompt, so not trained on
    (e.g. the think block for answer-only gradient ascent). `loss_on` ("all" | "cot" | "answer") trains on
    one part of a `{cot, answer}` completion only (`split_reasoning`); other completions are an error then.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on: expected one of {', '.join(LOSS_ON)}, got {loss_on!r}")
    out = []
    for lineno, obj in read_jsonl(path):
        if "completion" not in obj and "question" in obj:
            _require(obj, ("answer",), path, lineno)
            cot = obj.get("cot") or ""
            completion = {"cot": cot, "answer": obj["answer"]} if cot.strip() else obj["answer"]
            obj = {"prompt": obj["question"], "completion": completion}
        _require(obj, ("prompt", "completion"), path, lineno)
        _check_prompt(obj["prompt"], path, lineno)
        text = _render_completion(obj["completion"], "completion", path, lineno, tok.fmt)
        prefill, eos = obj.get("prefill"), True
        if prefill is not None and not isinstance(prefill, str):
            raise ValueError(f"{_where(path, lineno, 'prefill')} must be a string")
        if loss_on != "all":
            if not isinstance(obj["completion"], dict):
                raise ValueError(
                    f"{_where(path, lineno, 'completion')}: --loss-on {loss_on} needs a {{'cot', 'answer'}} "
                    "completion (or an item row with a cot) to tell the chain of thought from the answer"
                )
            context, text, eos = split_reasoning(obj["completion"], loss_on, tok.fmt.reasoning_template)
            prefill = (prefill or "") + context
        prompt_ids = tok.prompt_ids(obj["prompt"])
        if prefill:
            prompt_ids = prompt_ids + tok.tok(prefill, add_special_tokens=False)["input_ids"]
        where = f"{path}:{lineno}"
        out.append(Single(tok.sequence(prompt_ids, text, where, eos), where))
    return out


def sniff_kind(path: str | Path) -> str:
    """'pairs' or 'singles' from the first row's fields."""
    lineno, first = read_jsonl(path)[0]
    if {"chosen", "rejected"} & first.keys():
        return "pairs"
    if "completion" in first or {"question", "answer"} <= first.keys():
        return "singles"
    raise ValueError(
        f"{path}:{lineno}: expected fields prompt/chosen/rejected (preference data) or "
        f"prompt/completion (single sequences), got {sorted(first)}"
    )
