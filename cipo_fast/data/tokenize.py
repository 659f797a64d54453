"""Prompt and completion tokenization, bound to one HF tokenizer.

* Prompt and completion are tokenized separately and concatenated, so the completion boundary is exact;
  the completion gets the tokenizer's EOS appended and the loss covers the completion tokens, EOS included.
* Prompts go through the chat template (with the generation prompt) when `prompt_format` is `chat`, or
  `auto` and the tokenizer has a template; `raw` tokenizes the prompt as plain text with the tokenizer's
  default special tokens, exactly as TRL does for plain-text data.
* A sequence longer than `max_length` loses the end of its completion (and its EOS); such sequences are
  counted in `Tokenizer.report`. Only a bounded prefix of a very long completion is tokenized: enough
  characters for the tokens that are kept plus a margin of 16 tokens, doubled until it is enough, so a
  50 MB line costs what its first `max_length` tokens cost. (A BPE tokenization of a prefix equals the
  full text's except near the cut, which the margin keeps out of the kept tokens.)
* A prompt that alone reaches `max_length` is an error (nothing would be left to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cipo_fast.data.packing import Sequence
from cipo_fast.data.reasoning import DEFAULT_FORMAT, ReasoningFormat

PROMPT_FORMATS = ("auto", "chat", "raw")
_MARGIN = 16  # tokens beyond the kept ones that a prefix tokenization must reach


@dataclass(frozen=True)
class TextFormat:
    prompt_format: str = "auto"  # auto | chat | raw
    reasoning: ReasoningFormat = DEFAULT_FORMAT  # how {cot, answer} completions are rendered
    system_prompt: str | None = None  # added as a system message in chat format
    max_length: int = 2048


@dataclass
class TruncationReport:
    truncated: int = 0  # sequences whose completion end was cut
    tokens_dropped: int = 0  # at least this many completion tokens (only a prefix of very long texts is read)
    examples: list[str] = field(default_factory=list)  # "file:line" of the first few


class Tokenizer:
    """Prompt/completion tokenization with the conventions above."""

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

    @property
    def reasoning(self) -> ReasoningFormat:
        return self.fmt.reasoning

    def messages(self, prompt) -> list[dict]:
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.fmt.system_prompt and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": self.fmt.system_prompt}, *msgs]
        return msgs

    def prompt_text(self, prompt) -> str:
        """The prompt as the model sees it, for generation."""
        if self.chat:
            try:
                return self.tok.apply_chat_template(
                    self.messages(prompt), add_generation_prompt=True, tokenize=False
                )
            except Exception as e:  # jinja raises its own errors for messages the template refuses
                raise ValueError(
                    f"the chat template refuses these messages ({type(e).__name__}: {e})"
                ) from None
        if not isinstance(prompt, str):
            raise ValueError(
                "a chat-message prompt needs the chat format (the tokenizer has no chat template)"
            )
        return prompt

    def prompt_ids(self, prompt) -> list[int]:
        if self.chat:
            return self.tok(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]
        return self.tok(self.prompt_text(prompt))["input_ids"]

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens)."""
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def completion_ids(self, text: str, eos: bool = True) -> list[int]:
        return [*self.text_ids(text), *([self.eos] if eos else [])]

    def _bounded_ids(self, text: str, room: int) -> list[int]:
        """The token ids of `text`, or of a prefix of it long enough that its first `room` ids are the
        full text's (see the module docstring)."""
        n = 4 * (room + _MARGIN)
        while n < len(text):
            ids = self.text_ids(text[:n])
            if len(ids) > room + _MARGIN:
                return ids
            n *= 2
        return self.text_ids(text)

    def sequence(self, prompt_ids: list[int], completion: str, where: str, eos: bool = True) -> Sequence:
        if len(prompt_ids) >= self.fmt.max_length:
            raise ValueError(
                f"{where}: the prompt has {len(prompt_ids)} tokens, not less than max_length="
                f"{self.fmt.max_length}; raise --max-length or shorten the prompt"
            )
        if not prompt_ids:
            raise ValueError(f"{where}: the prompt tokenizes to nothing")
        room = self.fmt.max_length - len(prompt_ids)
        c = [*self._bounded_ids(completion, room), *([self.eos] if eos else [])]
        if len(c) > room:
            self.report.truncated += 1
            self.report.tokens_dropped += len(c) - room
            if len(self.report.examples) < 5:
                self.report.examples.append(where)
            c = c[:room]
        return Sequence(tuple(prompt_ids), tuple(c))
