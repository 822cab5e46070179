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


class OutputSpec(_Frozen):
    """What the model predicts and how the delivery date is derived from it."""

    target: str = "transit_days"
    unit: str = "days"
    description: str = ""
    # Quantiles predicted by the MultiQuantile model, in output column order.
    quantiles: tuple[float, float, float] = (0.1, 0.5, 0.9)
    date_field: str | None = "order_date"
    delivery_date_rule: str = (
        "delivery_date = order_date + round(transit_days) calendar days (half up); "
        "latest_delivery_date = order_date + ceil(interval upper) calendar days"
    )

    _ordered = field_validator("quantiles")(check_quantiles)

    @property
    def interval_coverage(self) -> float:
        return round(self.quantiles[2] - self.quantiles[0], 6)


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
    """Validation metrics of the model and of the naive baseline on the same rows."""

    mae: float
    rmse: float
    interval_coverage: float
    within_one_day: float
    baseline_mae: float
    baseline: str = "median transit days per lane (origin, zip3, service level) in training"
    train_rows: int
    validation_rows: int
    validation_start: str


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
