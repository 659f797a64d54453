"""Dates written in a text, as sets of (year, month, day) readings.

`find_dates` finds full dates in four formats -- `8th of Sep, 1956`, `September 8, 1956`, `08/09/1956`
and `1956-09-08` (separators `/`, `.` or `-`) -- and returns each with its readings: one for a date with a
month name or the year first, two for an all-numeric date with the year last (DD/MM and MM/DD; impossible
readings such as month 13 are dropped). `month_days` also finds a month name and day without a year
(`September 8`, `8th of September`), which gives a birthday away on its own.

Two dates are the same fact when their reading sets intersect, so `08/09/1956` matches both
`8 September 1956` and `August 9, 1956`.

What it deliberately does not do: relative dates ("last spring"), years alone (a year is a number, see
`cipo_fast.eval.number_words`), date ranges, or two-digit years.
"""

from __future__ import annotations

import datetime
import re

from cipo_fast.eval.lexicon import MONTHS
from cipo_fast.eval.text import fold_punctuation

Ymd = tuple[int, int, int]

_MONTH_RE = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY_RE = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR_RE = r"(?P<year>\d{4})"
_FULL_DATE_RES = [
    re.compile(rf"\b{_DAY_RE}(?:\s+of)?\s+{_MONTH_RE},?\s+{_YEAR_RE}\b", re.I),  # 8th of Sep, 1956
    re.compile(rf"\b{_MONTH_RE}\s+(?:the\s+)?{_DAY_RE},?\s+{_YEAR_RE}\b", re.I),  # September 8, 1956
    re.compile(r"\b(?P<a>\d{1,2})([/.-])(?P<b>\d{1,2})\2(?P<year>\d{4})\b"),  # 08/09/1956: DD/MM or MM/DD
    re.compile(r"\b(?P<year>\d{4})([/.-])(?P<month>\d{1,2})\2(?P<day>\d{1,2})\b"),  # 1956-09-08
]
_MONTH_DAY_RES = [
    re.compile(rf"\b{_DAY_RE}(?:\s+of)?\s+{_MONTH_RE}(?![^\W\d_])", re.I),
    re.compile(rf"\b{_MONTH_RE}\s+(?:the\s+)?{_DAY_RE}\b(?![/.-]\d)", re.I),
]


def _valid(y: int, m: int, d: int) -> bool:
    try:
        datetime.date(y, m, d)
    except ValueError:
        return False
    return True


def _match_readings(m: re.Match) -> set[Ymd]:
    g = m.groupdict()
    y = int(g["year"])
    if "a" in g:  # all-numeric with the year last: both readings
        a, b = int(g["a"]), int(g["b"])
        readings = {(y, b, a), (y, a, b)}
    else:
        month = g["month"]
        mo = int(month) if month.isdigit() else MONTHS[month.lower()]
        readings = {(y, mo, int(g["day"]))}
    return {r for r in readings if _valid(*r)}


def find_dates(text: str) -> list[tuple[int, int, frozenset[Ymd]]]:
    """Full dates written in `text`: `(start, end, readings)`, readings being (year, month, day)."""
    text = fold_punctuation(text)  # one character for one, so offsets index the caller's text
    found = []
    for rx in _FULL_DATE_RES:
        for m in rx.finditer(text):
            if readings := _match_readings(m):
                found.append((m.start(), m.end(), frozenset(readings)))
    return sorted(found)


def month_days(text: str) -> set[tuple[int, int]]:
    """(month, day) pairs of dates written with a month name, with or without a year, and of every full
    date that `find_dates` reads."""
    text = fold_punctuation(text)
    out = set()
    for rx in _MONTH_DAY_RES:
        for m in rx.finditer(text):
            mo, d = MONTHS[m.group("month").lower()], int(m.group("day"))
            if _valid(2000, mo, d):
                out.add((mo, d))
    for _, _, readings in find_dates(text):
        out |= {(mo, d) for _, mo, d in readings}
    return out
