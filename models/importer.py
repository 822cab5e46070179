"""Register a CatBoost model trained elsewhere (a notebook, another pipeline) as a version.

    waybill registry import MODEL --name NAME --version X.Y.Z --data SAMPLE.csv
        [--target COLUMN] [--unit none|days|hours|minutes] [--registry DIR] ...

MODEL is a CatBoost native file (``model.save_model("model.cbm")``) or an MLflow model
directory saved with the catboost flavor (its ``MLmodel`` file names the model file; MLflow
itself is not needed). The model file decides the kind (its loss function) and the
feature columns (its own feature names and categorical indices). The sample CSV gives
each feature's type, its known categories, whether it may be missing, the drift
references, and, when it has the target, the metrics and a point regressor's
split-conformal interval.

The schema is deliberately loose where a sample cannot know better: numeric features get
no bounds (a sample's min and max are not the model's domain), categorical features
accept unseen values (CatBoost scores them as unseen). Tighten them in the manifest
before publishing if the domain is known.

Refused, with the reason: a pickle or anything that is not a CatBoost native model, a
model without feature names, a feature the sample lacks, an unsupported loss, a target
that does not fit the kind, and a version that exists.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from catboost import CatBoost, CatBoostError

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
from models.evaluation import (
    TooFewRows,
    classification_figures,
    conformal_half_width,
    conformal_halves,
    covered,
    regression_figures,
    short,
)
from models.kinds import KINDS, kind_of, kind_of_loss, model_classes, model_loss
from models.loaded import LoadedVersion
from models.training import (
    categorical_reference,
    code_revision,
    numeric_reference,
    prediction_reference,
    utc_now,
)
from models.validation import MISSING_CATEGORY

MLMODEL_FILE = "MLmodel"
FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # as FeatureSpec.name requires
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})


@dataclass(frozen=True)
class ImportOptions:
    name: str
    version: str
    data: Path
    target: str | None = None
    unit: Unit = Unit.NONE
    description: str = ""
    date_field: str | None = None
    interval_coverage: float | None = 0.8
    clip_min: float | None = None
    clip_max: float | None = None
    outcome_min: float | None = None
    outcome_max: float | None = None
    seed: int = 0
    kind: ModelKind | None = None  # what the caller expects; refused if the loss says otherwise


def model_file(path: Path) -> Path:
    """The CatBoost native file ``path`` names: itself, or an MLflow catboost model's."""
    if path.is_dir():
        mlmodel = path / MLMODEL_FILE
        if not mlmodel.is_file():
            raise ArtifactError(f"{path}: a directory without an MLmodel file is not an "
                                "MLflow model; give the .cbm file itself")
        try:
            described = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ArtifactError(f"{mlmodel}: cannot read it ({err})") from None
        flavor = (described.get("flavors") or {}).get("catboost") if isinstance(
            described, dict) else None
        if not isinstance(flavor, dict):
            raise ArtifactError(f"{mlmodel}: no catboost flavor; only MLflow models saved "
                                "with mlflow.catboost can be imported")
        save_format = flavor.get("save_format", "cbm")
        if save_format != "cbm":
            raise ArtifactError(f"{mlmodel}: the model was saved as {save_format!r}; "
                                "only CatBoost's native cbm format is imported")
        path = path / str(flavor.get("data", "model.cb"))
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(registry.CBM_MAGIC))
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read it ({err.strerror})") from None
    if magic != registry.CBM_MAGIC:
        raise ArtifactError(
            f"{path}: not a CatBoost native model (starts with {magic!r}); pickle and joblib "
            "files are never loaded: save the model with model.save_model(path)")
    return path


def read_sample(path: Path) -> pd.DataFrame:
    """Every column as text, as written: leading zeros and category spellings survive."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path}: cannot read the sample ({err})") from None


def _feature(name: str, values: pd.Series, categorical: bool) -> tuple[FeatureSpec, object]:
    """A feature's schema and its column as the model takes it (floats or strings)."""
    missing = values.isna()
    required = not bool(missing.any())
    present = values[~missing]
    if categorical:
        categories = tuple(sorted(present.unique()))
        spec = FeatureSpec(name=name, type=FeatureType.CATEGORICAL, required=required,
                           categories=categories, allow_unknown=True,
                           description="categorical (from the import sample)")
        return spec, values.fillna(MISSING_CATEGORY)
    if len(present) and present.isin(_TRUE | _FALSE).all():
        spec = FeatureSpec(name=name, type=FeatureType.BOOLEAN, required=required,
                           description="true or false (from the import sample)")
        return spec, values.map(lambda v: np.nan if pd.isna(v) else float(v in _TRUE))
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & ~missing
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ArtifactError(f"feature {name!r} is numeric in the model, but sample row "
                            f"{row + 2} holds {values.iloc[row]!r}")
    spec = FeatureSpec(name=name, type=FeatureType.NUMERIC, required=required,
                       description="number (from the import sample)")
    return spec, numbers.astype(np.float64)


def _date_feature(frame: pd.DataFrame, name: str) -> FeatureSpec:
    if name not in frame.columns:
        raise ArtifactError(f"--date-field {name!r} is not a column of the sample")
    parsed = pd.to_datetime(frame[name], format="%Y-%m-%d", errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise ArtifactError(f"--date-field {name!r}: sample row {row + 2} is not a YYYY-MM-DD "
                            f"date ({frame[name].iloc[row]!r})")
    return FeatureSpec(name=name, type=FeatureType.DATE,
                       description="date the target is counted from; not a model input")


def _target(frame: pd.DataFrame, column: str, kind: ModelKind,
            classes: tuple[str, ...]) -> np.ndarray:
    """The target as the model's unit (regression) or as class indices."""
    if column not in frame.columns:
        raise ArtifactError(f"--target {column!r} is not a column of the sample")
    values = frame[column]
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise ArtifactError(f"target {column!r} is missing in sample row {row + 2}")
    if kind is ModelKind.CLASSIFICATION:
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(values) - set(index))
        if unknown:
            raise ArtifactError(f"target {column!r} holds {unknown[:5]}, which are not among "
                                f"the model's classes {list(classes)}")
        indices: np.ndarray = values.map(index).to_numpy(dtype=np.int64)
        return indices
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise ArtifactError(f"target {column!r} of a regression model is not a number in "
                            f"sample row {row + 2} ({values.iloc[row]!r})")
    target: np.ndarray = numbers.to_numpy(dtype=np.float64)
    return target


def describe(model: CatBoost, sample: pd.DataFrame, options: ImportOptions,
             loss: str) -> tuple[tuple[FeatureSpec, ...], OutputSpec, ReferenceSpec, Metrics]:
    """Schema, output, drift references and metrics of a model, from a sample."""
    kind = kind_of_loss(loss)
    names = list(model.feature_names_ or [])
    unusable = [n for n in names if FEATURE_NAME.fullmatch(n) is None]
    if not names or unusable:
        raise ArtifactError(
            f"the model's feature names {unusable[:5] or names} are not usable as request "
            "fields; train it on a DataFrame whose columns are named like identifiers "
            "(letters, digits, _)")
    lacking = [n for n in names if n not in sample.columns]
    if lacking:
        raise ArtifactError(f"the sample lacks the model's features {lacking}")
    categorical = set(model.get_cat_feature_indices())
    features: list[FeatureSpec] = []
    columns: dict[str, object] = {}
    for i, name in enumerate(names):
        spec, column = _feature(name, sample[name], i in categorical)
        features.append(spec)
        columns[name] = column
    matrix = pd.DataFrame(columns)[names].to_numpy(dtype=object)

    classes = model_classes(model) if kind is ModelKind.CLASSIFICATION else ()
    if kind is ModelKind.CLASSIFICATION and options.unit is not Unit.NONE:
        raise ArtifactError(f"a classifier has no unit; --unit {options.unit.value} does not apply")
    quantiles: tuple[float, float, float] | None = None
    if kind is ModelKind.QUANTILES:
        alphas = tuple(float(a) for a in loss.partition("alpha=")[2].split(",") if a)
        if len(alphas) != 3:
            raise ArtifactError(f"loss {loss!r}: Waybill serves MultiQuantile models of exactly "
                                "three quantiles (lower, median, upper)")
        quantiles = (alphas[0], alphas[1], alphas[2])
    if options.date_field is not None:
        features.insert(0, _date_feature(sample, options.date_field))
    output = OutputSpec(
        kind=kind, loss=loss, target=options.target or "target", unit=options.unit,
        description=options.description, quantiles=quantiles, classes=classes,
        clip_min=options.clip_min, clip_max=options.clip_max,
        outcome_min=options.outcome_min, outcome_max=options.outcome_max,
        date_field=options.date_field,
        delivery_date_rule=LEGACY_DATE_RULE if options.date_field else "")
    scorer = kind_of(output)
    scored = scorer.score(output, model, matrix)

    figures: dict[str, float] = {}
    rows = 0
    if options.target is not None:
        y = _target(sample, options.target, kind, classes)
        rows = len(y)
        if kind is ModelKind.CLASSIFICATION:
            assert scored.probabilities is not None
            prior = np.bincount(y, minlength=len(classes)) / len(y)
            figures = classification_figures(y, scored.probabilities)
            figures["baseline_log_loss"] = classification_figures(
                y, np.tile(prior, (len(y), 1)))["log_loss"]
        else:
            if kind is ModelKind.REGRESSION and options.interval_coverage is not None:
                output = _with_interval(output, y, scored.value, options)
                scored = kind_of(output).score(output, model, matrix)
            figures = regression_figures(y, scored, options.unit)
            figures["baseline_mae"] = float(np.mean(np.abs(np.median(y) - y)))
    references: dict[str, NumericReference | CategoricalReference] = {}
    for spec in features:
        if spec.type is FeatureType.DATE:
            continue
        column = columns[spec.name]
        references[spec.name] = (categorical_reference(sample[spec.name])
                                 if spec.type is FeatureType.CATEGORICAL
                                 else numeric_reference(np.asarray(column, dtype=np.float64)))
    prediction = prediction_reference(output, scored)
    metrics = Metrics(
        **{key: short(value) for key, value in figures.items()},  # type: ignore[arg-type]
        baseline=("class shares of the sample" if kind is ModelKind.CLASSIFICATION
                  else "median target of the sample") if rows else "none (no target given)",
        train_rows=0, validation_rows=rows, split="sample")
    return tuple(features), output, ReferenceSpec(features=references,
                                                  prediction=prediction), metrics


def _with_interval(output: OutputSpec, y: np.ndarray, value: np.ndarray,
                   options: ImportOptions) -> OutputSpec:
    """A split-conformal interval from the sample, which must be rows the model was not
    fitted on (the import cannot check that; residuals of training rows are too small).
    Without enough rows for the coverage, the version answers no interval."""
    coverage = options.interval_coverage
    assert coverage is not None
    calibration, held_out = conformal_halves(len(y), options.seed)
    try:
        width = conformal_half_width(y[calibration] - value[calibration], coverage)
    except TooFewRows:
        return output
    held = None
    if len(held_out):
        inside = covered(y[held_out], value[held_out] - width, value[held_out] + width,
                         options.unit)
        held = short(float(np.mean(inside)))
    interval = ConformalInterval(coverage=coverage, half_width=width,
                                 calibration_rows=len(calibration), held_out_coverage=held,
                                 held_out_rows=len(held_out))
    return output.model_copy(update={"interval": interval})


def import_model(source: Path, options: ImportOptions,
                 root: Path = registry.DEFAULT_ROOT) -> Path:
    """Check, describe and publish ``source`` as ``options.name`` ``options.version``."""
    if registry.version_path(root, options.name, options.version).exists():
        raise ArtifactError(f"{options.name} {options.version} already exists in {root}; "
                            "versions are immutable: choose a new version")
    path = model_file(source)
    model = CatBoost()
    try:
        model.load_model(str(path), format="cbm")
    except CatBoostError as err:
        raise ArtifactError(f"{path}: CatBoost cannot load it ({err})") from None
    loss = model_loss(model)
    kind = kind_of_loss(loss)
    if options.kind is not None and options.kind is not kind:
        raise ArtifactError(f"{path}: --kind {options.kind.value} was given, but the model was "
                            f"trained with loss {loss!r}, which makes a {kind.value} model")
    # Score with the class the notebook used, so answers equal its predict/predict_proba.
    typed = KINDS[kind].model_class()
    typed.load_model(str(path), format="cbm")
    sample = read_sample(options.data)
    features, output, reference, metrics = describe(typed, sample, options, loss)

    def build(tmp: Path) -> None:
        target = tmp / MODEL_FILE
        shutil.copyfile(path, target)
        manifest = Manifest(
            name=options.name, version=options.version, created_at=utc_now(),
            code_revision=code_revision(), sha256=sha256_file(target),
            size_bytes=target.stat().st_size, features=features, output=output,
            reference=reference, metrics=metrics,
            training={"imported_from": str(source), "sample": str(options.data),
                      "sample_rows": len(sample), "seed": options.seed})
        write_manifest(tmp, manifest)
        if read_manifest(tmp) != manifest:
            raise ArtifactError("the manifest does not round-trip through JSON")
        _load_check(tmp, options)

    return registry.publish(root, options.name, options.version, build)


def _load_check(tmp: Path, options: ImportOptions) -> None:
    """Load the staged version the way the server will; a version that cannot serve is
    never published."""
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / options.name / options.version
        shutil.copytree(tmp, staged)
        LoadedVersion.load(Path(scratch), options.name, options.version)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path,
                        help="a CatBoost .cbm file, or an MLflow model directory (catboost)")
    parser.add_argument("--name", required=True, help="model name, e.g. arrival_delay")
    parser.add_argument("--version", required=True, help="semantic version, e.g. 1.0.0")
    parser.add_argument("--data", type=Path, required=True,
                        help="sample CSV with every feature column (and the target, for metrics)")
    parser.add_argument("--target", help="the sample's target column: metrics and an interval")
    parser.add_argument("--kind", choices=[k.value for k in ModelKind],
                        help="the kind you expect; refused when the model's loss makes another")
    parser.add_argument("--unit", choices=[u.value for u in Unit], default=Unit.NONE.value,
                        help="unit of a regression target (default none)")
    parser.add_argument("--description", default="", help="what the model predicts")
    parser.add_argument("--date-field", help="a YYYY-MM-DD column the target (in days) is "
                        "counted from: answers then carry dates")
    parser.add_argument("--interval-coverage", type=float, default=0.8,
                        help="coverage of a point regressor's conformal interval (default 0.8)")
    parser.add_argument("--no-interval", action="store_true",
                        help="no interval for a point regressor")
    for bound in ("clip-min", "clip-max", "outcome-min", "outcome-max"):
        parser.add_argument(f"--{bound}", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration split")
    parser.add_argument("--registry", type=Path, default=registry.DEFAULT_ROOT,
                        help="registry root (default: models/)")


def run(args: argparse.Namespace) -> int:
    options = ImportOptions(
        name=args.name, version=args.version, data=args.data, target=args.target,
        unit=Unit(args.unit), description=args.description, date_field=args.date_field,
        interval_coverage=None if args.no_interval else args.interval_coverage,
        clip_min=args.clip_min, clip_max=args.clip_max, outcome_min=args.outcome_min,
        outcome_max=args.outcome_max, seed=args.seed,
        kind=ModelKind(args.kind) if args.kind else None)
    path = import_model(args.model, options, args.registry)
    manifest = read_manifest(path)
    figures = ", ".join(f"{k} {v:g}" for k, v in manifest.metrics.figures().items()
                        if not k.endswith("_rows"))
    print(f"imported {manifest.name} {manifest.version} ({manifest.output.kind.value}, "
          f"loss {manifest.output.loss}) to {path}")
    if figures:
        print(f"on the sample ({manifest.metrics.validation_rows} rows): {figures}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
