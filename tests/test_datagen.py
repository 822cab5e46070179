"""The synthetic order generator: determinism, documented effects, drift scenarios."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import datagen

INPUTS = [c for c in datagen.COLUMNS if c != "transit_days"]
DESTINATION = ["origin_warehouse", "zip_code", "distance_km"]
SMALL = {"n_rows": 6000, "seed": 11, "start": date(2025, 1, 1), "end": date(2025, 12, 31)}


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return datagen.generate(**SMALL)


def scenario(name: str) -> pd.DataFrame:
    return datagen.generate(**SMALL, scenario=name)


def delivery_dates(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["order_date"]) + pd.to_timedelta(frame["transit_days"], unit="D")


def test_same_seed_gives_the_same_frame(base: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(datagen.generate(**SMALL), base)


def test_another_seed_gives_other_orders(base: pd.DataFrame) -> None:
    other = datagen.generate(**{**SMALL, "seed": 12})
    assert not other["order_time"].equals(base["order_time"])


def test_columns_and_value_rules(base: pd.DataFrame) -> None:
    assert list(base.columns) == list(datagen.COLUMNS)
    assert len(base) == SMALL["n_rows"]
    assert base["order_time"].is_monotonic_increasing
    assert (base["transit_days"] >= 1).all()
    assert base["zip_code"].str.fullmatch(r"\d{5}").all()
    assert set(base["service_level"]) == set(datagen.SERVICES)
    assert base["origin_warehouse"].nunique() == len(datagen.WAREHOUSES)
    assert 0.01 < base["weight_kg"].isna().mean() < 0.06
    order_date = pd.to_datetime(base["order_date"])
    assert (order_date == base["order_time"].dt.normalize()).all()
    assert (base["day_of_week"] == order_date.dt.day_of_week).all()
    assert (base["day_of_year"] == order_date.dt.day_of_year).all()
    assert (base["hour"] == base["order_time"].dt.hour).all()
    assert (base["after_cutoff"] == (base["hour"] >= datagen.CUTOFF_HOUR)).all()


def test_order_dates_stay_in_range(base: pd.DataFrame) -> None:
    assert base["order_date"].min() >= SMALL["start"].isoformat()
    assert base["order_date"].max() <= SMALL["end"].isoformat()


def test_default_range_covers_at_least_two_years() -> None:
    frame = datagen.generate(n_rows=3000, seed=5)
    first, last = (
        date.fromisoformat(frame["order_date"].min()),
        date.fromisoformat(frame["order_date"].max()),
    )
    assert first >= datagen.DEFAULT_START and last <= datagen.DEFAULT_END
    assert (last - first).days >= 2 * 365


def test_public_holidays_use_observed_dates() -> None:
    assert datagen.public_holidays(2026) == [
        date(2026, 1, 1),
        date(2026, 5, 25),  # last Monday of May
        date(2026, 7, 3),  # July 4 is a Saturday: observed Friday
        date(2026, 9, 7),  # first Monday of September
        date(2026, 11, 26),  # fourth Thursday of November
        date(2026, 12, 25),
    ]
    assert datagen.public_holidays(2022)[0] == date(2021, 12, 31)  # Saturday New Year


def test_holiday_ahead_looks_seven_days_forward(base: pd.DataFrame) -> None:
    holidays = {d for y in (2025, 2026) for d in datagen.public_holidays(y)}
    expected = [
        any(date.fromisoformat(d) + timedelta(days=k) in holidays for k in range(8))
        for d in base["order_date"]
    ]
    assert base["holiday_ahead"].tolist() == expected
    assert base["holiday_ahead"].any()


def test_nothing_is_delivered_on_sundays_or_holidays(base: pd.DataFrame) -> None:
    delivered = delivery_dates(base)
    holidays = pd.to_datetime(datagen.holidays_between(SMALL["start"], SMALL["end"]))
    assert not delivered.isin(holidays).any()
    assert (delivered.dt.day_of_week != 6).all()
    ground = base["service_level"] == "ground"
    assert (delivered[ground].dt.day_of_week < 5).all()
    # Express and overnight do deliver on Saturdays.
    assert (delivered[~ground].dt.day_of_week == 5).any()


def test_weekend_orders_wait_for_monday_pickup(base: pd.DataFrame) -> None:
    saturday = base["day_of_week"] == 5
    late_friday = (base["day_of_week"] == 4) & base["after_cutoff"]
    # Picked up Monday at the earliest, delivered Tuesday at the earliest.
    assert base.loc[saturday, "transit_days"].min() >= 3
    assert base.loc[late_friday, "transit_days"].min() >= 4
    early_week = base["day_of_week"] <= 2
    assert base.loc[early_week, "transit_days"].min() == 1


def test_cutoff_adds_about_a_day(base: pd.DataFrame) -> None:
    midweek = base[base["day_of_week"].between(0, 2)]
    by_cutoff = midweek.groupby("after_cutoff")["transit_days"].mean()
    assert by_cutoff[True] - by_cutoff[False] > 0.6


def test_zip_popularity_is_heavy_tailed() -> None:
    frame = datagen.generate(n_rows=30_000, seed=3)
    counts = frame["zip_code"].value_counts()
    assert len(counts) > 2000
    top_one_percent = counts.iloc[: len(counts) // 100].sum() / len(frame)
    assert top_one_percent > 0.15


def test_distance_depends_on_origin_and_zip3(base: pd.DataFrame) -> None:
    zip3 = base["zip_code"].str.slice(0, 3)
    spread = base.groupby([base["origin_warehouse"], zip3])["distance_km"].agg(np.ptp)
    # Within a zip3 only the per-zip offset (0-30 km) varies.
    assert spread.max() <= 30.0
    assert base.groupby(zip3)["distance_km"].agg(np.ptp).max() > 1000.0


def test_scenarios_are_documented() -> None:
    assert set(datagen.SCENARIOS) == {
        "none",
        "peak_season",
        "new_carrier",
        "zip_shift",
        "slow_carrier",
        "label_shift",
    }
    assert all(datagen.SCENARIOS.values())


@pytest.mark.parametrize("name", ["slow_carrier", "label_shift"])
def test_label_scenarios_leave_inputs_identical(base: pd.DataFrame, name: str) -> None:
    shifted = scenario(name)
    pd.testing.assert_frame_equal(shifted[INPUTS], base[INPUTS])
    assert (shifted["transit_days"] >= base["transit_days"]).all()


def test_label_shift_moves_every_carrier(base: pd.DataFrame) -> None:
    shifted = scenario("label_shift")
    gain = (
        shifted.groupby("carrier")["transit_days"].mean()
        - base.groupby("carrier")["transit_days"].mean()
    )
    assert (gain > 0.4).all()


def test_slow_carrier_slows_only_that_carrier(base: pd.DataFrame) -> None:
    shifted = scenario("slow_carrier")
    slow = base["carrier"] == datagen.SLOW_CARRIER
    assert slow.any()
    assert shifted.loc[~slow, "transit_days"].equals(base.loc[~slow, "transit_days"])
    gain = shifted.loc[slow, "transit_days"].mean() - base.loc[slow, "transit_days"].mean()
    assert gain > 0.5


def test_new_carrier_is_unseen_and_slower(base: pd.DataFrame) -> None:
    shifted = scenario("new_carrier")
    new = datagen.NEW_CARRIER.name
    assert new not in set(base["carrier"])
    share = (shifted["carrier"] == new).mean()
    assert 0.1 < share < 0.35
    means = shifted.groupby("carrier")["transit_days"].mean()
    assert means[new] > means["northstar"]
    # Only carrier and labels change; order times and destinations do not.
    same = [c for c in INPUTS if c != "carrier"]
    pd.testing.assert_frame_equal(shifted[same], base[same])


def test_zip_shift_moves_destinations_only(base: pd.DataFrame) -> None:
    shifted = scenario("zip_shift")
    same = [c for c in INPUTS if c not in DESTINATION]
    pd.testing.assert_frame_equal(shifted[same], base[same])
    known = set(datagen.build_network().zip_codes)
    new_share = (~shifted["zip_code"].isin(known)).mean()
    assert base["zip_code"].isin(known).all()
    assert 0.1 < new_share < 0.2
    west = shifted["zip_code"].str[0].isin(["8", "9"]).mean()
    assert west > base["zip_code"].str[0].isin(["8", "9"]).mean() + 0.1


def test_peak_season_shifts_inputs_and_labels(base: pd.DataFrame) -> None:
    shifted = scenario("peak_season")
    assert shifted["transit_days"].mean() > base["transit_days"].mean() + 0.3
    assert shifted["after_cutoff"].mean() > base["after_cutoff"].mean() + 0.03
    ground = (shifted["service_level"] == "ground").mean()
    assert ground > (base["service_level"] == "ground").mean() + 0.05


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="'rush_hour'"):
        datagen.generate(100, 1, scenario="rush_hour")
    with pytest.raises(ValueError, match="n_rows"):
        datagen.generate(0, 1)
    with pytest.raises(ValueError, match="2025-02-01 is after end 2025-01-01"):
        datagen.generate(10, 1, date(2025, 2, 1), date(2025, 1, 1))


def test_cli_writes_a_csv(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    datagen.add_arguments(parser)
    out = tmp_path / "orders.csv"
    argv = ["--rows", "500", "--seed", "4", "--start", "2025-03-01", "--end", "2025-04-30"]
    args = parser.parse_args([*argv, "--scenario", "new_carrier", "--out", str(out)])
    assert datagen.run(args) == 0
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == list(datagen.COLUMNS)
    assert len(written) == 500
    assert set(written["after_cutoff"]) == {"true", "false"}
    assert written["order_time"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()
    assert (written["weight_kg"] == "").any()  # missing weights are empty cells
    expected = datagen.generate(500, 4, date(2025, 3, 1), date(2025, 4, 30), "new_carrier")
    assert written["zip_code"].tolist() == expected["zip_code"].tolist()
