"""The training pipeline (it replaces the notebook): spec + data -> a published version.

Steps, each a function so tests and other tools can run them alone:

1. :func:`split_rows` - with a time column, :func:`time_split`: the most recent
   ``validation_months`` calendar months are validation, everything before is
   training (validation is the future). Without one, :func:`random_split`: a
   ``validation_fraction`` share of the rows drawn with the spec's seed. The
   manifest's ``metrics.split`` says which.
2. :func:`fit` - a ``CatBoostRegressor`` or ``CatBoostClassifier`` with the spec's
   loss (default ``MultiQuantile`` at the spec's three quantiles); progress goes to
   stderr. It is fitted on the training split, so the published metrics describe it.
3. Validation rows are scored exactly as the server scores them
   (:meth:`models.kinds.Kind.score`, clipping included) and, with the naive baseline,
   measured per kind (:func:`regression_figures`, :func:`classification_figures`).
   A point regressor gets a split-conformal interval from the validation residuals
   (:func:`conformal_interval`): calibrated on one seeded half, its coverage measured
   on the other.
4. With ``refit = true`` the model is fitted again, with the same parameters and
   number of trees, on every row; metrics and interval stay those measured on the
   validated model (the manifest's ``training.refit_note`` says so).
5. :func:`build_manifest` - feature schema, drift references, metrics, digest.
6. :func:`publish_version` - writes ``model.cbm`` and ``model.json`` through
   :func:`models.registry.publish` (atomic, refuses existing and non-semver).
   :func:`train_and_publish` (the CLI) first refuses a model that does not beat
   its baseline (:func:`check_beats_baseline`) unless told to publish it anyway.

The model input encoding, which serving must reproduce exactly
(:func:`model_matrix`): columns in :attr:`Manifest.model_features` order; numeric
and integer features as floats, NaN when missing; booleans as 1.0 / 0.0;
categoricals as ``str`` (:data:`MISSING_CATEGORY` when missing); date features
are not model inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import catboost
import numpy as np
import pandas as pd

from models import registry
from models.artifact import (
    LEGACY_DATE_RULE,
    MODEL_FILE,
    ArtifactError,
    CategoricalReference,
    ConformalInterval,
    FeatureSpec,
    FeatureType,
    Manifest,
    Metrics,
    ModelKind,
    NumericReference,
    OutputSpec,
    ReferenceSpec,
    Unit,
    read_manifest,
    sha256_file,
    write_manifest,
)
from models.dataset import (
    BaselineSpec,
    DatasetError,
    DatasetSpec,
    FeatureDef,
    TrainingParams,
    coerce_frame,
    load_csv,
    load_spec,
    spec_identity,
)
from models.evaluation import (
    TooFewRows,
    classification_figures,
    conformal_half_width,
    conformal_halves,
    covered,
    regression_figures,
)
from models.kinds import KINDS, Scored, kind_of, model_classes, model_loss
from models.validation import MISSING_CATEGORY  # serving encodes missing categories the same way

NUMERIC_BINS = 16  # histogram bins per numeric feature: 15 interior quantile edges
REFERENCE_SAMPLE = 200  # sorted quantile sample kept for Kolmogorov-Smirnov tests
TOP_CATEGORIES = 50
REPO_ROOT = Path(__file__).resolve().parent.parent
REFIT_NOTE = (
    "refit on every row after validation with the same parameters and number of trees; the "
    "metrics, the baseline comparison and any interval were measured on the model fitted on "
    "the training split only. The interval was calibrated before the refit: the refit model, "
    "fitted on more rows, usually errs less, so its interval is expected to be conservative, "
    "but no row was left to check that."
)


@dataclass(frozen=True, slots=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    # The first moment of validation (time split); None for a random split.
    validation_start: pd.Timestamp | None = None
    method: Literal["time", "random"] = "time"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Validation figures of the model and of the baseline on the same rows, by name:
    ``mae``, ``rmse``, ``bias``, ``within_one_day`` (days only), ``interval_coverage``
    (regression kinds with an interval; a point regressor's on its held-out half) or
    ``log_loss``, ``accuracy``, ``brier`` (classifiers)."""

    model: dict[str, float]
    baseline: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    """Everything a version needs except its name, version, digest and timestamps."""

    spec: DatasetSpec
    model: catboost.CatBoost  # the published model: refit on every row when the spec says so
    features: tuple[FeatureSpec, ...]
    output: OutputSpec
    reference: ReferenceSpec
    metrics: Metrics
    evaluation: Evaluation
    training: dict[str, Any]
    train_seconds: float
    # The validated model's answers on the validation rows, as the server gives them.
    validation_scored: Scored = field(repr=False)


class WorseThanBaseline(Exception):
    """A trained model does not beat its naive baseline on validation; not published."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


# --- split --------------------------------------------------------------------------------------


def time_split(spec: DatasetSpec, frame: pd.DataFrame) -> Split:
    """Validation = the last ``validation_months`` calendar months present in the data.

    With data up to 2026-06-30 and 3 months, validation starts 2026-04-01. Rows
    are put in time order (stable, so equal times keep their input order).
    """
    column = spec.time_column
    if column is None:
        raise DatasetError("time split: the spec has no time_column")
    times = frame[column]
    months = spec.training.validation_months
    start = (times.max().to_period("M") - (months - 1)).start_time
    ordered = frame.sort_values(column, kind="stable", ignore_index=True)
    is_validation = (ordered[column] >= start).to_numpy()
    if is_validation.all():
        raise DatasetError(
            f"time split: no training rows before {start.date()} (data covers "
            f"{times.min()} .. {times.max()}); lower training.validation_months={months} "
            "or add older data"
        )
    return Split(
        train=ordered[~is_validation].reset_index(drop=True),
        validation=ordered[is_validation].reset_index(drop=True),
        validation_start=start,
    )


def random_split(spec: DatasetSpec, frame: pd.DataFrame) -> Split:
    """Validation = ``round(rows * validation_fraction)`` rows drawn with the spec's seed.

    The same data and seed always give the same split; each part keeps the input order.
    """
    rows = len(frame)
    fraction = spec.training.validation_fraction
    count = round(rows * fraction)
    if count < 2 or rows - count < 2:
        raise DatasetError(
            f"random split: {rows} rows with training.validation_fraction={fraction:g} leave "
            f"{rows - count} training and {count} validation rows; each needs at least 2"
        )
    chosen = np.random.default_rng(spec.training.seed).permutation(rows)[:count]
    is_validation = np.zeros(rows, dtype=bool)
    is_validation[chosen] = True
    frame = frame.reset_index(drop=True)
    return Split(
        train=frame[~is_validation].reset_index(drop=True),
        validation=frame[is_validation].reset_index(drop=True),
        method="random",
    )


def split_rows(spec: DatasetSpec, frame: pd.DataFrame) -> Split:
    """A time split with a time column, else a seeded random split."""
    return time_split(spec, frame) if spec.time_column is not None else random_split(spec, frame)


# --- model --------------------------------------------------------------------------------------


def model_matrix(features: Sequence[FeatureSpec | FeatureDef], frame: pd.DataFrame) -> pd.DataFrame:
    """The CatBoost input for the model features of ``features`` (module docstring: encoding)."""
    columns: dict[str, pd.Series] = {}
    for feature in features:
        if feature.type is FeatureType.DATE:
            continue
        values = frame[feature.name]
        if feature.type is FeatureType.CATEGORICAL:
            text = values.astype(object)
            columns[feature.name] = text.where(text.notna(), MISSING_CATEGORY).astype(object)
        else:
            columns[feature.name] = values.astype(np.float64)
    return pd.DataFrame(columns)


def catboost_params(params: TrainingParams) -> dict[str, Any]:
    """CatBoost constructor arguments for a spec's training parameters (no logging ones)."""
    result: dict[str, Any] = {
        "loss_function": params.loss_function,
        "iterations": params.iterations,
        "depth": params.depth,
        "learning_rate": params.learning_rate,
        "l2_leaf_reg": params.l2_leaf_reg,
        "random_seed": params.seed,
        "thread_count": params.thread_count,
        "border_count": params.border_count,
        "one_hot_max_size": params.one_hot_max_size,
        "max_ctr_complexity": params.max_ctr_complexity,
        "model_size_reg": params.model_size_reg,
    }
    if params.simple_ctr is not None:
        result["simple_ctr"] = list(params.simple_ctr)
        # Unused with max_ctr_complexity=1, but setting only simple_ctr makes CatBoost
        # print a warning on every fit and on every load of the saved model.
        result["combinations_ctr"] = list(params.simple_ctr)
    if params.ctr_leaf_count_limit is not None:
        result["ctr_leaf_count_limit"] = params.ctr_leaf_count_limit
    return result


class _Discard:
    """A write-only sink: CatBoost logs to it when the caller wants silence."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _labels(spec: DatasetSpec, rows: pd.DataFrame) -> np.ndarray:
    """The target as CatBoost takes it: floats, or a classifier's labels as text."""
    if spec.kind is ModelKind.CLASSIFICATION:
        labels: np.ndarray = rows[spec.target].astype(str).to_numpy(dtype=object)
        return labels
    numbers: np.ndarray = rows[spec.target].to_numpy(dtype=np.float64)
    return numbers


def _check_classes(spec: DatasetSpec, train: pd.DataFrame) -> None:
    if spec.kind is not ModelKind.CLASSIFICATION:
        return
    found = sorted(set(_labels(spec, train)))
    if len(found) < 2:
        raise DatasetError(f"target {spec.target!r}: a classifier needs at least two classes "
                           f"in the training rows; found {found}")
    loss = spec.training.loss_function
    if loss.split(":", 1)[0] == "Logloss" and len(found) != 2:
        raise DatasetError(f"target {spec.target!r}: loss {loss!r} fits two classes; the "
                           f"training rows hold {len(found)} ({found[:10]}): use MultiClass")


def fit(
    spec: DatasetSpec, train: pd.DataFrame, *, progress: TextIO | None = None
) -> catboost.CatBoost:
    """Fit on ``train``; a progress line every ``verbose_every`` iterations.

    ``progress`` (e.g. ``sys.stderr``) receives CatBoost's log; ``None`` discards it.
    The logging period is set either way: CatBoost stores it in ``model.cbm``, and
    the file must not depend on whether someone watched the training.
    """
    _check_classes(spec, train)
    features = spec.model_features
    matrix = model_matrix(features, train)
    pool = catboost.Pool(
        matrix,
        label=_labels(spec, train),
        cat_features=[f.name for f in features if f.type is FeatureType.CATEGORICAL],
        feature_names=[f.name for f in features],
    )
    sink = progress if progress is not None else _Discard()
    model = KINDS[spec.kind].model_class(
        **catboost_params(spec.training),
        allow_writing_files=False,  # no catboost_info/ directory in the working tree
    )
    every = spec.training.verbose_every
    model.fit(pool, verbose=every if every else False, log_cout=sink, log_cerr=sink)
    return model


def make_reproducible(model: catboost.CatBoost, identity: str) -> None:
    """Make ``model.cbm`` a function of what was trained, not of when.

    CatBoost stores a random model GUID and the finish time; the GUID becomes a
    digest of ``identity`` (spec and data) and the time is dropped (the manifest
    has ``created_at``), so the same spec, data and seed give the same bytes.
    """
    metadata = model.get_metadata()
    digest = hashlib.sha256(identity.encode()).hexdigest()
    metadata["model_guid"] = "-".join(digest[i : i + 8] for i in range(0, 32, 8))
    if "train_finish_time" in metadata:
        del metadata["train_finish_time"]


def output_spec(spec: DatasetSpec, model: catboost.CatBoost,
                interval: ConformalInterval | None = None) -> OutputSpec:
    """What the model answers, as the manifest states it."""
    classification = spec.kind is ModelKind.CLASSIFICATION
    return OutputSpec(
        kind=spec.kind,
        loss=model_loss(model),
        target=spec.target,
        unit=spec.unit,
        description=spec.target_description,
        quantiles=spec.training.output_quantiles,
        interval=interval,
        classes=model_classes(model) if classification else (),
        clip_min=spec.clip_min,
        outcome_min=spec.outcome_min,
        outcome_max=spec.outcome_max,
        date_field=spec.date_field,
        delivery_date_rule=LEGACY_DATE_RULE if spec.date_field else "",
    )


def score_rows(output: OutputSpec, model: catboost.CatBoost, features: Sequence[FeatureSpec |
               FeatureDef], rows: pd.DataFrame) -> Scored:
    """The server's answers for ``rows``: the same object matrix, the same kind scoring."""
    matrix = model_matrix(features, rows).to_numpy(dtype=object)
    return kind_of(output).score(output, model, matrix)


# --- baseline and metrics -----------------------------------------------------------------------


def lane_keys(baseline: BaselineSpec, frame: pd.DataFrame) -> pd.Series:
    """One string per row naming its lane, e.g. ``ATL|303|ground``."""
    key: pd.Series | None = None
    for lane in baseline.lane:
        values = frame[lane.column]
        if pd.api.types.is_float_dtype(values.dtype):
            text = values.map(lambda v: "" if np.isnan(v) else format(v, "g"))
        else:
            text = values.astype(object).where(values.notna(), "").astype(str)
        if lane.prefix is not None:
            text = text.str.slice(0, lane.prefix)
        key = text if key is None else key + "|" + text
    assert key is not None  # BaselineSpec guarantees at least one lane column
    return key.astype(object).reset_index(drop=True)


def naive_baseline(spec: DatasetSpec, train: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Median target of the row's lane in training; the global median for unseen lanes
    (and for every row when the spec names no lane)."""
    global_median = float(train[spec.target].median())
    if spec.baseline is None:
        return np.full(len(rows), global_median, dtype=np.float64)
    medians = train[spec.target].groupby(lane_keys(spec.baseline, train).to_numpy()).median()
    predicted = lane_keys(spec.baseline, rows).map(medians)
    filled: np.ndarray = predicted.astype(np.float64).fillna(global_median).to_numpy()
    return filled


def class_indices(spec: DatasetSpec, classes: Sequence[str], rows: pd.DataFrame,
                  what: str) -> np.ndarray:
    """Each row's class as its index in ``classes``; refuses a class the model never saw."""
    position = {name: i for i, name in enumerate(classes)}
    labels = _labels(spec, rows)
    unknown = sorted({str(label) for label in labels if label not in position})
    if unknown:
        raise DatasetError(
            f"target {spec.target!r}: {what} rows hold classes {unknown[:10]} that no training "
            f"row has (the model knows {list(classes)[:10]}); add training rows of them or "
            "drop those rows")
    return np.array([position[label] for label in labels], dtype=np.int64)


def baseline_probabilities(spec: DatasetSpec, classes: Sequence[str], train: pd.DataFrame,
                           rows: pd.DataFrame) -> np.ndarray:
    """A classifier's naive baseline, one row of class probabilities per row of ``rows``.

    The class shares in training; with a lane, the lane's shares smoothed toward them
    (``(count + share) / (lane rows + 1)``, so no class gets probability zero), and the
    overall shares for unseen lanes.
    """
    k = len(classes)
    y = class_indices(spec, classes, train, "training")
    counts = np.bincount(y, minlength=k).astype(np.float64)
    prior = counts / counts.sum()
    if spec.baseline is None:
        return np.tile(prior, (len(rows), 1))
    onehot = pd.DataFrame(np.eye(k)[y])
    sums = onehot.groupby(lane_keys(spec.baseline, train).to_numpy()).sum()
    smoothed = (sums + prior).div(sums.sum(axis=1) + 1.0, axis=0)
    table: np.ndarray = smoothed.reindex(lane_keys(spec.baseline, rows).to_numpy()).to_numpy(
        dtype=np.float64)
    unseen = np.isnan(table).any(axis=1)
    table[unseen] = prior
    return table


def baseline_description(spec: DatasetSpec) -> str:
    if spec.kind is ModelKind.CLASSIFICATION:
        if spec.baseline is None:
            return "class shares in training (the majority class for accuracy)"
        lanes = ", ".join(map(str, spec.baseline.lane))
        return (f"class shares per lane ({lanes}) in training, smoothed toward the overall "
                "shares; the overall shares for unseen lanes")
    if spec.baseline is None:
        return "global median of the target in training"
    return spec.baseline.describe()


def conformal_interval(spec: DatasetSpec, model: catboost.CatBoost, validation: pd.DataFrame,
                       ) -> tuple[OutputSpec, Scored]:
    """A point regressor's output with its split-conformal interval, and its answers on the
    validation rows with that interval.

    The validation rows are split in two seeded halves (:func:`conformal_halves`): the
    half-width is calibrated on the residuals of one (:func:`conformal_half_width`), and
    ``held_out_coverage`` is the share of the other inside the served interval (clipped
    as served).
    """
    coverage = spec.training.interval_coverage
    y = validation[spec.target].to_numpy(dtype=np.float64)
    features = spec.model_features
    plain = output_spec(spec, model)
    value = score_rows(plain, model, features, validation).value
    calibration, held_out = conformal_halves(len(y), spec.training.seed)
    try:
        width = _short(conformal_half_width(y[calibration] - value[calibration], coverage))
    except TooFewRows as err:
        raise DatasetError(
            f"{err} (half the validation rows): add rows, raise "
            "training.validation_fraction or lower training.interval_coverage") from None
    interval = ConformalInterval(coverage=coverage, half_width=width,
                                 calibration_rows=len(calibration))
    output = output_spec(spec, model, interval)
    scored = score_rows(output, model, features, validation)
    if len(held_out):
        assert scored.lower is not None and scored.upper is not None
        inside = covered(y[held_out], scored.lower[held_out], scored.upper[held_out], spec.unit)
        interval = ConformalInterval(
            coverage=coverage, half_width=width, calibration_rows=len(calibration),
            held_out_coverage=_short(float(np.mean(inside))), held_out_rows=len(held_out))
        output = output_spec(spec, model, interval)
    return output, scored


def evaluate(spec: DatasetSpec, output: OutputSpec, scored: Scored, train: pd.DataFrame,
             validation: pd.DataFrame) -> Evaluation:
    """The model's and the baseline's figures on the validation rows (see Evaluation)."""
    if output.kind is ModelKind.CLASSIFICATION:
        assert scored.probabilities is not None
        y = class_indices(spec, output.classes, validation, "validation")
        baseline = baseline_probabilities(spec, output.classes, train, validation)
        return Evaluation(classification_figures(y, scored.probabilities),
                          classification_figures(y, baseline))
    actual = validation[spec.target].to_numpy(dtype=np.float64)
    figures = regression_figures(actual, scored, output.unit)
    if output.interval is not None:
        # Only the held-out half took no part in choosing the half-width.
        held_out = output.interval.held_out_coverage
        figures.pop("interval_coverage", None)
        if held_out is not None:
            figures["interval_coverage"] = held_out
    base = Scored(naive_baseline(spec, train, validation))
    return Evaluation(figures, regression_figures(actual, base, output.unit))


def baseline_shortfall(result: TrainResult) -> str | None:
    """Why the model does not beat its baseline on validation, naming both figures; None
    when it does (lower MAE for regression kinds, lower log loss for classifiers)."""
    metrics = result.metrics
    if result.output.kind is ModelKind.CLASSIFICATION:
        what, model, base = "log loss", metrics.log_loss, metrics.baseline_log_loss
    else:
        what, model, base = "MAE", metrics.mae, metrics.baseline_mae
    assert model is not None and base is not None
    if model < base:
        return None
    unit = "" if result.output.unit is Unit.NONE else f" {result.output.unit.value}"
    return (f"the model's validation {what} {model:g}{unit} is not below the baseline's "
            f"{base:g}{unit} ({metrics.baseline})")


def check_beats_baseline(result: TrainResult, name: str | None = None) -> None:
    """Raise :class:`WorseThanBaseline` when the model does not beat its baseline."""
    shortfall = baseline_shortfall(result)
    if shortfall is not None:
        raise WorseThanBaseline(
            f"{name or result.spec.name}: not published: {shortfall}. Pass --allow-worse or "
            "set training.allow_worse_than_baseline = true to publish it anyway", result)


# --- manifest parts -----------------------------------------------------------------------------


def _short(value: float) -> float:
    """Six significant digits: the manifest stays readable and small."""
    return float(f"{value:.6g}")


def numeric_reference(values: np.ndarray,
                      edges: Sequence[float] | None = None) -> NumericReference:
    """Histogram over fixed edges plus a sorted quantile sample (see NumericReference).

    ``edges`` fixes the bin edges (a classifier's predicted class indices use
    ``k - 0.5``, one bin per class). Otherwise a feature with at most NUMERIC_BINS
    distinct values (booleans, day of week) uses the values themselves as edges, so
    each bin holds exactly one value and the below-first-edge bin is empty in
    training; else the edges are interior quantiles. Frequencies are shares of the
    non-missing values.
    """
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    present = values[~missing]
    missing_rate = float(missing.mean()) if len(values) else 0.0
    fixed = None if edges is None else np.asarray(edges, dtype=np.float64)
    if len(present) == 0:
        return NumericReference(
            count=len(values), missing_rate=missing_rate,
            bin_edges=() if fixed is None else tuple(float(e) for e in fixed),
            frequencies=(0.0,) * (1 if fixed is None else len(fixed) + 1),
        )
    if fixed is not None:
        cuts = fixed
    else:
        distinct = np.unique(present)
        if len(distinct) <= NUMERIC_BINS:
            cuts = distinct
        else:
            interior = np.quantile(present, np.linspace(0.0, 1.0, NUMERIC_BINS + 1)[1:-1])
            cuts = np.unique([_short(v) for v in interior])
    counts = np.bincount(np.searchsorted(cuts, present, side="right"), minlength=len(cuts) + 1)
    sample = np.quantile(present, np.linspace(0.0, 1.0, min(REFERENCE_SAMPLE, len(present))))
    return NumericReference(
        count=len(values),
        missing_rate=_short(missing_rate),
        bin_edges=tuple(float(e) for e in cuts),
        frequencies=tuple(_short(c / len(present)) for c in counts),
        quantiles=tuple(_short(v) for v in sample),
    )


def categorical_reference(values: pd.Series) -> CategoricalReference:
    """Shares of the TOP_CATEGORIES most common values; the rest pooled into ``other``."""
    missing = values.isna().to_numpy()
    present = values[~missing].astype(str)
    missing_rate = float(missing.mean()) if len(values) else 0.0
    if len(present) == 0:
        return CategoricalReference(count=len(values), missing_rate=missing_rate, frequencies={})
    counts = present.value_counts()
    # Ties broken by the value so the manifest does not depend on hash order.
    table = pd.DataFrame({"value": counts.index.astype(str), "n": counts.to_numpy()})
    top = table.sort_values(["n", "value"], ascending=[False, True], kind="stable").head(
        TOP_CATEGORIES
    )
    total = len(present)
    return CategoricalReference(
        count=len(values),
        missing_rate=_short(missing_rate),
        frequencies={
            str(v): _short(n / total) for v, n in zip(top["value"], top["n"], strict=True)
        },
        other=_short((total - int(top["n"].sum())) / total),
    )


def feature_schema(spec: DatasetSpec, train: pd.DataFrame) -> tuple[FeatureSpec, ...]:
    """The request contract: the spec's ranges (none where the spec gives none: training
    min/max are not limits of what may come), the training rows' categories."""
    schema = []
    for feature in spec.features:
        categories: tuple[str, ...] = ()
        if feature.type is FeatureType.CATEGORICAL:
            categories = tuple(sorted(train[feature.name].dropna().astype(str).unique()))
        schema.append(
            FeatureSpec(
                name=feature.name,
                type=feature.type,
                required=feature.required,
                description=feature.description,
                min=feature.min,
                max=feature.max,
                categories=categories,
                allow_unknown=feature.allow_unknown,
            )
        )
    return tuple(schema)


def prediction_reference(output: OutputSpec, scored: Scored) -> NumericReference:
    """The drift reference of what the server answers: the value (a classifier: the index
    of the most probable class, one bin per class)."""
    if output.kind is ModelKind.CLASSIFICATION:
        edges = [k - 0.5 for k in range(1, len(output.classes))]
        # No quantile sample: a Kolmogorov-Smirnov test means nothing on class indices.
        return numeric_reference(scored.value, edges).model_copy(update={"quantiles": ()})
    return numeric_reference(scored.value)


def references(spec: DatasetSpec, train: pd.DataFrame, prediction: NumericReference
               ) -> ReferenceSpec:
    features: dict[str, NumericReference | CategoricalReference] = {}
    for feature in spec.model_features:
        values = train[feature.name]
        if feature.type is FeatureType.CATEGORICAL:
            features[feature.name] = categorical_reference(values)
        else:
            features[feature.name] = numeric_reference(values.to_numpy(dtype=np.float64))
    return ReferenceSpec(features=features, prediction=prediction)


def frame_sha256(frame: pd.DataFrame) -> str:
    """Digest of a frame's content, for data that never was a file."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _metrics(spec: DatasetSpec, kind: ModelKind, evaluation: Evaluation, split: Split
             ) -> Metrics:
    figures: dict[str, Any] = {name: _short(value) for name, value in evaluation.model.items()}
    if kind is ModelKind.CLASSIFICATION:
        figures["baseline_log_loss"] = _short(evaluation.baseline["log_loss"])
    else:
        figures["baseline_mae"] = _short(evaluation.baseline["mae"])
    return Metrics.model_validate({
        **figures,
        "baseline": baseline_description(spec),
        "train_rows": len(split.train),
        "validation_rows": len(split.validation),
        "validation_start": (split.validation_start.date().isoformat()
                             if split.validation_start is not None else ""),
        "split": split.method,
    })


# --- the pipeline -------------------------------------------------------------------------------


def train(
    spec: DatasetSpec,
    frame: pd.DataFrame,
    *,
    data_source: str = "in-memory frame",
    data_sha256: str | None = None,
    progress: TextIO | None = None,
) -> TrainResult:
    """Split, fit, evaluate (and refit when the spec says so); nothing is written to disk.

    ``frame`` may hold raw values (e.g. :func:`models.datagen.generate` output) or
    an already typed frame; it is checked with :func:`models.dataset.coerce_frame`
    either way (idempotent, under a second for 150k rows). ``data_sha256``
    defaults to a digest of the checked frame's content.
    """
    frame = coerce_frame(spec, frame)
    split = split_rows(spec, frame)
    data_sha256 = data_sha256 or frame_sha256(frame)
    identity = spec_identity(spec) + data_sha256
    started = time.perf_counter()
    model = fit(spec, split.train, progress=progress)
    train_seconds = time.perf_counter() - started
    make_reproducible(model, identity)

    features = spec.model_features
    if spec.kind is ModelKind.REGRESSION:
        output, scored = conformal_interval(spec, model, split.validation)
    else:
        output = output_spec(spec, model)
        scored = score_rows(output, model, features, split.validation)
    evaluation = evaluate(spec, output, scored, split.train, split.validation)
    metrics = _metrics(spec, output.kind, evaluation, split)

    fitted_rows = split.train
    validated_trees = model.tree_count_
    if spec.training.refit:
        fitted_rows = pd.concat([split.train, split.validation], ignore_index=True)
        started = time.perf_counter()
        model = fit(spec, fitted_rows, progress=progress)
        train_seconds += time.perf_counter() - started
        make_reproducible(model, identity)
        if model_classes(model) != output.classes and output.kind is ModelKind.CLASSIFICATION:
            raise DatasetError(f"the refit model's classes {list(model_classes(model))} are not "
                               f"the validated model's {list(output.classes)}")

    training: dict[str, Any] = {
        "spec": spec.name,
        "data": {"source": data_source, "sha256": data_sha256, "rows": len(frame)},
        "seed": spec.training.seed,
        "split": split.method,
    }
    if spec.time_column is not None:
        training["data"]["first"] = str(split.train[spec.time_column].iloc[0])
        training["data"]["last"] = str(split.validation[spec.time_column].iloc[-1])
        training["validation_months"] = spec.training.validation_months
    else:
        training["validation_fraction"] = spec.training.validation_fraction
    training |= {
        "params": catboost_params(spec.training),
        "catboost_version": catboost.__version__,
        "trees": model.tree_count_,
    }
    shown = set(Metrics.model_fields)
    training |= {f"baseline_{name}": _short(value)
                 for name, value in evaluation.baseline.items()
                 if f"baseline_{name}" not in shown}
    training["refit"] = spec.training.refit
    if spec.training.refit:
        training |= {"refit_rows": len(fitted_rows), "validated_trees": validated_trees,
                     "refit_note": REFIT_NOTE}
    # The drift reference: the published model's answers on the rows it was fitted on,
    # exactly as the server computes them.
    prediction = prediction_reference(output, score_rows(output, model, features, fitted_rows))
    return TrainResult(
        spec=spec,
        model=model,
        features=feature_schema(spec, fitted_rows),
        output=output,
        reference=references(spec, fitted_rows, prediction),
        metrics=metrics,
        evaluation=evaluation,
        training=training,
        train_seconds=train_seconds,
        validation_scored=scored,
    )


def code_revision(repo: Path = REPO_ROOT) -> str:
    """``git rev-parse HEAD`` (+ ``-dirty`` when tracked files changed), else ``unknown``."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if dirty else head


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_manifest(
    result: TrainResult,
    *,
    name: str,
    version: str,
    sha256: str,
    size_bytes: int,
    created_at: str,
    revision: str,
) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        created_at=created_at,
        code_revision=revision,
        sha256=sha256,
        size_bytes=size_bytes,
        features=result.features,
        output=result.output,
        reference=result.reference,
        metrics=result.metrics,
        training=result.training,
    )


def publish_version(
    result: TrainResult,
    *,
    root: Path = registry.DEFAULT_ROOT,
    version: str,
    name: str | None = None,
    created_at: str | None = None,
    revision: str | None = None,
) -> Path:
    """Write ``model.cbm`` + ``model.json`` and publish them atomically; return the path.

    Raises :class:`ArtifactError` when the version exists or is not semver.
    """
    name = name or result.spec.name
    created_at = created_at or utc_now()
    revision = revision or code_revision()

    def build(tmp: Path) -> None:
        model_path = tmp / MODEL_FILE
        result.model.save_model(str(model_path), format="cbm")
        manifest = build_manifest(
            result,
            name=name,
            version=version,
            sha256=sha256_file(model_path),
            size_bytes=model_path.stat().st_size,
            created_at=created_at,
            revision=revision,
        )
        write_manifest(tmp, manifest)
        # Read it back the way the loader will, so a version that cannot load is never published.
        if read_manifest(tmp) != manifest:
            raise ArtifactError(f"{name} {version}: manifest does not round-trip through JSON")

    return registry.publish(root, name, version, build)


# --- command line -------------------------------------------------------------------------------


SHARES = frozenset({"within_one_day", "interval_coverage", "accuracy"})
FIGURE_ORDER = ("mae", "rmse", "bias", "within_one_day", "interval_coverage", "log_loss",
                "accuracy", "brier")


def figure_label(name: str, output: OutputSpec) -> str:
    """A summary row's label: in the target's unit, and the interval the kind has."""
    unit = "" if output.unit is Unit.NONE else f" ({output.unit.value})"
    if name == "interval_coverage":
        if output.quantiles is not None:
            low, _, high = output.quantiles
            return f"[q{low:g}, q{high:g}] coverage"
        coverage = output.interval_coverage or 0.0
        return f"{coverage:.0%} interval coverage"
    return {"mae": f"MAE{unit}", "rmse": f"RMSE{unit}", "bias": f"bias{unit}",
            "within_one_day": "within one day", "log_loss": "log loss",
            "accuracy": "accuracy", "brier": "Brier score"}[name]


def summary_table(result: TrainResult, title: str) -> str:
    evaluation, m, output = result.evaluation, result.metrics, result.output

    def shown(name: str, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.1%}" if name in SHARES else f"{value:.3f}"

    rows = [(figure_label(name, output), shown(name, evaluation.model[name]),
             shown(name, evaluation.baseline.get(name) if name != "interval_coverage" else None))
            for name in FIGURE_ORDER if name in evaluation.model]
    if m.split == "time":
        where = f"validation {m.validation_rows} rows from {m.validation_start}"
    else:
        fraction = result.spec.training.validation_fraction
        where = (f"validation {m.validation_rows} rows (random {fraction:.0%}, seed "
                 f"{result.spec.training.seed})")
    refit = (f"; refit on all {result.training['refit_rows']} rows"
             if result.training.get("refit") else "")
    interval = output.interval
    notes = []
    if interval is not None:
        notes.append(f"interval: +-{interval.half_width:g} from {interval.calibration_rows} "
                     f"calibration rows; coverage measured on {interval.held_out_rows} others"
                     + (" (calibrated before the refit)" if refit else ""))
    lines = [
        title,
        f"{output.kind.value} model ({output.loss}); train {m.train_rows} rows, {where}; "
        f"{result.training['trees']} trees, fit {result.train_seconds:.1f} s{refit}",
        f"baseline: {m.baseline}",
        *notes,
        f"{'metric':<24}{'model':>10}{'baseline':>10}",
        *(f"{label:<24}{model:>10}{base:>10}" for label, model, base in rows),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=Path, required=True, help="dataset spec (TOML)")
    parser.add_argument("--data", type=Path, required=True, help="training data (CSV)")
    parser.add_argument("--version", required=True, help="semantic version to publish, X.Y.Z")
    parser.add_argument(
        "--registry",
        type=Path,
        default=registry.DEFAULT_ROOT,
        help=f"registry root (default {registry.DEFAULT_ROOT})",
    )
    parser.add_argument("--name", help="model name (default: the spec's name)")
    parser.add_argument(
        "--allow-worse",
        action="store_true",
        help="publish even when the model does not beat its baseline on validation "
        "(as training.allow_worse_than_baseline = true)",
    )


def train_and_publish(
    spec: DatasetSpec,
    data: Path,
    *,
    version: str,
    root: Path,
    name: str | None = None,
    progress: TextIO | None = None,
    allow_worse: bool = False,
) -> tuple[TrainResult, Path]:
    """Load a CSV, train and publish; refuses a bad or existing version before training,
    and a model that does not beat its baseline (:class:`WorseThanBaseline`) unless
    ``allow_worse`` or the spec's ``allow_worse_than_baseline`` says to publish it."""
    name = name or spec.name
    final = registry.version_path(root, name, version)
    if final.exists():
        raise ArtifactError(f"{name} {version} already exists at {final}; versions are immutable")
    frame = load_csv(spec, data)
    result = train(
        spec, frame, data_source=data.name, data_sha256=sha256_file(data), progress=progress
    )
    if not (allow_worse or spec.training.allow_worse_than_baseline):
        check_beats_baseline(result, name)
    return result, publish_version(result, root=root, version=version, name=name)


def run(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec)
        result, path = train_and_publish(
            spec,
            args.data,
            version=args.version,
            root=args.registry,
            name=args.name,
            progress=sys.stderr,
            allow_worse=bool(getattr(args, "allow_worse", False)),
        )
    except WorseThanBaseline as err:
        print(summary_table(err.result, f"{args.name or err.result.spec.name} {args.version}: "
                            "not published"))
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (DatasetError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size_kb = (path / MODEL_FILE).stat().st_size / 1024
    print(summary_table(result, f"{path.parent.name} {path.name} -> {path} ({size_kb:.0f} KB)"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.training", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
