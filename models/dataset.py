"""Dataset specs: which columns of a CSV a model trains on, and how.

A spec is a TOML file, so a user can point training at their own data without
writing code::

    name = "delivery_eta"            # registry model name
    description = "..."
    time_column = "order_time"       # optional ISO timestamps: a time split (else a seeded
                                     # random split of training.validation_fraction)
    target = "transit_days"          # the label: a finite number, or a class for classifiers
    target_unit = "days"             # days | hours | minutes | none (classifiers: none)
    target_description = "..."
    date_field = "order_date"        # optional: a date feature the server derives dates from

    [baseline]                       # optional: without it the baseline is the training
    lane = ["origin_warehouse", "zip_code[:3]", "service_level"]   # median / class shares

    [training]                       # every key optional; see TrainingParams
    loss = "RMSE"                    # default: MultiQuantile at training.quantiles
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
``float64`` for numeric, integer and boolean (0/1) features and a regression
target, ``object`` strings (``None`` when missing) for categoricals and a
classifier's target (class labels, ``3`` and ``3.0`` both read ``"3"``),
``datetime64`` for dates and the time column, and the raw strings of lane-only
columns.
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

from models.artifact import (
    ArtifactError,
    FeatureType,
    ModelKind,
    Unit,
    check_bounds,
    check_quantiles,
)
from models.kinds import kind_of_loss, loss_name, loss_params
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
    """The naive baseline: median target (a classifier: class shares) per lane in training,
    else the global one."""

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


# Keys added to TrainingParams after the demo specs were first trained. At their defaults they
# change nothing a model is fitted from, so :func:`spec_identity` leaves them out and the demo
# models keep their bytes (CatBoost stores a GUID derived from the identity in model.cbm).
ADDED_TRAINING_KEYS = ("loss", "validation_fraction", "refit", "interval_coverage",
                       "allow_worse_than_baseline")
# Losses kind_of_loss accepts that training does not fit: CrossEntropy takes probabilities
# as targets, not class labels.
UNTRAINED_LOSSES = frozenset({"CrossEntropy"})


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
    # CatBoost's loss_function; it decides the model kind (models.kinds.kind_of_loss).
    # None = MultiQuantile at ``quantiles``, what the demo specs train.
    loss: str | None = None
    # Without a time column: this seeded (``seed``) share of the rows is validation.
    validation_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    # After validation, fit again on every row with the same parameters (and number of
    # trees); the published metrics and interval stay those of the validated model.
    refit: bool = False
    # Nominal coverage of a point regressor's split-conformal interval.
    interval_coverage: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    # Publish even when the model does not beat its baseline on validation.
    allow_worse_than_baseline: bool = False

    _ordered = field_validator("quantiles")(check_quantiles)

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            kind_of_loss(value)
        except ArtifactError as err:
            raise ValueError(str(err)) from None
        if loss_name(value) in UNTRAINED_LOSSES:
            raise ValueError(f"loss {value!r} takes probabilities as targets; train a "
                             "classifier on class labels with Logloss or MultiClass")
        if loss_name(value) == "MultiQuantile":
            text = loss_params(value).get("alpha", "")
            try:
                alphas = tuple(float(a) for a in text.split(",") if a.strip())
            except ValueError:
                raise ValueError(f"loss {value!r}: alpha must be numbers") from None
            if len(alphas) != 3:
                raise ValueError(f"loss {value!r}: MultiQuantile needs exactly three alphas "
                                 "(lower, median, upper), e.g. alpha=0.1,0.5,0.9")
            check_quantiles((alphas[0], alphas[1], alphas[2]))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainingParams:
        if self.loss is not None and "quantiles" in self.model_fields_set:
            if loss_name(self.loss) != "MultiQuantile":
                raise ValueError(f"quantiles only apply to a MultiQuantile loss (loss is "
                                 f"{self.loss!r})")
            if self.output_quantiles != self.quantiles:
                raise ValueError(f"quantiles {list(self.quantiles)} differ from the loss's "
                                 f"alphas {self.loss!r}; give one of them")
        if "interval_coverage" in self.model_fields_set and self.kind is not ModelKind.REGRESSION:
            raise ValueError("interval_coverage applies to point regression losses only "
                             f"(the loss {self.loss_function!r} makes a {self.kind.value} model)")
        return self

    @property
    def loss_function(self) -> str:
        """The loss CatBoost is given."""
        if self.loss is not None:
            return self.loss
        return "MultiQuantile:alpha=" + ",".join(f"{q:g}" for q in self.quantiles)

    @property
    def kind(self) -> ModelKind:
        return kind_of_loss(self.loss_function)

    @property
    def output_quantiles(self) -> tuple[float, float, float] | None:
        """The (lower, median, upper) quantiles a MultiQuantile loss predicts, else None."""
        if self.kind is not ModelKind.QUANTILES:
            return None
        if self.loss is None:
            return self.quantiles
        a, b, c = (float(x) for x in loss_params(self.loss)["alpha"].split(",") if x.strip())
        return (a, b, c)


class DatasetSpec(_Frozen):
    name: Annotated[str, Field(pattern=MODEL_NAME_RE.pattern)]
    description: str = ""
    # None: the data has no time order; validation is a seeded random share of the rows.
    time_column: Annotated[str, Field(pattern=COLUMN_RE)] | None = None
    target: Annotated[str, Field(pattern=COLUMN_RE)]
    # None = days for regression losses (what specs meant before units), none for classifiers.
    target_unit: Literal["days", "hours", "minutes", "none"] | None = None
    target_description: str = ""
    date_field: str | None = None
    # Served predictions are clipped at clip_min only when it is set; ReportOutcome
    # accepts actuals within [outcome_min, outcome_max] (None = unbounded).
    clip_min: float | None = None
    outcome_min: float | None = None
    outcome_max: float | None = None
    features: tuple[FeatureDef, ...]
    # None: the baseline is the global training median (a classifier: the class shares).
    baseline: BaselineSpec | None = None
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
            if column is not None and column in names:
                raise ValueError(f"{role} {column!r} is also listed as a feature")
        if self.target == self.time_column:
            raise ValueError(f"target and time_column are both {self.target!r}")
        if self.baseline is not None and any(lane.column == self.target
                                             for lane in self.baseline.lane):
            raise ValueError(f"baseline.lane uses the target {self.target!r}")
        given = self.training.model_fields_set
        if self.time_column is None and "validation_months" in given:
            raise ValueError("training.validation_months needs a time_column (without one, "
                             "training.validation_fraction sets the random split)")
        if self.time_column is not None and "validation_fraction" in given:
            raise ValueError("training.validation_fraction applies to a random split; with a "
                             "time_column the split is training.validation_months")
        if self.date_field is not None:
            spec = self.feature(self.date_field)
            if spec is None or spec.type is not FeatureType.DATE:
                raise ValueError(f"date_field {self.date_field!r} is not a feature of type date")
        if self.kind is ModelKind.CLASSIFICATION:
            if self.target_unit not in (None, "none"):
                raise ValueError(f"target_unit {self.target_unit!r}: a classifier's target is a "
                                 "class label; its unit is none")
            if self.date_field is not None:
                raise ValueError("date_field derives dates from a duration in days; a "
                                 "classifier has none")
            bounds = [key for key in ("clip_min", "outcome_min", "outcome_max")
                      if getattr(self, key) is not None]
            if bounds:
                raise ValueError(f"{', '.join(bounds)} apply to regression losses only")
        elif self.date_field is not None and self.unit is not Unit.DAYS:
            raise ValueError(f"date_field {self.date_field!r} needs a target in days "
                             f"(target_unit is {self.unit.value})")
        return self

    @property
    def kind(self) -> ModelKind:
        """What the spec's loss makes (models.kinds.kind_of_loss)."""
        return self.training.kind

    @property
    def unit(self) -> Unit:
        if self.target_unit is not None:
            return Unit(self.target_unit)
        return Unit.NONE if self.kind is ModelKind.CLASSIFICATION else Unit.DAYS

    def feature(self, name: str) -> FeatureDef | None:
        return next((f for f in self.features if f.name == name), None)

    @property
    def model_features(self) -> tuple[FeatureDef, ...]:
        """Features fed to CatBoost, in column order (dates only derive delivery dates)."""
        return tuple(f for f in self.features if f.type is not FeatureType.DATE)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every CSV column the spec reads, each once, in a stable order."""
        ordered = [self.time_column] if self.time_column is not None else []
        ordered += [self.target, *(f.name for f in self.features)]
        ordered += [lane.column for lane in self.baseline.lane] if self.baseline else []
        return tuple(dict.fromkeys(ordered))


def spec_identity(spec: DatasetSpec) -> str:
    """The spec as JSON, leaving out :data:`ADDED_TRAINING_KEYS` still at their defaults:
    what a model's identity (its GUID in model.cbm) is derived from."""
    defaults = TrainingParams()
    unchanged = {key for key in ADDED_TRAINING_KEYS
                 if getattr(spec.training, key) == getattr(defaults, key)}
    return spec.model_dump_json(exclude={"training": unchanged})


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

    if spec.time_column is not None:
        time = _dates(spec.time_column, frame[spec.time_column], rows, date_only=False)
        _check_present(spec.time_column, time.isna().to_numpy(), rows,
                       "the time column needs a value")
        out[spec.time_column] = time

    if spec.kind is ModelKind.CLASSIFICATION:
        labels = _categories(frame[spec.target])
        _check_present(spec.target, labels.isna().to_numpy(), rows, "the target needs a class")
        out[spec.target] = labels
    else:
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

    for lane in spec.baseline.lane if spec.baseline else ():
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
