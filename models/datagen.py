"""Seeded synthetic delivery orders for training and drift demos.

One row is one parcel order. The generator simulates a small parcel network and
derives the label the way a real one does: a parcel is picked up on a pickup
day, travels a number of *business* days, and is delivered on a delivery day.
The label ``transit_days`` is the number of **calendar** days from the order
date to the delivery date; it is always ``>= 1`` (nothing is delivered on the
day it is ordered).

The network
-----------
The network (warehouses, zip codes, their popularity and remoteness, carriers)
is fixed by :data:`NETWORK_SEED`, not by the ``seed`` argument: different seeds
draw different orders from the *same* world, so a model trained on one seed can
be scored on data generated with another seed or scenario.

Effects, in the order they are applied
--------------------------------------
Order time
    Order dates are drawn over ``[start, end]`` with weekday volume > Saturday >
    Sunday, fewer orders on public holidays, +50 % volume in peak season and a
    +15 %/year growth trend. The hour follows a daytime web-shopping curve;
    minutes and seconds are uniform. Times are naive local warehouse time.
Cut-off
    Parcels ordered at or after :data:`CUTOFF_HOUR` (14:00) miss the day's
    pickup and ship on the next pickup day (``after_cutoff``).
Pickup and delivery calendars
    Pickups happen Monday-Friday except public holidays, for every service.
    Ground delivers Monday-Friday; express and overnight also on Saturday.
    Nothing moves on Sundays or public holidays.
Public holidays
    US-style list computed per year (:func:`public_holidays`): New Year's Day,
    Memorial Day, Independence Day, Labor Day, Thanksgiving and Christmas,
    fixed-date ones moved to the observed weekday (Saturday -> Friday,
    Sunday -> Monday). ``holiday_ahead`` is true when one falls within the
    order date and the following 7 days.
Destinations
    About 6 000 five-digit zip codes in ~400 zip3 prefixes. The first digit
    of a zip code is its region (as in the US: 0 = New England ... 9 = West
    Coast); each zip3 has its own location around its region's centroid.
    Popularity is Zipf-like (a few zips get most orders, thousands get few).
    About 8 % of zip codes are remote (+1 business day for ground, +1 with
    probability 0.5 for express and overnight) - a per-zip effect that only
    ``zip_code`` itself reveals.
Origin and distance
    Eight warehouses; 70 % of orders ship from the warehouse nearest to the
    destination zip3, the rest from any other warehouse. ``distance_km`` is
    the road distance (great circle x 1.25) from the warehouse to the zip3
    location, plus a per-zip offset of 0-30 km.
Service level
    ground 68 %, express 24 %, overnight 8 %. Base business days: ground
    ``1 + floor(distance / carrier speed)``; express 1, or 2 beyond 1 500 km;
    overnight 1.
Carrier
    Four carriers; which ones offer a service differs (only two fly overnight).
    Each has a ground speed (km per business day), a delay probability and a
    delay size: a delayed parcel takes ``1 + floor(Exp(size))`` extra business
    days.
Weight
    Log-normal around 2.5 kg, clipped to [0.05, 68] kg; parcels over 30 kg
    take one more ground business day with probability 0.5 (freight handling).
    3 % of weights are missing (empty in the CSV).
Peak season
    Orders from 20 November to 31 December: delay probabilities double,
    ground parcels take one more business day with probability 0.35 and
    express with probability 0.10 (sortation backlog).
Noise
    3 % of parcels take one more business day (missed scans, misroutes).

Scenarios (drift)
-----------------
A scenario applies to every generated row. To simulate drift after a training
period, generate the training range with ``none`` and a later range with the
scenario. All random draws are made per row before any scenario is applied,
so for one seed a scenario that changes only labels leaves every input column
identical to ``none`` (row for row), and a scenario that changes inputs
changes only the rows it must.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

DEFAULT_START = date(2024, 1, 1)
DEFAULT_END = date(2026, 6, 30)
DEFAULT_ROWS = 150_000
DEFAULT_SEED = 20240101

# The network is part of the simulated world, not of the sample drawn from it.
NETWORK_SEED = 7_349_211

CUTOFF_HOUR = 14
PEAK_START = (11, 20)  # (month, day): peak season runs from here to 31 December
HOLIDAY_WINDOW_DAYS = 7

SCENARIOS: MappingProxyType[str, str] = MappingProxyType(
    {
        "none": "No drift: the network as documented in the module docstring.",
        "peak_season": (
            "Inputs and labels. Every order behaves as in peak season (doubled delay "
            "probabilities, sortation backlog), order volume leans to evenings (more "
            "after_cutoff) and to ground service (ground 80 %, express 16 %, overnight 4 %)."
        ),
        "new_carrier": (
            "Inputs and labels. An unseen carrier 'skyhop' takes 25 % of ground and 15 % "
            "of express orders; it is slower (1 050 km/day) and less reliable "
            "(delay probability 0.25, size 1.5) than the others."
        ),
        "zip_shift": (
            "Inputs only (P(transit | zip, origin, ...) is unchanged). Zip popularity is "
            "re-ranked, demand moves west (regions 8-9 get three times their weight) and "
            "15 % of orders go to new zip codes never seen under 'none'."
        ),
        "slow_carrier": (
            "Labels only. Carrier 'redline' degrades: delay probability 0.12 -> 0.45 and "
            "delay size 1.0 -> 2.0. Inputs are identical to 'none' for the same seed."
        ),
        "label_shift": (
            "Labels only. A network-wide slowdown: every parcel takes one more business "
            "day with probability 0.6. Inputs are identical to 'none' for the same seed."
        ),
    }
)

COLUMNS: tuple[str, ...] = (
    "order_time",
    "order_date",
    "day_of_week",
    "hour",
    "day_of_year",
    "after_cutoff",
    "holiday_ahead",
    "origin_warehouse",
    "zip_code",
    "distance_km",
    "carrier",
    "service_level",
    "weight_kg",
    "transit_days",
)

SERVICES: tuple[str, ...] = ("ground", "express", "overnight")
GROUND, EXPRESS, OVERNIGHT = range(3)

# Business-day calendars for numpy.busday_offset (Monday first).
PICKUP_WEEKMASK = "1111100"
DELIVERY_WEEKMASK = {GROUND: "1111100", EXPRESS: "1111110", OVERNIGHT: "1111110"}


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str
    speed_km_per_day: float  # ground linehaul per business day
    delay_probability: float
    delay_size: float  # scale of the exponential extra delay, in business days
    # Market share per service (ground, express, overnight); 0 = does not offer it.
    shares: tuple[float, float, float]


CARRIERS: tuple[Carrier, ...] = (
    Carrier("northstar", 1300.0, 0.05, 0.5, (0.32, 0.45, 0.60)),
    Carrier("bluejay", 1200.0, 0.08, 0.8, (0.28, 0.35, 0.40)),
    Carrier("redline", 1150.0, 0.12, 1.0, (0.22, 0.20, 0.00)),
    Carrier("greenway", 1000.0, 0.18, 1.3, (0.18, 0.00, 0.00)),
)
NEW_CARRIER = Carrier("skyhop", 1050.0, 0.25, 1.5, (0.25, 0.15, 0.00))
SLOW_CARRIER = "redline"

# Warehouses: (code, latitude, longitude).
WAREHOUSES: tuple[tuple[str, float, float], ...] = (
    ("ATL", 33.75, -84.39),
    ("CHI", 41.88, -87.63),
    ("DAL", 32.78, -96.80),
    ("DEN", 39.74, -104.99),
    ("LAX", 34.05, -118.24),
    ("MEM", 35.15, -90.05),
    ("NJE", 40.74, -74.17),
    ("SEA", 47.61, -122.33),
)

# Region (first zip digit) centroids and relative demand.
REGION_CENTROIDS: tuple[tuple[float, float], ...] = (
    (42.5, -72.0),  # 0 New England, NJ
    (41.5, -76.5),  # 1 NY, PA, DE
    (37.0, -78.5),  # 2 DC, MD, VA, WV, NC, SC
    (31.5, -84.5),  # 3 AL, FL, GA, MS, TN
    (40.5, -84.5),  # 4 IN, KY, MI, OH
    (45.0, -95.0),  # 5 IA, MN, MT, ND, SD, WI
    (40.0, -93.0),  # 6 IL, KS, MO, NE
    (32.0, -95.5),  # 7 AR, LA, OK, TX
    (39.0, -110.0),  # 8 AZ, CO, ID, NM, NV, UT, WY
    (39.0, -121.0),  # 9 CA, OR, WA
)

ZIP3_PER_REGION = 40
ZIPS_PER_ZIP3 = (5, 26)  # uniform integer range [low, high)
NEW_ZIPS_PER_ZIP3 = 2  # zip_shift: zips that exist only in that scenario
REMOTE_SHARE = 0.08
ZIPF_EXPONENT = 0.8
NEAREST_ORIGIN_SHARE = 0.70
SERVICE_SHARES = (0.68, 0.24, 0.08)
PEAK_SERVICE_SHARES = (0.80, 0.16, 0.04)
MISSING_WEIGHT_SHARE = 0.03


@dataclass(frozen=True, slots=True)
class Network:
    """The fixed world: zip codes with their zip3 index, popularity and remoteness."""

    zip_codes: np.ndarray  # str, shape (z,)
    zip_zip3: np.ndarray  # int index into zip3 arrays, shape (z,)
    zip_offset_km: np.ndarray  # float, shape (z,)
    zip_remote: np.ndarray  # bool, shape (z,)
    zip_rank: np.ndarray  # int popularity rank (0 = most popular), shape (z,)
    zip_shift_rank: np.ndarray  # the re-ranked popularity of zip_shift
    new_zip_codes: np.ndarray  # zip_shift only: zips that never occur under "none"
    new_zip_zip3: np.ndarray
    new_zip_offset_km: np.ndarray
    new_zip_remote: np.ndarray
    zip3_region: np.ndarray  # int, shape (p,)
    distance_km: np.ndarray  # float, shape (warehouses, p): warehouse -> zip3
    nearest_warehouse: np.ndarray  # int, shape (p,)


def _haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.radians(a) for a in (lat1, lon1, lat2, lon2))
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    distance: np.ndarray = 2 * 6371.0 * np.arcsin(np.sqrt(a))
    return distance


def build_network() -> Network:
    """Build the fixed network from :data:`NETWORK_SEED` (same result on every call)."""
    rng = np.random.default_rng(NETWORK_SEED)
    prefixes: list[str] = []
    regions: list[int] = []
    lats: list[float] = []
    lons: list[float] = []
    for region, (lat, lon) in enumerate(REGION_CENTROIDS):
        chosen = np.sort(rng.choice(100, size=ZIP3_PER_REGION, replace=False))
        prefixes.extend(f"{region}{p:02d}" for p in chosen)
        regions.extend([region] * ZIP3_PER_REGION)
        lats.extend(lat + rng.normal(0.0, 2.0, ZIP3_PER_REGION))
        lons.extend(lon + rng.normal(0.0, 2.5, ZIP3_PER_REGION))
    zip3_lat, zip3_lon = np.asarray(lats), np.asarray(lons)

    codes: list[str] = []
    new_codes: list[str] = []
    zip3_index: list[int] = []
    new_zip3_index: list[int] = []
    for i, prefix in enumerate(prefixes):
        count = int(rng.integers(*ZIPS_PER_ZIP3))
        suffixes = rng.choice(100, size=count + NEW_ZIPS_PER_ZIP3, replace=False)
        codes.extend(f"{prefix}{s:02d}" for s in suffixes[:count])
        zip3_index.extend([i] * count)
        new_codes.extend(f"{prefix}{s:02d}" for s in suffixes[count:])
        new_zip3_index.extend([i] * NEW_ZIPS_PER_ZIP3)
    n_zip, n_new = len(codes), len(new_codes)

    wh_lat = np.array([w[1] for w in WAREHOUSES])[:, None]
    wh_lon = np.array([w[2] for w in WAREHOUSES])[:, None]
    # Road distance is longer than the great circle; a local delivery still drives a bit.
    distance = 10.0 + 1.25 * _haversine_km(wh_lat, wh_lon, zip3_lat[None, :], zip3_lon[None, :])
    return Network(
        zip_codes=np.asarray(codes),
        zip_zip3=np.asarray(zip3_index),
        zip_offset_km=rng.uniform(0.0, 30.0, n_zip),
        zip_remote=rng.random(n_zip) < REMOTE_SHARE,
        zip_rank=rng.permutation(n_zip),
        zip_shift_rank=rng.permutation(n_zip),
        new_zip_codes=np.asarray(new_codes),
        new_zip_zip3=np.asarray(new_zip3_index),
        new_zip_offset_km=rng.uniform(0.0, 30.0, n_new),
        new_zip_remote=rng.random(n_new) < REMOTE_SHARE,
        zip3_region=np.asarray(regions),
        distance_km=distance,
        nearest_warehouse=np.argmin(distance, axis=0),
    )


def _observed(day: date) -> date:
    """A fixed-date holiday on a weekend is observed on the nearest weekday."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    after = date(year + (month == 12), month % 12 + 1, 1)
    last = after - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def public_holidays(year: int) -> list[date]:
    """The network's non-working days of ``year`` (observed dates), sorted."""
    return sorted(
        [
            _observed(date(year, 1, 1)),  # New Year's Day (may fall on 31 Dec of year - 1)
            _last_weekday(year, 5, 0),  # Memorial Day: last Monday of May
            _observed(date(year, 7, 4)),  # Independence Day
            _nth_weekday(year, 9, 0, 1),  # Labor Day: first Monday of September
            _nth_weekday(year, 11, 3, 4),  # Thanksgiving: fourth Thursday of November
            _observed(date(year, 12, 25)),  # Christmas Day
        ]
    )


def holidays_between(start: date, end: date) -> np.ndarray:
    """Holidays as ``datetime64[D]`` covering ``[start, end]`` plus a year of slack.

    The slack covers deliveries after ``end`` and New Year observed on 31 December.
    """
    days = [d for year in range(start.year - 1, end.year + 2) for d in public_holidays(year)]
    return np.array(sorted(days), dtype="datetime64[D]")


def _categorical_draw(u: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: row i picks index k with probability probabilities[i, k].

    ``probabilities`` is (rows, k) or (k,); using the caller's uniforms keeps draws
    aligned row for row across scenarios.
    """
    cumulative = np.cumsum(probabilities, axis=-1)
    cumulative = cumulative / cumulative[..., -1:]
    if cumulative.ndim == 1:
        return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)
    picked = (u[:, None] >= cumulative).sum(axis=1)
    chosen: np.ndarray = np.minimum(picked, cumulative.shape[1] - 1)
    return chosen


def _hour_weights() -> np.ndarray:
    weights = np.full(24, 0.15)
    weights[6:9] = [0.4, 0.8, 1.2]
    weights[9:14] = 1.6
    weights[14:18] = 1.2
    weights[18:22] = [0.9, 1.0, 0.9, 0.6]
    weights[22:24] = [0.4, 0.25]
    return weights


def _in_peak(months: np.ndarray, days: np.ndarray) -> np.ndarray:
    peak: np.ndarray = (months == 12) | ((months == PEAK_START[0]) & (days >= PEAK_START[1]))
    return peak


def generate(
    n_rows: int = DEFAULT_ROWS,
    seed: int = DEFAULT_SEED,
    start: date = DEFAULT_START,
    end: date = DEFAULT_END,
    scenario: str = "none",
) -> pd.DataFrame:
    """Generate ``n_rows`` orders dated within ``[start, end]``, sorted by ``order_time``.

    Columns are :data:`COLUMNS`: ``order_time`` (datetime64), ``order_date`` (str,
    YYYY-MM-DD), ints, bools, strs, ``weight_kg`` (float, NaN when missing) and
    ``transit_days`` (int >= 1). The same arguments always give the same frame.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r} is unknown; choose one of {sorted(SCENARIOS)}")
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if start > end:
        raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")

    net = build_network()
    # One generator per concern, spawned from the seed: draws do not shift when
    # another concern draws more or fewer numbers.
    streams = np.random.SeedSequence(seed).spawn(3)
    when_rng, where_rng, outcome_rng = (np.random.default_rng(s) for s in streams)
    u = {
        name: where_rng.random(n_rows)
        for name in ("zip", "origin", "other_origin", "service", "carrier", "new_zip", "zip_pick")
    }
    weight_z = where_rng.standard_normal(n_rows)
    weight_missing = where_rng.random(n_rows) < MISSING_WEIGHT_SHARE
    o = {
        name: outcome_rng.random(n_rows)
        for name in ("remote", "heavy", "peak", "delay", "noise", "shift")
    }
    delay_exp = outcome_rng.exponential(1.0, n_rows)

    # --- order time -------------------------------------------------------------
    holidays = holidays_between(start, end)
    calendar = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    cal_index = pd.DatetimeIndex(calendar)
    cal_weekday = cal_index.day_of_week.to_numpy()
    cal_peak = _in_peak(cal_index.month.to_numpy(), cal_index.day.to_numpy())
    day_weight = np.where(cal_weekday == 6, 0.35, np.where(cal_weekday == 5, 0.5, 1.0))
    day_weight = day_weight * np.where(np.isin(calendar, holidays), 0.4, 1.0)
    day_weight = day_weight * np.where(cal_peak, 1.5, 1.0)
    day_weight = day_weight * (1.0 + 0.15 * (calendar - calendar[0]).astype(float) / 365.25)
    order_day = calendar[_categorical_draw(when_rng.random(n_rows), day_weight)]

    hour_weights = _hour_weights()
    if scenario == "peak_season":
        hour_weights[17:22] *= 1.8  # evening shopping surge
    hours = _categorical_draw(when_rng.random(n_rows), hour_weights)
    seconds = when_rng.integers(0, 3600, n_rows)
    order_time = order_day.astype("datetime64[s]") + (hours * 3600 + seconds).astype(
        "timedelta64[s]"
    )

    days_index = pd.DatetimeIndex(order_day)
    weekday = days_index.day_of_week.to_numpy()
    in_peak = _in_peak(days_index.month.to_numpy(), days_index.day.to_numpy())
    if scenario == "peak_season":
        in_peak = np.ones(n_rows, dtype=bool)
    after_cutoff = hours >= CUTOFF_HOUR
    next_holiday = holidays[np.minimum(np.searchsorted(holidays, order_day), len(holidays) - 1)]
    holiday_ahead = (next_holiday >= order_day) & (
        (next_holiday - order_day).astype(int) <= HOLIDAY_WINDOW_DAYS
    )

    # --- destination ----------------------------------------------------------------
    region_boost = np.ones(len(REGION_CENTROIDS))
    rank = net.zip_rank
    if scenario == "zip_shift":
        region_boost[8:] = 3.0
        rank = net.zip_shift_rank
    popularity = (rank + 1.0) ** -ZIPF_EXPONENT * region_boost[net.zip3_region[net.zip_zip3]]
    zip_index = _categorical_draw(u["zip"], popularity)
    zip_codes = net.zip_codes[zip_index]
    zip3 = net.zip_zip3[zip_index]
    zip_offset = net.zip_offset_km[zip_index]
    remote = net.zip_remote[zip_index]
    if scenario == "zip_shift":
        to_new = u["new_zip"] < 0.15
        new_index = np.minimum(
            (u["zip_pick"] * len(net.new_zip_codes)).astype(int), len(net.new_zip_codes) - 1
        )
        zip_codes = np.where(to_new, net.new_zip_codes[new_index], zip_codes)
        zip3 = np.where(to_new, net.new_zip_zip3[new_index], zip3)
        zip_offset = np.where(to_new, net.new_zip_offset_km[new_index], zip_offset)
        remote = np.where(to_new, net.new_zip_remote[new_index], remote)

    nearest = net.nearest_warehouse[zip3]
    n_wh = len(WAREHOUSES)
    # Any warehouse but the nearest, uniformly: skip over the nearest index.
    other = np.minimum((u["other_origin"] * (n_wh - 1)).astype(int), n_wh - 2)
    other = other + (other >= nearest)
    origin = np.where(u["origin"] < NEAREST_ORIGIN_SHARE, nearest, other)
    distance = np.round(net.distance_km[origin, zip3] + zip_offset, 1)

    # --- service, carrier, weight ----------------------------------------------------
    shares = PEAK_SERVICE_SHARES if scenario == "peak_season" else SERVICE_SHARES
    service = _categorical_draw(u["service"], np.asarray(shares))
    carriers = (*CARRIERS, NEW_CARRIER) if scenario == "new_carrier" else CARRIERS
    carrier_shares = np.array([c.shares for c in carriers]).T  # (services, carriers)
    if scenario == "new_carrier":
        incumbents = carrier_shares[:, :-1]
        incumbents *= (1.0 - carrier_shares[:, -1:]) / incumbents.sum(axis=1, keepdims=True)
    carrier = _categorical_draw(u["carrier"], carrier_shares[service])

    weight = np.clip(np.round(np.exp(np.log(2.5) + 0.9 * weight_z), 2), 0.05, 68.0)
    heavy = weight > 30.0
    weight = np.where(weight_missing, np.nan, weight)

    # --- outcome: business days in transit ---------------------------------------------
    speed = np.array([c.speed_km_per_day for c in carriers])[carrier]
    delay_p = np.array([c.delay_probability for c in carriers])[carrier]
    delay_size = np.array([c.delay_size for c in carriers])[carrier]
    if scenario == "slow_carrier":
        slow = carrier == [c.name for c in carriers].index(SLOW_CARRIER)
        delay_p = np.where(slow, 0.45, delay_p)
        delay_size = np.where(slow, 2.0, delay_size)

    is_ground = service == GROUND
    is_express = service == EXPRESS
    business_days = np.select(
        [is_ground, is_express],
        [1 + np.floor(distance / speed), 1 + (distance > 1500.0)],
        default=1,
    ).astype(np.int64)
    business_days += np.where(is_ground, remote, remote & (o["remote"] < 0.5))
    business_days += is_ground & heavy & (o["heavy"] < 0.5)
    peak_backlog = np.where(is_ground, 0.35, np.where(is_express, 0.10, 0.0))
    business_days += in_peak & (o["peak"] < peak_backlog)
    delay_p = delay_p * np.where(in_peak, 2.0, 1.0)
    delayed = o["delay"] < delay_p
    business_days += delayed * (1 + np.floor(delay_exp * delay_size).astype(np.int64))
    business_days += o["noise"] < 0.03
    if scenario == "label_shift":
        business_days += o["shift"] < 0.6

    # --- calendar: pickup, then delivery on the service's delivery days ------------------
    ship_day = np.busday_offset(
        order_day + after_cutoff.astype("timedelta64[D]"),
        0,
        roll="forward",
        weekmask=PICKUP_WEEKMASK,
        holidays=holidays,
    )
    delivery_day = np.empty_like(ship_day)
    for level, weekmask in DELIVERY_WEEKMASK.items():
        rows = service == level
        delivery_day[rows] = np.busday_offset(
            ship_day[rows],
            business_days[rows],
            roll="forward",
            weekmask=weekmask,
            holidays=holidays,
        )
    transit_days = (delivery_day - order_day).astype(np.int64)

    frame = pd.DataFrame(
        {
            "order_time": order_time,
            "order_date": np.datetime_as_string(order_day, unit="D"),
            "day_of_week": weekday.astype(np.int64),
            "hour": hours.astype(np.int64),
            "day_of_year": days_index.day_of_year.to_numpy().astype(np.int64),
            "after_cutoff": after_cutoff,
            "holiday_ahead": holiday_ahead,
            "origin_warehouse": np.array([w[0] for w in WAREHOUSES])[origin],
            "zip_code": zip_codes,
            "distance_km": distance,
            "carrier": np.array([c.name for c in carriers])[carrier],
            "service_level": np.array(SERVICES)[service],
            "weight_kg": weight,
            "transit_days": transit_days,
        },
        columns=list(COLUMNS),
    )
    # Stable sort keeps ties in draw order, so the result is a function of the seed alone.
    return frame.sort_values("order_time", kind="stable", ignore_index=True)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a generated frame as CSV: ISO timestamps, lower-case booleans, empty = missing."""
    out = frame.copy()
    out["order_time"] = pd.to_datetime(out["order_time"]).dt.strftime("%Y-%m-%dT%H:%M:%S")
    for column in out.columns:
        if out[column].dtype == bool:
            out[column] = np.where(out[column].to_numpy(), "true", "false")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, na_rep="", lineterminator="\n")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="number of orders")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--start", type=_parse_date, default=DEFAULT_START, help="first order date")
    parser.add_argument("--end", type=_parse_date, default=DEFAULT_END, help="last order date")
    parser.add_argument(
        "--scenario", choices=sorted(SCENARIOS), default="none", help="drift scenario"
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")


def run(args: argparse.Namespace) -> int:
    try:
        frame = generate(args.rows, args.seed, args.start, args.end, args.scenario)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_csv(frame, args.out)
    print(
        f"wrote {len(frame)} orders ({frame['order_date'].iloc[0]} .. "
        f"{frame['order_date'].iloc[-1]}, scenario {args.scenario}) to {args.out}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.datagen", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
