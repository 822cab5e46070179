"""The model artifact contract: what `models/<name>/<version>/model.json` holds.

A version directory holds exactly two files:

- ``model.cbm``  the CatBoost model in its native format (never pickle: loading a
  pickle runs code),
- ``model.json`` this manifest: semantic version, feature schema, output meaning,
  reference distributions for drift, validation metrics, the sha256 of
  ``model.cbm``, creation time and code revision.

Every model is loaded through :func:`read_manifest` so a manifest that does not
match this schema is refused with a message naming the field.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.naming import MODEL_NAME_RE, is_semver

MANIFEST_FILE = "model.json"
MODEL_FILE = "model.cbm"
FORMAT_VERSION = 1

# Quantile outputs of whole-day targets land a hair off the integer (2.00003);
# a bound within this many days of a whole day counts as that day, both when
# training measures interval coverage and when serving derives dates.
DAY_TOLERANCE = 0.01
LEGACY_DATE_RULE = (
    "delivery_date = order_date + round(transit_days) calendar days (half up); "
    "latest_delivery_date = order_date + ceil(interval upper) calendar days"
)


class ArtifactError(Exception):
    """A model version on disk is not usable: bad manifest, digest, schema or file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_quantiles(value: tuple[float, float, float]) -> tuple[float, float, float]:
    """The (lower, median, upper) quantiles of an interval model, as training and the
    manifest both require them."""
    lower, mid, upper = value
    if not 0.0 < lower < mid < upper < 1.0:
        raise ValueError(f"quantiles must satisfy 0 < lower < median < upper < 1, got {value}")
    return value


class FeatureType(StrEnum):
    NUMERIC = "numeric"  # any finite number
    INTEGER = "integer"  # a whole number
    BOOLEAN = "boolean"  # true / false
    CATEGORICAL = "categorical"  # a string
    DATE = "date"  # YYYY-MM-DD; derives dates, never fed to the model


def check_bounds(name: str, type_: FeatureType, low: float | None, high: float | None) -> None:
    """The range rules a feature obeys in a dataset spec and in a manifest alike."""
    numeric = type_ in (FeatureType.NUMERIC, FeatureType.INTEGER)
    if not numeric and (low is not None or high is not None):
        raise ValueError(f"feature {name!r}: min/max only apply to numeric and integer features")
    if low is not None and high is not None and low > high:
        raise ValueError(f"feature {name!r}: min {low} > max {high}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureSpec(_Frozen):
    """One input of a model version and the rule a request value must satisfy."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    type: FeatureType
    required: bool = True
    description: str = ""
    # Inclusive bounds (numeric, integer).
    min: float | None = None
    max: float | None = None
    # Known categories (categorical) and whether others are accepted.
    categories: tuple[str, ...] = ()
    allow_unknown: bool = False

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        check_bounds(self.name, self.type, self.min, self.max)
        if self.type is FeatureType.CATEGORICAL:
            if not self.categories and not self.allow_unknown:
                raise ValueError(
                    f"feature {self.name!r}: categorical needs categories or allow_unknown"
                )
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: duplicate categories")
        elif self.categories or self.allow_unknown:
            raise ValueError(f"feature {self.name!r}: categories only apply to categorical")
        return self

    @property
    def model_input(self) -> bool:
        """Whether the value is passed to CatBoost (dates only derive the delivery date)."""
        return self.type is not FeatureType.DATE


class ModelKind(StrEnum):
    """What a model is; decides how it is scored, answered, logged and judged
    (:mod:`models.kinds` has one entry per kind)."""

    QUANTILES = "quantiles"  # MultiQuantile regression: median and two outer quantiles
    REGRESSION = "regression"  # one point prediction per row (RMSE, MAE, Poisson, ...)
    CLASSIFICATION = "classification"  # one probability per class (Logloss, MultiClass)


class Unit(StrEnum):
    """The unit of a regression target. Only a duration in days derives dates."""

    DAYS = "days"
    HOURS = "hours"
    MINUTES = "minutes"
    NONE = "none"


class ConformalInterval(_Frozen):
    """A split-conformal interval for a point regressor: ``value +- half_width``.

    ``half_width`` is the ceil((n + 1) * coverage)-th smallest absolute residual of
    ``calibration_rows`` rows the model was not fitted on; under exchangeability the
    interval holds a new outcome with probability at least ``coverage``.
    ``held_out_coverage`` is the share measured on ``held_out_rows`` further rows
    that took no part in the calibration (absent when there were none to spare).
    """

    method: Literal["split_conformal"] = "split_conformal"
    coverage: Annotated[float, Field(gt=0.0, lt=1.0)]
    half_width: Annotated[float, Field(ge=0.0)]
    calibration_rows: Annotated[int, Field(ge=1)]
    held_out_coverage: float | None = None
    held_out_rows: Annotated[int, Field(ge=0)] = 0


class OutputSpec(_Frozen):
    """What the model predicts, in which unit, and what an answer and an outcome hold.

    Manifests written before kinds existed have no ``kind``: they are the demo's
    MultiQuantile delivery models, which the defaults describe.
    """

    kind: ModelKind = ModelKind.QUANTILES
    # CatBoost's loss_function as the model file states it; checked against the kind.
    loss: str = ""
    target: str = "transit_days"
    unit: Unit = Unit.DAYS
    description: str = ""
    # Quantiles predicted by a MultiQuantile model, in output column order (kind quantiles).
    quantiles: tuple[float, float, float] | None = None
    # The calibrated interval of a point regressor (kind regression), when it has one.
    interval: ConformalInterval | None = None
    # The model's class names in its probability column order (kind classification).
    classes: tuple[str, ...] = ()
    # Served values are clipped to these bounds only when the manifest says so.
    clip_min: float | None = None
    clip_max: float | None = None
    # Accepted actuals of a regression target (ReportOutcome); None = unbounded.
    outcome_min: float | None = None
    outcome_max: float | None = None
    # The date feature a duration in days is counted from: answers carry dates only then.
    date_field: str | None = None
    delivery_date_rule: str = ""

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: object) -> object:
        # A manifest from before kinds: a MultiQuantile delivery model counted from
        # order_date (the only shape there was), with its quantiles and rule written out.
        if isinstance(data, dict) and "kind" not in data:
            data = {"quantiles": (0.1, 0.5, 0.9), "date_field": "order_date",
                    "delivery_date_rule": LEGACY_DATE_RULE, "clip_min": 0.0,
                    "outcome_min": 0.0, "outcome_max": 365.0, **data}
        return data

    @field_validator("quantiles")
    @classmethod
    def _ordered(cls, value: tuple[float, float, float] | None) -> tuple[float, float,
                                                                          float] | None:
        return None if value is None else check_quantiles(value)

    @model_validator(mode="after")
    def _check(self) -> OutputSpec:
        kind = self.kind
        if (self.quantiles is not None) != (kind is ModelKind.QUANTILES):
            raise ValueError(f"quantiles are given for kind quantiles only (kind is {kind})")
        if self.interval is not None and kind is not ModelKind.REGRESSION:
            raise ValueError(f"interval is given for kind regression only (kind is {kind})")
        if kind is ModelKind.CLASSIFICATION:
            if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
                raise ValueError("classes must name at least two distinct classes")
            if self.unit is not Unit.NONE:
                raise ValueError(f"a classifier's unit must be none, not {self.unit}")
            if any(v is not None for v in (self.clip_min, self.clip_max, self.outcome_min,
                                           self.outcome_max)):
                raise ValueError("clip and outcome bounds apply to regression kinds only")
        elif self.classes:
            raise ValueError(f"classes are given for kind classification only (kind is {kind})")
        for low, high, what in ((self.clip_min, self.clip_max, "clip"),
                                (self.outcome_min, self.outcome_max, "outcome")):
            if low is not None and high is not None and low > high:
                raise ValueError(f"{what}_min {low} > {what}_max {high}")
        if self.date_field is not None and self.unit is not Unit.DAYS:
            raise ValueError(
                f"date_field {self.date_field!r} needs a target in days (unit is {self.unit}): "
                "only a duration in days from a date derives dates")
        return self

    @property
    def interval_coverage(self) -> float | None:
        """Nominal coverage of the answered interval; None when answers have none."""
        if self.quantiles is not None:
            return round(self.quantiles[2] - self.quantiles[0], 6)
        if self.interval is not None:
            return self.interval.coverage
        return None


class NumericReference(_Frozen):
    """Training distribution of a number: histogram over fixed bin edges.

    ``frequencies`` has ``len(bin_edges) + 1`` entries: below the first edge, each
    interval ``[edge_i, edge_i+1)``, and at or above the last edge. ``quantiles``
    keeps a sorted sample of the training values (for Kolmogorov-Smirnov tests).
    """

    kind: Literal["numeric"] = "numeric"
    count: int
    missing_rate: float = 0.0
    bin_edges: tuple[float, ...]
    frequencies: tuple[float, ...]
    quantiles: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> NumericReference:
        if list(self.bin_edges) != sorted(set(self.bin_edges)):
            raise ValueError("bin_edges must be strictly increasing")
        if len(self.frequencies) != len(self.bin_edges) + 1:
            raise ValueError("frequencies must have len(bin_edges) + 1 entries")
        return self


class CategoricalReference(_Frozen):
    """Training distribution of a category: frequencies of the most common values.

    Values outside ``frequencies`` are pooled into ``other`` so the reference stays
    small for high-cardinality features such as zip codes.
    """

    kind: Literal["categorical"] = "categorical"
    count: int
    missing_rate: float = 0.0
    frequencies: dict[str, float]
    other: float = 0.0


Reference = Annotated[NumericReference | CategoricalReference, Field(discriminator="kind")]


class ReferenceSpec(_Frozen):
    features: dict[str, Reference]
    prediction: NumericReference


class Metrics(_Frozen):
    """Evaluation of the model and of a naive baseline on the same rows.

    Which figures are present follows the kind: regression kinds have ``mae``,
    ``rmse``, ``bias`` and, with an interval, ``interval_coverage``; classifiers have
    ``log_loss``, ``accuracy`` and ``brier``. ``within_one_day`` only for days.
    """

    mae: float | None = None
    rmse: float | None = None
    bias: float | None = None  # mean of (prediction - actual)
    interval_coverage: float | None = None
    within_one_day: float | None = None
    baseline_mae: float | None = None
    log_loss: float | None = None
    accuracy: float | None = None
    brier: float | None = None  # mean over rows of the sum over classes of (p - y)^2
    baseline_log_loss: float | None = None
    baseline: str = "median transit days per lane (origin, zip3, service level) in training"
    train_rows: int
    validation_rows: int
    # The first day of a time split's validation rows; empty for other splits.
    validation_start: str = ""
    # How the evaluation rows were chosen: "time" (after a date), "random" (a seeded
    # share), or "sample" (an imported model, scored on the sample it came with).
    split: Literal["time", "random", "sample"] = "time"

    def figures(self) -> dict[str, float]:
        """The numeric figures present, by name."""
        return {key: float(value) for key, value in self.model_dump().items()
                if isinstance(value, int | float) and not isinstance(value, bool)}


class Manifest(_Frozen):
    format: Literal[1] = 1
    name: Annotated[str, Field(pattern=MODEL_NAME_RE.pattern)]
    version: str
    created_at: str
    code_revision: str
    model_file: Literal["model.cbm"] = "model.cbm"
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size_bytes: int
    features: tuple[FeatureSpec, ...]
    output: OutputSpec
    reference: ReferenceSpec
    metrics: Metrics
    training: dict[str, object] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not is_semver(value):
            raise ValueError(f"version {value!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        return value

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("duplicate feature names")
        date_field = self.output.date_field
        if date_field is not None:
            spec = next((f for f in self.features if f.name == date_field), None)
            if spec is None or spec.type is not FeatureType.DATE:
                raise ValueError(f"output.date_field {date_field!r} is not a date feature")
        missing = [
            f.name for f in self.features if f.model_input and f.name not in self.reference.features
        ]
        if missing:
            raise ValueError(f"reference.features lacks {missing}")
        return self

    @property
    def model_features(self) -> tuple[FeatureSpec, ...]:
        """Features in the column order CatBoost expects."""
        return tuple(f for f in self.features if f.model_input)


def read_manifest(version_dir: Path) -> Manifest:
    path = version_dir / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read manifest ({err.strerror})") from None
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ArtifactError(f"{path}: field {where}: {first['msg']}") from None


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.model_dump(mode="json"), indent=1, sort_keys=False)
    (version_dir / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
