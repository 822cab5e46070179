"""Calendar days as text (YYYY-MM-DD) and as day numbers (days since 1970-01-01), and
moments as RFC 3339 text (:func:`utc_text`).

Every request names its order dates as text and every answer names delivery dates as
text; in between, a date is an int, so the date rule is integer arithmetic. Live
traffic names few distinct days (orders of the last weeks, deliveries of the next
ones), so both directions are remembered per day: a row then costs a dict lookup each
way instead of a parse or a format (about 1 us each). The memo is a cache of a pure
function, bounded, and shared by threads (dict reads and writes are atomic; a race
only computes a day twice).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import numpy as np

_EPOCH = date(1970, 1, 1)
# The one text form of a date the API takes (ASCII digits; no trailing newline).
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
# Far more days than live traffic names (about 45 years); past it the memo starts over.
MEMO_DAYS = 1 << 14

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


def day_number(day: date) -> int:
    return (day - _EPOCH).days


def days_of(texts: Sequence[str]) -> list[int] | None:
    """Day numbers for texts that each name a date exactly as YYYY-MM-DD; None if any
    does not (the caller then finds which, one by one)."""
    get = _day_of_text.get
    try:
        # 0 (1970-01-01) is falsy: it is parsed each time, and still right.
        return [get(text) or _day(text) for text in texts]
    except ValueError:
        return None


def text_of_day(number: int) -> str:
    """YYYY-MM-DD for a day number."""
    return _text_of_day.get(number) or _text(number)


def _day(text: str) -> int:
    day = parse_date(text)
    if day is None:
        raise ValueError(text)
    if len(_day_of_text) >= MEMO_DAYS:
        _day_of_text.clear()
    number = _day_of_text[text] = day_number(day)
    return number


def _text(number: int) -> str:
    try:
        text = (_EPOCH + timedelta(days=number)).isoformat()
    except OverflowError:  # past 9999-12-31, where datetime.date ends; numpy goes on
        text = str(np.datetime64(number, "D"))
    if len(_text_of_day) >= MEMO_DAYS:
        _text_of_day.clear()
    _text_of_day[number] = text
    return text


def utc_text(seconds: float) -> str:
    """A Unix time as RFC 3339 UTC text to the millisecond: ``2026-12-04T16:15:46.123Z``."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def utc_now() -> str:
    return utc_text(time.time())
