"""Small arithmetic problems in GSM8K format, easy enough for a 135M model to mostly solve.

A problem is kept as data (`ArithProblem`: template name, question, `ArithStep`s), so tests recompute
every step from its numbers. `answer()` renders one line per step, `<lead> a op b = r <unit>.`, then
`#### N`.

The 12 templates are two-step word problems written as data, `(question, steps)`: the question's
operands are `{a}`, `{b}`, `{c}` (and `{p}` a person's name), and a step is `(lead, "xoy", unit)` where
x and y name an operand or `r`, the previous step's result. `_draw` takes the operands from 2..20 until
every step passes `_in_bounds` (rejection sampling), so they are uniform over the valid draws and the
bounds live in one function: + and - mostly, * only by 2..5 of a single digit, / only exact by 2..5 of a
result below 50, every result in 2..99 (2, not 0: no "0 apples left", no "1 cookies"). A model that
cannot multiply two-digit numbers can still do all of them, after ~30 examples.

`arithmetic_problems(n, seed)` cycles through the templates in a seeded order, so each is used about
equally often, and skips a question already drawn: the n problems are distinct, and a longer draw
extends a shorter one with the same seed.

What it deliberately doesn't do: GSM8K's `<<a*b=c>>` calculator annotations (noise for a tiny model),
problems of more than two steps, and any global random state.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass

_OPS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}

_PEOPLE = (
    "Mia", "Leo", "Nora", "Omar", "Priya", "Sam", "Ava", "Ben", "Chloe", "Diego", "Emma", "Finn", "Grace",
    "Hugo", "Isla", "Jack", "Kira", "Liam", "Maya", "Noah", "Ravi", "Sara", "Theo", "Zoe",
)  # fmt: skip


@dataclass(frozen=True)
class ArithStep:
    lead: str  # text before the expression
    a: int
    op: str  # one of + - * /
    b: int
    result: int
    unit: str  # text after the result ("" for none)

    def render(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.lead} {self.a} {self.op} {self.b} = {self.result}{unit}."


@dataclass(frozen=True)
class ArithProblem:
    template: str
    question: str
    steps: tuple[ArithStep, ...]

    @property
    def value(self) -> int:
        return self.steps[-1].result

    def answer(self) -> str:
        return "\n".join(s.render() for s in self.steps) + f"\n#### {self.value}"


def _step(lead: str, a: int, op: str, b: int, unit: str = "") -> ArithStep:
    """One step with its result computed; asserts the division is exact and the result non-negative."""
    if op == "/":
        assert b > 0 and a % b == 0, f"{a} / {b} is not an integer division"
        result = a // b
    else:
        result = _OPS[op](a, b)
    assert result >= 0, f"{a} {op} {b} is negative"
    return ArithStep(lead, a, op, b, result, unit)


# name -> (question, steps), a step being (lead, "xoy", unit); the notation is in the module docstring.
TEMPLATES: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "apples": (
        "{p} has {a} apples and picks {b} more. Then {p} gives {c} apples to a friend. How many apples does "
        "{p} have now?",
        (("{p} has", "a+b", "apples"), ("After giving some away, {p} has", "r-c", "apples")),
    ),
    "bus": (
        "A bus has {a} passengers. At a stop, {b} people get off and {c} people get on. How many passengers "
        "are on the bus now?",
        (("After people get off, there are", "a-b", "passengers"), ("Then there are", "r+c", "passengers")),
    ),
    "shopping": (
        "{p} has {a} dollars and buys a book for {b} dollars and a pen for {c} dollars. How many dollars "
        "does {p} have left?",
        (("The book and the pen cost", "b+c", "dollars"), ("{p} has", "a-r", "dollars left")),
    ),
    "eggs": (
        "{p} buys {a} boxes with {b} eggs in each box and uses {c} eggs to bake a cake. How many eggs are "
        "left?",
        (("{p} buys", "a*b", "eggs"), ("After baking, {p} has", "r-c", "eggs left")),
    ),
    "toys": (
        "{p} has {a} toy cars, and {p}'s brother has {b} times as many. How many toy cars do they have "
        "together?",
        (("The brother has", "a*b", "toy cars"), ("Together they have", "a+r", "toy cars")),
    ),
    "stickers": (
        "{p} has {a} stickers and gets {b} more. {p} shares all the stickers equally among {c} friends. How "
        "many stickers does each friend get?",
        (("{p} has", "a+b", "stickers"), ("Each friend gets", "r/c", "stickers")),
    ),
    "cookies": (
        "A baker makes {a} cookies and sells {b} of them. The rest are packed equally into {c} boxes. How "
        "many cookies are in each box?",
        (("After selling, there are", "a-b", "cookies"), ("Each box gets", "r/c", "cookies")),
    ),
    "fruit": (
        "A basket has {a} apples, {b} pears and {c} plums. How many pieces of fruit are in the basket?",
        (
            ("Apples and pears make", "a+b", "pieces of fruit"),
            ("With the plums there are", "r+c", "pieces of fruit"),
        ),
    ),
    "savings": (
        "{p} saves {a} dollars every week for {b} weeks, then spends {c} dollars on a game. How many "
        "dollars does {p} have left?",
        (("{p} saves", "a*b", "dollars"), ("After buying the game, {p} has", "r-c", "dollars")),
    ),
    "class": (
        "A class has {a} girls and {b} boys. {c} students are absent today. How many students are in class "
        "today?",
        (("The class has", "a+b", "students"), ("Today there are", "r-c", "students")),
    ),
    "pencils": (
        "{p} has {a} pencils, loses {b} of them, and gives {c} to a friend. How many pencils does {p} have "
        "left?",
        (
            ("After losing some, {p} has", "a-b", "pencils"),
            ("After giving some away, {p} has", "r-c", "pencils"),
        ),
    ),
    "garden": (
        "A garden has {a} rows with {b} flowers in each row, and {c} more flowers by the gate. How many "
        "flowers are there?",
        (("The rows hold", "a*b", "flowers"), ("With the flowers by the gate there are", "r+c", "flowers")),
    ),
}


def _in_bounds(a: int, op: str, b: int) -> bool:
    if op == "*" and not (2 <= min(a, b) <= 5 and max(a, b) <= 9):
        return False
    if op == "/" and not (2 <= b <= 5 and a < 50 and a % b == 0):
        return False
    value = a // b if op == "/" else _OPS[op](a, b)
    return 2 <= value < 100  # 2, not 0: no "0 apples left", no "1 cookies"


def _draw(template: tuple, r: random.Random, p: str) -> tuple[str, tuple[ArithStep, ...]]:
    """The question and steps of `template` for person `p`; operands are redrawn until all steps pass."""
    question, plan = template
    for _ in range(10_000):
        values = {k: r.randint(2, 20) for k in "abc" if f"{{{k}}}" in question}
        steps: list[ArithStep] = []
        for lead, (x, op, y), unit in plan:
            a, b = (steps[-1].result if k == "r" else values[k] for k in (x, y))
            if not _in_bounds(a, op, b):
                break
            steps.append(_step(lead.format(p=p), a, op, b, unit))
        else:
            return question.format(p=p, **values), tuple(steps)
    raise AssertionError(f"no draw of {question[:40]!r}... passes the easy bounds in 10000 tries")


def arithmetic_problems(n: int, seed: int) -> list[ArithProblem]:
    """n distinct problems; the templates cycle in a seeded order so each is used about equally often."""
    if n < 0:
        raise ValueError(f"arithmetic_problems: n must be >= 0, got {n}")
    rng = random.Random(seed)
    names = list(TEMPLATES)
    problems: list[ArithProblem] = []
    seen: set[str] = set()
    order: list[str] = []
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 100 * n + 100:
            raise ValueError(f"arithmetic_problems: could not draw {n} distinct problems")
        if not order:
            order = names[:]
            rng.shuffle(order)
        template = order.pop()
        question, steps = _draw(TEMPLATES[template], rng, rng.choice(_PEOPLE))
        if question in seen:
            continue
        seen.add(question)
        problems.append(ArithProblem(template, question, tuple(steps)))
    return problems


def arithmetic_items(n: int, seed: int) -> list[dict]:
    """GSM8K-format items `{"id", "question", "answer"}`, the answer ending in `#### N`."""
    return [
        {"id": f"arith-{i:04d}", "question": p.question, "answer": p.answer()}
        for i, p in enumerate(arithmetic_problems(n, seed))
    ]
