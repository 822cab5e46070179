"""What a model kind means, in one place per kind.

A kind decides which CatBoost class reads the model file, which losses it may have
been trained with, how a batch is scored into an answer, which number of an answer
prediction drift watches, and how a reported outcome is scored against the logged
prediction. Everything above (serving, transport, monitoring) asks the version's
:class:`Kind` instead of knowing kinds itself.

Nothing here bends an answer: quantiles that cross are put in order (the standard
rearrangement; the set of predicted values is unchanged), and values are clipped only
where the manifest says so (``output.clip_min`` / ``clip_max``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any

import numpy as np
from catboost import CatBoost, CatBoostClassifier, CatBoostRegressor

from models.artifact import ArtifactError, ModelKind, OutputSpec, Unit

# Point regression losses whose ``predict`` answers one number per row in the target's
# unit. Losses outside these lists are refused by name (multi-target, uncertainty, ranking).
POINT_LOSSES = frozenset({
    "RMSE", "MAE", "Quantile", "Expectile", "Huber", "Poisson", "Tweedie", "LogLinQuantile",
    "MAPE", "Lq", "LogCosh", "FairLoss",
})
BINARY_LOSSES = frozenset({"Logloss", "CrossEntropy"})
MULTICLASS_LOSSES = frozenset({"MultiClass"})
# Probabilities below this are read as this when scoring log loss, so one confident
# miss costs about 34.5 nats instead of infinity.
MIN_PROBABILITY = 1e-15


def loss_name(loss: str) -> str:
    """``"MultiQuantile:alpha=0.1,0.5,0.9"`` -> ``"MultiQuantile"``."""
    return loss.split(":", 1)[0]


def loss_params(loss: str) -> dict[str, str]:
    """``"Quantile:alpha=0.8;delta=1"`` -> ``{"alpha": "0.8", "delta": "1"}``."""
    _, _, text = loss.partition(":")
    params: dict[str, str] = {}
    for part in filter(None, text.split(";")):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip()
    return params


def kind_of_loss(loss: str) -> ModelKind:
    """The kind a loss function makes; ArtifactError naming the loss if none does."""
    name = loss_name(loss)
    if name == "MultiQuantile":
        return ModelKind.QUANTILES
    if name in POINT_LOSSES:
        return ModelKind.REGRESSION
    if name in BINARY_LOSSES or name in MULTICLASS_LOSSES:
        return ModelKind.CLASSIFICATION
    raise ArtifactError(
        f"loss {loss!r} is not supported: Waybill serves point regressors "
        f"({', '.join(sorted(POINT_LOSSES))}), MultiQuantile models with three quantiles, and "
        f"classifiers ({', '.join(sorted(BINARY_LOSSES | MULTICLASS_LOSSES))})")


def model_loss(model: CatBoost) -> str:
    """The loss_function the model file records."""
    params: dict[str, Any] = model.get_all_params() or {}
    return str(params.get("loss_function", ""))


def model_classes(model: CatBoost) -> tuple[str, ...]:
    """A classifier's class names in its probability column order, as text."""
    params: dict[str, Any] = model.get_all_params() or {}
    names = params.get("class_names") or []
    return tuple(str(name) for name in names)


@dataclass(frozen=True, slots=True)
class Scored:
    """A batch's answers in row order.

    ``value``: the prediction (regression kinds, in the target's unit), or the index of
    the most probable class (classification), the number prediction drift watches.
    ``lower`` / ``upper``: the interval, when the version has one. ``probabilities``:
    one row per input row, one column per class (classification).
    """

    value: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    def part(self, start: int, end: int) -> Scored:
        """Rows ``start:end`` (views, no copy): one caller's share of a batch."""
        return Scored(self.value[start:end],
                      None if self.lower is None else self.lower[start:end],
                      None if self.upper is None else self.upper[start:end],
                      None if self.probabilities is None else self.probabilities[start:end])


@dataclass(frozen=True, slots=True)
class Logged:
    """What the prediction log kept of one answered row."""

    value: float
    lower: float | None
    upper: float | None
    probabilities: tuple[float, ...] | None
    order_date: str | None
    promised_days: int | None


@dataclass(frozen=True, slots=True)
class Actual:
    """A reported actual, as the caller gave it: exactly one field is set."""

    value: float | None = None  # a number in the model's unit (transit_days is one)
    delivery_date: str | None = None  # YYYY-MM-DD, for models counted from a date
    label: str | None = None  # a class name
    # The request field the number came in ("value" or "transit_days"), for messages.
    number_field: str = "value"


@dataclass(frozen=True, slots=True)
class Terms:
    """One outcome's contribution to a version's accuracy; None where a term does not apply."""

    actual: float  # in the model's unit, or the actual class's index
    label: str | None = None  # the actual class (classification)
    delivery_date: str | None = None  # as reported, when reported as a date
    error: float | None = None  # prediction - actual (regression kinds)
    covered: int | None = None  # lower <= actual <= upper (versions with an interval)
    on_time: int | None = None  # actual <= promised days (delivery models)
    log_loss: float | None = None  # -ln p(actual class) (classification)
    correct: int | None = None  # the most probable class was the actual one
    brier: float | None = None  # sum over classes of (p - [class is actual])^2


class OutcomeRefused(ValueError):
    """An actual this version cannot be scored against; ``field`` names where."""

    def __init__(self, field: str, rule: str, description: str) -> None:
        self.field = field
        self.rule = rule
        self.description = description
        super().__init__(f"{field}: {description}")


class Kind:
    """Behaviour shared by the regression kinds; subclasses say what differs."""

    model_class: type[CatBoost] = CatBoostRegressor

    def check(self, output: OutputSpec, model: CatBoost, where: str) -> None:
        """Refuse a model file whose loss or output does not match the manifest's kind."""
        loss = model_loss(model)
        made = kind_of_loss(loss)
        if made is not output.kind:
            raise ArtifactError(
                f"{where}: the manifest declares kind {output.kind.value}, but the model was "
                f"trained with loss {loss!r}, which makes a {made.value} model")
        if output.loss and loss_name(output.loss) != loss_name(loss):
            raise ArtifactError(f"{where}: the manifest's loss {output.loss!r} is not the "
                                f"model's {loss!r}")

    def predict(self, model: CatBoost, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(matrix, thread_count=1), dtype=np.float64)

    def score(self, output: OutputSpec, model: CatBoost, matrix: np.ndarray) -> Scored:
        raw = self.predict(model, matrix)
        if raw.ndim != 1 or raw.shape[0] != len(matrix):
            raise ArtifactError(f"a point regressor returned shape {raw.shape} for "
                                f"{len(matrix)} rows")
        value = _clip(output, raw)
        if output.interval is None:
            return Scored(value)
        width = output.interval.half_width
        return Scored(value, _clip(output, value - width), _clip(output, value + width))

    def actual(self, output: OutputSpec, field: str, given: Actual,
               logged: Logged) -> float:
        """A reported regression actual in the model's unit; refuses what does not fit."""
        if given.label is not None:
            raise OutcomeRefused(f"{field}.label", "wrong_kind",
                                 "this model is a regression model: report its value")
        if given.delivery_date is not None:
            return _days_from_date(output, f"{field}.delivery_date", given.delivery_date,
                                   logged.order_date)
        number, where = given.value, f"{field}.{given.number_field}"
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise OutcomeRefused(where, "wrong_type", f"expected a number, got {number!r}")
        if not math.isfinite(number):
            raise OutcomeRefused(where, "not_finite", f"expected a finite number, got {number!r}")
        _check_bounds(output, where, float(number))
        return float(number)

    def terms(self, output: OutputSpec, field: str, given: Actual, logged: Logged) -> Terms:
        actual = self.actual(output, field, given, logged)
        covered = (None if logged.lower is None or logged.upper is None
                   else int(logged.lower <= actual <= logged.upper))
        on_time = None if logged.promised_days is None else int(actual <= logged.promised_days)
        return Terms(actual, delivery_date=given.delivery_date, error=logged.value - actual,
                     covered=covered, on_time=on_time)


class QuantilesKind(Kind):
    def check(self, output: OutputSpec, model: CatBoost, where: str) -> None:
        super().check(output, model, where)
        alphas = tuple(float(a) for a in
                       loss_params(model_loss(model)).get("alpha", "").split(",") if a)
        if alphas != output.quantiles:
            raise ArtifactError(f"{where}: the model predicts quantiles {alphas}; the manifest "
                                f"declares {output.quantiles}")

    def score(self, output: OutputSpec, model: CatBoost, matrix: np.ndarray) -> Scored:
        raw = self.predict(model, matrix)
        if raw.ndim != 2 or raw.shape != (len(matrix), 3):
            raise ArtifactError(f"a three-quantile model returned shape {raw.shape} for "
                                f"{len(matrix)} rows")
        # Quantile models can cross; sorting restores lower <= median <= upper.
        ordered = _clip(output, np.sort(raw, axis=1))
        return Scored(ordered[:, 1], ordered[:, 0], ordered[:, 2])


class ClassificationKind(Kind):
    model_class = CatBoostClassifier

    def check(self, output: OutputSpec, model: CatBoost, where: str) -> None:
        super().check(output, model, where)
        loss = model_loss(model)
        if loss_name(loss) in BINARY_LOSSES and len(output.classes) != 2:
            raise ArtifactError(f"{where}: loss {loss!r} makes a binary classifier; the "
                                f"manifest names {len(output.classes)} classes")
        classes = model_classes(model)
        if classes and classes != output.classes:
            raise ArtifactError(f"{where}: the model's classes {list(classes)} are not the "
                                f"manifest's {list(output.classes)}")

    def score(self, output: OutputSpec, model: CatBoost, matrix: np.ndarray) -> Scored:
        proba = np.asarray(model.predict_proba(matrix, thread_count=1), dtype=np.float64)
        if proba.ndim != 2 or proba.shape != (len(matrix), len(output.classes)):
            raise ArtifactError(f"a {len(output.classes)}-class model returned probabilities "
                                f"of shape {proba.shape} for {len(matrix)} rows")
        return Scored(np.argmax(proba, axis=1).astype(np.float64), probabilities=proba)

    def actual(self, output: OutputSpec, field: str, given: Actual,
               logged: Logged) -> float:
        if given.label is None:
            raise OutcomeRefused(f"{field}.label", "wrong_kind",
                                 "this model is a classifier: report the actual class as label")
        try:
            return float(output.classes.index(given.label))
        except ValueError:
            raise OutcomeRefused(f"{field}.label", "unknown_class",
                                 f"{given.label!r} is not one of the model's classes "
                                 f"{list(output.classes)}") from None

    def terms(self, output: OutputSpec, field: str, given: Actual, logged: Logged) -> Terms:
        index = int(self.actual(output, field, given, logged))
        proba = logged.probabilities
        if proba is None or len(proba) != len(output.classes):
            raise OutcomeRefused(f"{field}.prediction_id", "no_probabilities",
                                 "the prediction log holds no class probabilities for it")
        brier = sum((p - (1.0 if i == index else 0.0)) ** 2 for i, p in enumerate(proba))
        return Terms(float(index), label=given.label,
                     log_loss=-math.log(max(proba[index], MIN_PROBABILITY)),
                     correct=int(int(np.argmax(proba)) == index), brier=brier)


KINDS = MappingProxyType({
    ModelKind.QUANTILES: QuantilesKind(),
    ModelKind.REGRESSION: Kind(),
    ModelKind.CLASSIFICATION: ClassificationKind(),
})
_missing = set(ModelKind) - set(KINDS)
if _missing:
    raise ImportError(f"model kinds without behaviour: {sorted(_missing)}")


def _clip(output: OutputSpec, values: np.ndarray) -> np.ndarray:
    if output.clip_min is None and output.clip_max is None:
        return values
    clipped: np.ndarray = np.clip(values, output.clip_min, output.clip_max)
    return clipped


def _check_bounds(output: OutputSpec, field: str, actual: float) -> None:
    unit = "" if output.unit is Unit.NONE else f" {output.unit.value}"
    if output.outcome_min is not None and actual < output.outcome_min:
        raise OutcomeRefused(field, "below_min", f"{actual!r} is below this model's smallest "
                             f"accepted actual, {output.outcome_min:g}{unit}")
    if output.outcome_max is not None and actual > output.outcome_max:
        raise OutcomeRefused(field, "above_max", f"{actual!r} is above this model's largest "
                             f"accepted actual, {output.outcome_max:g}{unit}")


def _days_from_date(output: OutputSpec, field: str, text: str,
                    order_date: str | None) -> float:
    if output.date_field is None:
        raise OutcomeRefused(field, "no_date_field",
                             "this model's target is not counted from a date: report value")
    try:
        delivered = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        delivered = None
    if delivered is None:
        raise OutcomeRefused(field, "invalid_date",
                             f"expected a calendar date as YYYY-MM-DD, got {text!r}")
    try:
        ordered = date.fromisoformat(order_date) if order_date else None
    except ValueError:
        ordered = None  # the hot path logged what the request carried; treat junk as absent
    if ordered is None:
        raise OutcomeRefused(field, "no_order_date",
                             "the prediction had no order date; report the value instead")
    days = float((delivered - ordered).days)
    if delivered < ordered and (output.outcome_min is None or output.outcome_min >= 0):
        raise OutcomeRefused(field, "before_order_date",
                             f"{delivered.isoformat()} is before the order date "
                             f"{ordered.isoformat()}")
    _check_bounds(output, field, days)
    return days


def kind_of(output: OutputSpec) -> Kind:
    return KINDS[output.kind]


def class_labels(output: OutputSpec, indices: Sequence[float]) -> list[str]:
    """Class names of predicted class indices."""
    classes = output.classes
    return [classes[int(i)] for i in indices]
