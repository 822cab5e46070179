"""Days as text and as datetime64[D], both ways, against datetime.date's own reading."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import calendar


def texts_of(days: np.ndarray) -> list[str]:
    return ["" if d is None else calendar.text_of_day(d) for d in calendar.epoch_days(days)]


@given(st.lists(st.dates(), min_size=1, max_size=20))
def test_texts_and_days_round_trip_like_datetime(days: list[date]) -> None:
    texts = [d.isoformat() for d in days]
    parsed = calendar.days_of(texts)
    assert parsed is not None
    assert parsed.tolist() == days
    assert texts_of(parsed) == texts


@pytest.mark.parametrize("text", ["2026-02-30", "2026-11", "NaT", "26/11/2026", "2026-11-26T00",
                                  " 2026-11-26", "2026-11-26\n", "0000-01-01", "+2026-11-26",
                                  "2026-1-05", "", "\u0662\u0660\u0662\u0666-11-26"])
def test_anything_but_an_exact_date_is_refused(text: str) -> None:
    assert calendar.parse_date(text) is None
    assert calendar.days_of(["2026-11-26", text]) is None


def test_no_date_and_days_past_datetime_range_still_have_text() -> None:
    days = np.array(["NaT", "9999-12-31"], dtype="datetime64[D]")
    assert calendar.epoch_days(days) == [None, 2932896]
    assert texts_of(days) == ["", "9999-12-31"]
    assert texts_of(days[1:] + np.timedelta64(2, "D")) == ["10000-01-02"]


def test_the_memo_stays_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calendar, "MEMO_DAYS", 3)
    days = [date(2026, 1, 1).fromordinal(date(2026, 1, 1).toordinal() + i) for i in range(10)]
    texts = [d.isoformat() for d in days]
    for _ in range(2):
        parsed = calendar.days_of(texts)
        assert parsed is not None and parsed.tolist() == days
        assert texts_of(parsed) == texts
    assert len(calendar._day_of_text) <= 3 and len(calendar._text_of_day) <= 3
