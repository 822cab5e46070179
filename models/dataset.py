"""Dataset specs: which columns of a CSV a model trains on, and how.

A spec is a TOML file, so a user can point training at their own data without
writing code::

    name = "delivery_eta"            # registry model name
    description = "..."
    time_column = "order_time"       # ISO timestamps; drives the time-based split
    target = "transit_days"          # the label (a finite number)
    target_description = "..."
    date_field = "order_date"        # optional: a date feature the server derives dates from

    [baseline]
    lane = ["origin_warehouse", "zip_code[:3]", "service_level"]   # col or col[:N] (prefix)

    [training]                       # every key optional; see TrainingParams
    iterations = 300

    [[features]]                     # in model column order
    name = "distance_km"
    type = "numeric"                 # numeric | integer | boolean | categorical | date
    min = 0.0
    max = 6000.0

Unknown keys are rejected with a message naming the key, so a typo never
silently falls back to a default. :func:`load_csv` reads a CSV and checks every
column the spec needs against its declared type, range and ``required`` flag,
naming the column, the line and the value on failure.

The typed frame returned by :func:`load_csv` and :func:`coerce_frame` holds
``float64`` for numeric, integer and boolean (0/1) features and the target,
``object`` strings (``None`` when missing) for categoricals, ``datetime64`` for
dates and the time column, and the raw strings of lane-only columns.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.artifact import FeatureType, check_bounds, check_quantiles
from models.naming import MODEL_NAME_RE

COLUMN_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
LANE_RE = re.compile(r"^(?P<column>[A-Za-z_][A-Za-z0-9_]{0,63})(?:\[:(?P<prefix>[1-9]\d*)\])?$")
BOOLEAN_TEXT = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}


class DatasetError(ValueError):
    """A spec or a data file does not satisfy the rules; the message names the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureDef(_Frozen):
    """One model input as the user declares it (categories come from the data)."""

    name: Annotated[str, Field(pattern=COLUMN_RE)]
    type: FeatureType
    required: bool = True
    description: str = ""
    min: float | None = None
    max: float | None = None
    allow_unknown: bool = False

    @model_validator(mode="after")
    def _check(self) -> FeatureDef:
        check_bounds(self.name, self.type, self.min, self.max)
        if self.allow_unknown and self.type is not FeatureType.CATEGORICAL:
            raise ValueError(f"feature {self.name!r}: allow_unknown only applies to categorical")
        return self


class LaneKey(_Frozen):
    """A baseline lane column, optionally cut to a prefix (``zip_code[:3]`` = zip3)."""

    column: str
    prefix: int | None = None

    @classmethod
    def parse(cls, text: str) -> LaneKey:
        match = LANE_RE.match(text)
        if match is None:
            raise ValueError(f"lane entry {text!r} must be 'column' or 'column[:N]'")
        prefix = match["prefix"]
        return cls(column=match["column"], prefix=int(prefix) if prefix else None)

    def __str__(self) -> str:
        return self.column if self.prefix is None else f"{self.column}[:{self.prefix}]"


class BaselineSpec(_Frozen):
    """The naive baseline: median target per lane in training, else the global median."""

    lane: tuple[LaneKey, ...]

    @field_validator("lane", mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if isinstance(value, Sequence) and not isinstance(value, str):
            return tuple(LaneKey.parse(v) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("lane")
    @classmethod
    def _non_empty(cls, value: tuple[LaneKey, ...]) -> tuple[LaneKey, ...]:
        if not value:
            raise ValueError("lane needs at least one column")
        return value

    def describe(self) -> str:
        return f"median per lane ({', '.join(map(str, self.lane))}) in training, else global median"


class TrainingParams(_Frozen):
    """CatBoost and split parameters. The size knobs matter: see models/training.py."""

    iterations: Annotated[int, Field(ge=1, le=20_000)] = 300
    depth: Annotated[int, Field(ge=1, le=10)] = 6
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    l2_leaf_reg: Annotated[float, Field(ge=0.0)] = 3.0
    seed: Annotated[int, Field(ge=0)] = 0
    # -1 = every core. CatBoost on CPU gives the same model for the same seed and data.
    thread_count: Annotated[int, Field(ge=-1)] = -1
    validation_months: Annotated[int, Field(ge=1, le=120)] = 3
    quantiles: tuple[float, float, float] = (0.1, 0.5, 0.9)
    # Progress line every N iterations on stderr; 0 = silent.
    verbose_every: Annotated[int, Field(ge=0)] = 50
    # Size/speed knobs: CTR tables of high-cardinality categoricals dominate model size.
    border_count: Annotated[int, Field(ge=1, le=65535)] = 254
    one_hot_max_size: Annotated[int, Field(ge=1, le=255)] = 2
    max_ctr_complexity: Annotated[int, Field(ge=1, le=8)] = 4
    simple_ctr: tuple[str, ...] | None = None  # None = CatBoost's default CTR types
    model_size_reg: Annotated[float, Field(ge=0.0)] = 0.5
    # Keep CTR statistics only for the N most frequent values of each categorical;
    # rarer values are scored as unseen. None = keep all (CatBoost's default).
    ctr_leaf_count_limit: Annotated[int, Field(ge=1)] | None = None

    _ordered = field_validator("quantiles")(check_quantiles)


class DatasetSpec(_Frozen):
    name: Annotated[str, Field(pattern=MODEL_NAME_RE.pattern)]
    description: str = ""
    time_column: Annotated[str, Field(pattern=COLUMN_RE)]
    target: Annotated[str, Field(pattern=COLUMN_RE)]
    target_unit: Literal["days", "hours", "minutes", "none"] = "days"
    target_description: str = ""
    date_field: str | None = None
    # Served predictions are clipped at clip_min only when it is set; ReportOutcome
    # accepts actuals within [outcome_min, outcome_max] (None = unbounded).
    clip_min: float | None = None
    outcome_min: float | None = None
    outcome_max: float | None = None
    features: tuple[FeatureDef, ...]
    baseline: BaselineSpec
    training: TrainingParams = TrainingParams()

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features: duplicate names {duplicates}")
        if not any(f.type is not FeatureType.DATE for f in self.features):
            raise ValueError("features: at least one non-date feature is needed")
        for role in ("target", "time_column"):
            column = getattr(self, role)
            if column in names:
                raise ValueError(f"{role} {column!r} is also listed as a feature")
        if self.target == self.time_column:
            raise ValueError(f"target and time_column are both {self.target!r}")
        if self.date_field is not None:
            spec = self.feature(self.date_field)
            if spec is None or spec.type is not FeatureType.DATE:
                raise ValueError(f"date_field {self.date_field!r} is not a feature of type date")
        return self

    def feature(self, name: str) -> FeatureDef | None:
        return next((f for f in self.features if f.name == name), None)

    @property
    def model_features(self) -> tuple[FeatureDef, ...]:
        """Features fed to CatBoost, in column order (dates only derive delivery dates)."""
        return tuple(f for f in self.features if f.type is not FeatureType.DATE)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every CSV column the spec reads, each once, in a stable order."""
        ordered = [self.time_column, self.target, *(f.name for f in self.features)]
        ordered += [lane.column for lane in self.baseline.lane]
        return tuple(dict.fromkeys(ordered))


# --- spec loading -------------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """Render a pydantic error location; name list items by their 'name' when present."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, Mapping) and isinstance(node.get("name"), str):
                    label = f"[{item}] ({node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, Mapping) else None
    return "".join(parts) or "(top level)"


def parse_spec(data: Mapping[str, Any], source: str = "<spec>") -> DatasetSpec:
    """Validate already-parsed TOML data; errors name every bad key or value."""
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as err:
        lines = []
        for error in err.errors():
            loc = tuple(error["loc"])
            if error["type"] == "extra_forbidden":
                where = _where(loc[:-1], data)
                lines.append(f"unknown key {loc[-1]!r} in {where}")
            elif error["type"] == "missing":
                lines.append(f"{_where(loc, data)}: required key is missing")
            else:
                message = error["msg"].removeprefix("Value error, ")
                lines.append(f"{_where(loc, data)}: {message}")
        raise DatasetError(f"{source}: " + "; ".join(lines)) from None


def load_spec(path: Path) -> DatasetSpec:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read spec ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise DatasetError(f"{path}: not valid TOML: {err}") from None
    return parse_spec(data, str(path))


# --- data loading -------------------------------------------------------------------------------


class _Rows:
    """Names a row the way the user can find it: CSV line number or frame position."""

    def __init__(self, csv: bool) -> None:
        self.csv = csv

    def __call__(self, position: int) -> str:
        return f"line {position + 2}" if self.csv else f"row {position}"


def _blank(values: pd.Series) -> np.ndarray:
    """Missing cells: NA or empty / whitespace-only text."""
    missing: np.ndarray = values.isna().to_numpy()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype(object).where(~missing, "").astype(str).str.strip()
        missing = missing | (text == "").to_numpy()
    return missing


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numbers(column: str, values: pd.Series, rows: _Rows) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        as_float: np.ndarray = values.to_numpy(dtype=np.float64)
        return as_float
    missing = _blank(values)
    numbers: np.ndarray
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = values.astype(object).where(~missing, None)
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(numbers) & ~missing
        if bad.any():
            at = _first(bad)
            raise DatasetError(
                f"column {column!r}, {rows(at)}: {values.iloc[at]!r} is not a number "
                f"({int(bad.sum())} such values)"
            )
    infinite = np.isinf(numbers)
    if infinite.any():
        at = _first(infinite)
        raise DatasetError(f"column {column!r}, {rows(at)}: {values.iloc[at]!r} is not finite")
    return numbers


def _booleans(column: str, values: pd.Series, rows: _Rows) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        as_float: np.ndarray = values.to_numpy(dtype=np.float64)
        return as_float
    missing = _blank(values)
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = values.astype(object).where(~missing, "").astype(str).str.strip().str.lower()
        numbers = text.map(BOOLEAN_TEXT).to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~missing & ~np.isin(numbers, (0.0, 1.0))
    if bad.any():
        at = _first(bad)
        raise DatasetError(
            f"column {column!r}, {rows(at)}: {values.iloc[at]!r} is not a boolean (true/false/1/0)"
        )
    return np.where(missing, np.nan, numbers)


def _dates(column: str, values: pd.Series, rows: _Rows, *, date_only: bool) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        return parsed.dt.normalize() if date_only else parsed
    missing = _blank(values)
    text = values.astype(object).where(~missing, None)
    fmt = "%Y-%m-%d" if date_only else "ISO8601"
    parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=not date_only)
    if not date_only:
        parsed = parsed.dt.tz_localize(None)  # naive timestamps are read as UTC: keep wall time
    bad = parsed.isna().to_numpy() & ~missing
    if bad.any():
        at = _first(bad)
        kind = "date (YYYY-MM-DD)" if date_only else "ISO 8601 timestamp"
        raise DatasetError(f"column {column!r}, {rows(at)}: {values.iloc[at]!r} is not a {kind}")
    return parsed


def _categories(values: pd.Series) -> pd.Series:
    missing = _blank(values)
    if pd.api.types.is_float_dtype(values.dtype):
        # 3.0 and 3 are the same category; a float column of codes is written without ".0".
        text = values.map(lambda v: format(v, "g") if not math.isnan(v) else None)
    else:
        text = values.astype(object).map(lambda v: None if v is None else str(v))
    return text.astype(object).where(~missing, None)


def _check_present(column: str, missing: np.ndarray, rows: _Rows, why: str) -> None:
    if missing.any():
        raise DatasetError(
            f"column {column!r}: {int(missing.sum())} missing values (first at "
            f"{rows(_first(missing))}); {why}"
        )


def _check_range(feature: FeatureDef, numbers: np.ndarray, rows: _Rows) -> None:
    # NaN compares False, so missing values never fail a bound.
    for bound, outside, side in (
        (feature.min, numbers < (feature.min if feature.min is not None else -np.inf), "below min"),
        (feature.max, numbers > (feature.max if feature.max is not None else np.inf), "above max"),
    ):
        if bound is not None and outside.any():
            at = _first(outside)
            raise DatasetError(
                f"column {feature.name!r}, {rows(at)}: {numbers[at]:g} is {side} {bound:g} "
                f"({int(outside.sum())} such values)"
            )


def coerce_frame(spec: DatasetSpec, frame: pd.DataFrame, *, csv: bool = False) -> pd.DataFrame:
    """Check and convert the spec's columns of ``frame`` (strings or typed values).

    Returns a new frame with exactly :attr:`DatasetSpec.columns`, in that order,
    typed as the module docstring says. ``csv`` only changes how rows are named
    in errors (CSV line numbers instead of positions).
    """
    missing_columns = [c for c in spec.columns if c not in frame.columns]
    if missing_columns:
        raise DatasetError(
            f"missing columns {missing_columns}; the spec {spec.name!r} needs {list(spec.columns)}"
        )
    if frame.empty:
        raise DatasetError("the data has no rows")
    rows = _Rows(csv)
    frame = frame.reset_index(drop=True)
    out: dict[str, Any] = {}

    time = _dates(spec.time_column, frame[spec.time_column], rows, date_only=False)
    _check_present(spec.time_column, time.isna().to_numpy(), rows, "the time column needs a value")
    out[spec.time_column] = time

    target = _numbers(spec.target, frame[spec.target], rows)
    _check_present(spec.target, np.isnan(target), rows, "the target needs a value")
    out[spec.target] = target

    for feature in spec.features:
        values = frame[feature.name]
        converted: Any
        if feature.type in (FeatureType.NUMERIC, FeatureType.INTEGER):
            converted = _numbers(feature.name, values, rows)
            missing = np.isnan(converted)
            fraction = ~missing & (converted != np.round(converted))
            if feature.type is FeatureType.INTEGER and fraction.any():
                at = _first(fraction)
                raise DatasetError(
                    f"column {feature.name!r}, {rows(at)}: {values.iloc[at]!r} "
                    "is not a whole number"
                )
            _check_range(feature, converted, rows)
        elif feature.type is FeatureType.BOOLEAN:
            converted = _booleans(feature.name, values, rows)
            missing = np.isnan(converted)
        elif feature.type is FeatureType.CATEGORICAL:
            converted = _categories(values)
            missing = converted.isna().to_numpy()
        else:
            converted = _dates(feature.name, values, rows, date_only=True)
            missing = converted.isna().to_numpy()
        if feature.required:
            _check_present(feature.name, missing, rows, "the spec marks it required")
        out[feature.name] = converted

    for lane in spec.baseline.lane:
        if lane.column not in out:
            out[lane.column] = _categories(frame[lane.column])
    return pd.DataFrame(out, columns=list(spec.columns))


def load_csv(spec: DatasetSpec, path: Path) -> pd.DataFrame:
    """Read the spec's columns from a CSV as text and check them (see :func:`coerce_frame`)."""
    try:
        header = pd.read_csv(path, nrows=0).columns
        missing = [c for c in spec.columns if c not in header]
        if missing:
            raise DatasetError(
                f"{path}: missing columns {missing}; "
                f"the spec {spec.name!r} needs {list(spec.columns)}"
            )
        # Text first, so zip codes keep leading zeros and every conversion is ours to check.
        raw = pd.read_csv(
            path, usecols=list(spec.columns), dtype=str, keep_default_na=False, na_filter=False
        )
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not a readable CSV ({err})") from None
    try:
        return coerce_frame(spec, raw, csv=True)
    except DatasetError as err:
        raise DatasetError(f"{path}: {err}") from None
