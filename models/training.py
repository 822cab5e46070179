"""The training pipeline (it replaces the notebook): spec + data -> a published version.

Steps, each a function so tests and other tools can run them alone:

1. :func:`time_split` - the most recent ``validation_months`` calendar months
   (by the spec's time column) are validation, everything before is training.
   Rows are never shuffled across the boundary: validation is the future.
2. :func:`fit` - a ``CatBoostRegressor`` with ``MultiQuantile`` loss at the spec's
   three quantiles; progress goes to stderr. The model is trained on the
   training split only, so the published metrics describe the published model.
3. :func:`evaluate` - on validation: MAE and RMSE of the median, coverage of the
   [lower, upper] interval, the share whose delivery date (median rounded half
   up) is within one day, and the MAE of the naive lane-median baseline.
4. :func:`build_manifest` - feature schema, drift references, metrics, digest.
5. :func:`publish_version` - writes ``model.cbm`` and ``model.json`` through
   :func:`models.registry.publish` (atomic, refuses existing and non-semver).

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
from typing import Any, TextIO

import catboost
import numpy as np
import pandas as pd

from models import registry
from models.artifact import (
    DAY_TOLERANCE,
    LEGACY_DATE_RULE,
    MODEL_FILE,
    ArtifactError,
    CategoricalReference,
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
)
from models.kinds import model_loss
from models.validation import MISSING_CATEGORY  # serving encodes missing categories the same way

NUMERIC_BINS = 16  # histogram bins per numeric feature: 15 interior quantile edges
REFERENCE_SAMPLE = 200  # sorted quantile sample kept for Kolmogorov-Smirnov tests
TOP_CATEGORIES = 50
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    validation_start: pd.Timestamp


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Validation scores of the model and of the baseline on the same rows."""

    mae: float
    rmse: float
    interval_coverage: float
    within_one_day: float
    baseline_mae: float
    baseline_rmse: float
    baseline_within_one_day: float


@dataclass(frozen=True)
class TrainResult:
    """Everything a version needs except its name, version, digest and timestamps."""

    spec: DatasetSpec
    model: catboost.CatBoostRegressor
    features: tuple[FeatureSpec, ...]
    output: OutputSpec
    reference: ReferenceSpec
    metrics: Metrics
    evaluation: Evaluation
    training: dict[str, Any]
    train_seconds: float
    validation_predictions: np.ndarray = field(repr=False)


# --- split --------------------------------------------------------------------------------------


def time_split(spec: DatasetSpec, frame: pd.DataFrame) -> Split:
    """Validation = the last ``validation_months`` calendar months present in the data.

    With data up to 2026-06-30 and 3 months, validation starts 2026-04-01. Rows
    are put in time order (stable, so equal times keep their input order).
    """
    times = frame[spec.time_column]
    months = spec.training.validation_months
    start = (times.max().to_period("M") - (months - 1)).start_time
    ordered = frame.sort_values(spec.time_column, kind="stable", ignore_index=True)
    is_validation = (ordered[spec.time_column] >= start).to_numpy()
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
    alphas = ",".join(f"{q:g}" for q in params.quantiles)
    result: dict[str, Any] = {
        "loss_function": f"MultiQuantile:alpha={alphas}",
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


def fit(
    spec: DatasetSpec, train: pd.DataFrame, *, progress: TextIO | None = None
) -> catboost.CatBoostRegressor:
    """Fit on the training split; a progress line every ``verbose_every`` iterations.

    ``progress`` (e.g. ``sys.stderr``) receives CatBoost's log; ``None`` discards it.
    The logging period is set either way: CatBoost stores it in ``model.cbm``, and
    the file must not depend on whether someone watched the training.
    """
    features = spec.model_features
    matrix = model_matrix(features, train)
    pool = catboost.Pool(
        matrix,
        label=train[spec.target].to_numpy(dtype=np.float64),
        cat_features=[f.name for f in features if f.type is FeatureType.CATEGORICAL],
        feature_names=[f.name for f in features],
    )
    sink = progress if progress is not None else _Discard()
    model = catboost.CatBoostRegressor(
        **catboost_params(spec.training),
        allow_writing_files=False,  # no catboost_info/ directory in the working tree
    )
    every = spec.training.verbose_every
    model.fit(pool, verbose=every if every else False, log_cout=sink, log_cerr=sink)
    return model


def make_reproducible(model: catboost.CatBoostRegressor, identity: str) -> None:
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


def predict_quantiles(model: catboost.CatBoostRegressor, matrix: pd.DataFrame) -> np.ndarray:
    """(rows, 3) predictions sorted per row: quantile estimates can cross, the truth cannot."""
    raw = np.asarray(model.predict(matrix), dtype=np.float64).reshape(len(matrix), -1)
    return np.sort(raw, axis=1)


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
    """Median target of the row's lane in training; the global median for unseen lanes."""
    medians = train[spec.target].groupby(lane_keys(spec.baseline, train).to_numpy()).median()
    predicted = lane_keys(spec.baseline, rows).map(medians)
    global_median = float(train[spec.target].median())
    filled: np.ndarray = predicted.astype(np.float64).fillna(global_median).to_numpy()
    return filled


def _round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(values + 0.5)


def evaluate(y: np.ndarray, quantiles: np.ndarray, baseline: np.ndarray) -> Evaluation:
    """Scores on validation rows; ``quantiles`` is (rows, 3) sorted, column 1 the median."""
    lower, median, upper = quantiles[:, 0], quantiles[:, 1], quantiles[:, 2]
    tol = DAY_TOLERANCE
    return Evaluation(
        mae=float(np.mean(np.abs(median - y))),
        rmse=float(np.sqrt(np.mean((median - y) ** 2))),
        interval_coverage=float(np.mean((y >= lower - tol) & (y <= upper + tol))),
        within_one_day=float(np.mean(np.abs(_round_half_up(median) - y) <= 1)),
        baseline_mae=float(np.mean(np.abs(baseline - y))),
        baseline_rmse=float(np.sqrt(np.mean((baseline - y) ** 2))),
        baseline_within_one_day=float(np.mean(np.abs(_round_half_up(baseline) - y) <= 1)),
    )


# --- manifest parts -----------------------------------------------------------------------------


def _short(value: float) -> float:
    """Six significant digits: the manifest stays readable and small."""
    return float(f"{value:.6g}")


def numeric_reference(values: np.ndarray) -> NumericReference:
    """Histogram over fixed edges plus a sorted quantile sample (see NumericReference).

    A feature with at most NUMERIC_BINS distinct values (booleans, day of week)
    uses the values themselves as edges, so each bin holds exactly one value and
    the below-first-edge bin is empty in training; otherwise the edges are
    interior quantiles. Frequencies are shares of the non-missing values.
    """
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    present = values[~missing]
    missing_rate = float(missing.mean()) if len(values) else 0.0
    if len(present) == 0:
        return NumericReference(
            count=len(values), missing_rate=missing_rate, bin_edges=(), frequencies=(0.0,)
        )
    distinct = np.unique(present)
    if len(distinct) <= NUMERIC_BINS:
        edges = distinct
    else:
        interior = np.quantile(present, np.linspace(0.0, 1.0, NUMERIC_BINS + 1)[1:-1])
        edges = np.unique([_short(v) for v in interior])
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    sample = np.quantile(present, np.linspace(0.0, 1.0, min(REFERENCE_SAMPLE, len(present))))
    return NumericReference(
        count=len(values),
        missing_rate=_short(missing_rate),
        bin_edges=tuple(float(e) for e in edges),
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
    """The request contract: spec ranges (else observed training min/max), training categories."""
    schema = []
    for feature in spec.features:
        values = train[feature.name]
        low, high, categories = feature.min, feature.max, ()
        if feature.type in (FeatureType.NUMERIC, FeatureType.INTEGER):
            present = values.to_numpy(dtype=np.float64)
            present = present[~np.isnan(present)]
            if low is None and len(present):
                low = float(present.min())
            if high is None and len(present):
                high = float(present.max())
        elif feature.type is FeatureType.CATEGORICAL:
            categories = tuple(sorted(values.dropna().astype(str).unique()))
        schema.append(
            FeatureSpec(
                name=feature.name,
                type=feature.type,
                required=feature.required,
                description=feature.description,
                min=low,
                max=high,
                categories=categories,
                allow_unknown=feature.allow_unknown,
            )
        )
    return tuple(schema)


def references(spec: DatasetSpec, train: pd.DataFrame, train_median: np.ndarray) -> ReferenceSpec:
    features: dict[str, NumericReference | CategoricalReference] = {}
    for feature in spec.model_features:
        values = train[feature.name]
        if feature.type is FeatureType.CATEGORICAL:
            features[feature.name] = categorical_reference(values)
        else:
            features[feature.name] = numeric_reference(values.to_numpy(dtype=np.float64))
    return ReferenceSpec(features=features, prediction=numeric_reference(train_median))


def frame_sha256(frame: pd.DataFrame) -> str:
    """Digest of a frame's content, for data that never was a file."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# --- the pipeline -------------------------------------------------------------------------------


def train(
    spec: DatasetSpec,
    frame: pd.DataFrame,
    *,
    data_source: str = "in-memory frame",
    data_sha256: str | None = None,
    progress: TextIO | None = None,
) -> TrainResult:
    """Split, fit, evaluate and describe a model; nothing is written to disk.

    ``frame`` may hold raw values (e.g. :func:`models.datagen.generate` output) or
    an already typed frame; it is checked with :func:`models.dataset.coerce_frame`
    either way (idempotent, under a second for 150k rows). ``data_sha256``
    defaults to a digest of the checked frame's content.
    """
    frame = coerce_frame(spec, frame)
    split = time_split(spec, frame)
    data_sha256 = data_sha256 or frame_sha256(frame)
    started = time.perf_counter()
    model = fit(spec, split.train, progress=progress)
    train_seconds = time.perf_counter() - started
    make_reproducible(model, spec.model_dump_json() + data_sha256)

    features = spec.model_features
    y_valid = split.validation[spec.target].to_numpy(dtype=np.float64)
    predicted = predict_quantiles(model, model_matrix(features, split.validation))
    baseline = naive_baseline(spec, split.train, split.validation)
    scores = evaluate(y_valid, predicted, baseline)
    train_median = predict_quantiles(model, model_matrix(features, split.train))[:, 1]

    metrics = Metrics(
        mae=_short(scores.mae),
        rmse=_short(scores.rmse),
        interval_coverage=_short(scores.interval_coverage),
        within_one_day=_short(scores.within_one_day),
        baseline_mae=_short(scores.baseline_mae),
        baseline=spec.baseline.describe(),
        train_rows=len(split.train),
        validation_rows=len(split.validation),
        validation_start=split.validation_start.date().isoformat(),
    )
    output = OutputSpec(
        kind=ModelKind.QUANTILES,
        loss=model_loss(model),
        target=spec.target,
        unit=Unit(spec.target_unit),
        description=spec.target_description,
        quantiles=spec.training.quantiles,
        date_field=spec.date_field,
        delivery_date_rule=LEGACY_DATE_RULE if spec.date_field else "",
        clip_min=spec.clip_min,
        outcome_min=spec.outcome_min,
        outcome_max=spec.outcome_max,
    )
    training = {
        "spec": spec.name,
        "data": {
            "source": data_source,
            "sha256": data_sha256,
            "rows": len(frame),
            "first": str(split.train[spec.time_column].iloc[0]),
            "last": str(split.validation[spec.time_column].iloc[-1]),
        },
        "seed": spec.training.seed,
        "validation_months": spec.training.validation_months,
        "params": catboost_params(spec.training),
        "catboost_version": catboost.__version__,
        "trees": model.tree_count_,
        "baseline_rmse": _short(scores.baseline_rmse),
        "baseline_within_one_day": _short(scores.baseline_within_one_day),
    }
    return TrainResult(
        spec=spec,
        model=model,
        features=feature_schema(spec, split.train),
        output=output,
        reference=references(spec, split.train, train_median),
        metrics=metrics,
        evaluation=scores,
        training=training,
        train_seconds=train_seconds,
        validation_predictions=predicted,
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


def summary_table(result: TrainResult, title: str) -> str:
    s, m = result.evaluation, result.metrics
    q_low, _, q_high = result.output.quantiles or (0.0, 0.0, 0.0)
    rows = [
        ("MAE (days)", f"{s.mae:.3f}", f"{s.baseline_mae:.3f}"),
        ("RMSE (days)", f"{s.rmse:.3f}", f"{s.baseline_rmse:.3f}"),
        ("within one day", f"{s.within_one_day:.1%}", f"{s.baseline_within_one_day:.1%}"),
        (f"[q{q_low:g}, q{q_high:g}] coverage", f"{s.interval_coverage:.1%}", "-"),
    ]
    lines = [
        title,
        f"train {m.train_rows} rows, validation {m.validation_rows} rows from "
        f"{m.validation_start}; {result.training['trees']} trees, fit {result.train_seconds:.1f} s",
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


def train_and_publish(
    spec: DatasetSpec,
    data: Path,
    *,
    version: str,
    root: Path,
    name: str | None = None,
    progress: TextIO | None = None,
) -> tuple[TrainResult, Path]:
    """Load a CSV, train and publish; refuses a bad or existing version before training."""
    name = name or spec.name
    final = registry.version_path(root, name, version)
    if final.exists():
        raise ArtifactError(f"{name} {version} already exists at {final}; versions are immutable")
    frame = load_csv(spec, data)
    result = train(
        spec, frame, data_source=data.name, data_sha256=sha256_file(data), progress=progress
    )
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
        )
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
