"""Calendar days as text (YYYY-MM-DD) and as numpy datetime64[D], both ways, for batches.

numpy's own string conversions cost 0.3-0.6 us a value each way (``datetime_as_string``,
and parsing, which also accepts forms the API does not: "2026-11", "NaT"). Live traffic
names few distinct days (orders of the last weeks, deliveries of the next ones), so
both directions are remembered per day: a batch then costs one dict lookup per value.
The memo is a cache of a pure function, bounded, and shared by threads (dict reads
and writes are atomic; a race only computes a day twice).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np

_EPOCH = date(1970, 1, 1)
# The one text form of a date the API takes (ASCII digits; no trailing newline).
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
# Far more days than live traffic names (about 45 years); past it the memo starts over.
MEMO_DAYS = 1 << 14

_NAT = int(np.datetime64("NaT", "D").view(np.int64))
_day_of_text: dict[str, int] = {}
_text_of_day: dict[int, str] = {}


def parse_date(text: str) -> date | None:
    """The date ``text`` names exactly as YYYY-MM-DD, or None."""
    if not DATE_RE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def days_of(texts: Sequence[str]) -> np.ndarray | None:
    """datetime64[D] for texts that each name a date exactly as YYYY-MM-DD; None if any
    does not (the caller then finds which, one by one)."""
    get = _day_of_text.get
    try:
        days = [get(text) or _day(text) for text in texts]
    except ValueError:
        return None
    return np.array(days, dtype=np.int64).view("datetime64[D]")


def epoch_days(days: np.ndarray) -> list[int | None]:
    """datetime64[D] values as days since 1970-01-01; None for NaT."""
    return [None if number == _NAT else number for number in days.view(np.int64).tolist()]


def text_of_day(number: int) -> str:
    """YYYY-MM-DD for a day counted from 1970-01-01 ("" for NaT's number)."""
    return _text_of_day.get(number) or _text(number)


def _day(text: str) -> int:
    day = parse_date(text)
    if day is None:
        raise ValueError(text)
    if len(_day_of_text) >= MEMO_DAYS:
        _day_of_text.clear()
    number = _day_of_text[text] = (day - _EPOCH).days
    return number


def _text(number: int) -> str:
    if number == _NAT:
        return ""
    if len(_text_of_day) >= MEMO_DAYS:
        _text_of_day.clear()
    try:
        text = (_EPOCH + timedelta(days=number)).isoformat()
    except OverflowError:  # past 9999-12-31, where datetime.date ends and numpy goes on
        text = str(np.datetime64(number, "D"))
    _text_of_day[number] = text
    return text
