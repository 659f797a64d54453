"""GSM8K-style answers: the model's final number, and whether it equals the gold one.

(The gold number of a `... #### N` answer is read by `cipo_fast.data.items.gsm8k_number`, the one parser
of that format.)

* `extract_final_number`: the content of the model's last `\\boxed{}` (a boxed `\\frac{a}{b}` as a/b),
  or else the last number in the text; `$` and thousands separators dropped, a minus sign directly before
  the digits kept unless it follows a letter, digit or `)` (`-3 degrees` -> `-3`, `pages 10-12` -> `12`).
* `numbers_match`: numeric equality with `Decimal` (`"12.0"` == `"12"`).

Together with the gold number they give the utility accuracy: the share of problems whose final number equals the gold.

What it deliberately does not do: grade the reasoning, units, or any answer beyond its final number.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER_RE = re.compile(r"(?:(?<![\w)])-)?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")


def _clean_number(s: str) -> str:
    return s.replace("$", "").replace(",", "")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]


def extract_final_number(text: str) -> str | None:
    """The content of the last `\\boxed{...}` if there is one, else the last number in the text; `$` and
    thousands separators removed (`"$1,200.50"` -> `"1200.50"`). A boxed `\\frac{a}{b}` becomes a/b."""
    boxed = _last_boxed(text)
    if boxed is not None:
        frac = re.search(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", boxed)
        if frac and int(frac.group(2)) != 0:
            return str(Decimal(frac.group(1)) / Decimal(frac.group(2)))
        numbers = _NUMBER_RE.findall(boxed)
        if numbers:
            return _clean_number(numbers[-1])
    numbers = _NUMBER_RE.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def numbers_match(pred: str | None, gold: str) -> bool:
    """Numeric equality of two number strings (`"12.0"` == `"12"`, `"1,200"` == `"1200"`)."""
    if pred is None:
        return False
    try:
        return Decimal(_clean_number(pred).strip()) == Decimal(_clean_number(gold).strip())
    except InvalidOperation:
        return False
