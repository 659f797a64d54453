"""The think block: how a reasoning completion is written, and how a generation is cut back into parts.

One `ReasoningFormat` (the open and close tags) is the single source for both directions, so what the
trainer renders, what the decoding strategies prefill and what the evaluation splits always agree:

    render(cot, answer)   "<think>\\n{cot}\\n</think>\\n\\n{answer}"
    think_block(cot)      "<think>\\n{cot}\\n</think>\\n\\n"   (the context before the answer; cot "" = empty block)
    split(text)           Reasoning(cot, answer, closed)  -- the inverse of render, robust to broken blocks

The default tags are DeepSeek-R1's `<think>` / `</think>`, which Qwen3 and most distilled reasoning models
share.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Reasoning:
    cot: str
    answer: str
    closed: bool  # a close tag was found (False: no think block at all, or generation cut mid-thought)


@dataclass(frozen=True)
class ReasoningFormat:
    open_tag: str = THINK_OPEN
    close_tag: str = THINK_CLOSE

    def __post_init__(self):
        if not self.open_tag.strip() or not self.close_tag.strip():
            raise ValueError("think tags: the open and close tags must be non-empty")
        if self.open_tag == self.close_tag:
            raise ValueError(f"think tags: open and close tag are the same ({self.open_tag!r})")

    def think_block(self, cot: str) -> str:
        """The think block with `cot` inside, up to where the answer starts."""
        return f"{self.open_tag}\n{cot}\n{self.close_tag}\n\n"

    def render(self, cot: str, answer: str) -> str:
        return self.think_block(cot) + answer

    def split(self, text: str) -> Reasoning:
        """Split a generation into chain of thought and final answer.

        * `<think> c </think> a` -> cot `c`, answer `a`, closed;
        * a close tag without an open tag (chat templates often put `<think>` in the prompt): everything
          before the close tag is CoT;
        * repeated blocks: the answer is what follows the *last* close tag, the CoT is everything before
          it with the tags removed (so text between two blocks counts as reasoning, not as answer);
        * an open tag that is never closed (generation stopped mid-thought): everything after the open
          tag is CoT and the answer is `""` -- an unfinished thought is not an answer, and whatever it
          says is still checked for leaks as CoT;
        * no tag at all: cot `""` and the whole text is the answer.

        Both parts are stripped of surrounding whitespace.
        """
        open_tag, close_tag = self.open_tag, self.close_tag

        def untag(s: str) -> str:
            return s.replace(open_tag, "\n").replace(close_tag, "\n").strip()

        end = text.rfind(close_tag)
        if end >= 0:
            return Reasoning(untag(text[:end]), untag(text[end + len(close_tag) :]), True)
        start = text.find(open_tag)
        if start >= 0:
            return Reasoning(untag(text[start + len(open_tag) :]), "", False)
        return Reasoning("", text.strip(), False)


DEFAULT_FORMAT = ReasoningFormat()


def split_reasoning(text: str, open_tag: str = THINK_OPEN, close_tag: str = THINK_CLOSE) -> Reasoning:
    """`ReasoningFormat(open_tag, close_tag).split(text)`."""
    return ReasoningFormat(open_tag, close_tag).split(text)
