"""Training per model kind on data without dates: point regressors with a conformal
interval, binary and multi-class classifiers, the random split, refit, the baseline
refusal, and loading every published kind the way the server does."""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import catboost
import numpy as np
import pandas as pd
import pytest

from models import dataset, registry, training
from models.artifact import MODEL_FILE, ConformalInterval, ModelKind, Unit
from models.dataset import DatasetError, DatasetSpec
from models.loaded import LoadedVersion

ROOT = Path(__file__).resolve().parent.parent
ROWS = 1200
FAST = {"iterations": 60, "depth": 4, "learning_rate": 0.2, "verbose_every": 0,
        "thread_count": 2, "seed": 7, "validation_fraction": 0.25}
FEATURES = [
    {"name": "x1", "type": "numeric", "description": "no bounds in the spec"},
    {"name": "x2", "type": "numeric"},
    {"name": "shade", "type": "categorical"},
    {"name": "flag", "type": "boolean", "required": False},
]


def make_frame(kind: str, rows: int = ROWS, seed: int = 3) -> pd.DataFrame:
    """Seeded synthetic rows, no date column; ``kind`` picks the target."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0.0, 10.0, rows)
    x2 = rng.normal(0.0, 1.0, rows)
    shade = rng.choice(["red", "green", "blue"], rows)
    flag = rng.choice([True, False], rows)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "shade": shade, "flag": flag})
    if kind == "minutes":  # partly negative: minutes early (-) or late (+)
        frame["delay"] = (6.0 * x1 - 20.0 + 5.0 * (shade == "red") + 3.0 * x2
                          + rng.normal(0.0, 2.0, rows))
    elif kind == "noise":  # skewed and unrelated to the features: the median wins
        frame["delay"] = rng.exponential(10.0, rows)
    elif kind == "binary":
        p = 1.0 / (1.0 + np.exp(-(x1 - 5.0 + 1.5 * x2)))
        frame["outcome"] = np.where(rng.uniform(size=rows) < p, "late", "on_time")
    elif kind == "three":  # integer labels
        logits = np.column_stack([x1 / 2.0, 2.0 * x2 + 2.5, 3.0 * (shade == "blue")])
        frame["grade"] = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    else:
        raise ValueError(kind)
    return frame


def make_spec(target: str, name: str = "kinds_test", unit: str | None = None,
              **training_keys: Any) -> DatasetSpec:
    data: dict[str, Any] = {"name": name, "target": target, "features": FEATURES,
                            "training": {**FAST, **training_keys}}
    if unit is not None:
        data["target_unit"] = unit
    return dataset.parse_spec(data)


REGRESSION = {"target": "delay", "unit": "minutes", "loss": "RMSE"}
BINARY = {"target": "outcome", "loss": "Logloss"}
THREE = {"target": "grade", "loss": "MultiClass"}


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    return make_frame("minutes")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory,
              minutes: pd.DataFrame) -> dict[str, tuple[training.TrainResult, pd.DataFrame, Path]]:
    """One published version per kind (and the quantile kind without dates)."""
    root = tmp_path_factory.mktemp("registry")
    cases = {
        "regression": (make_spec(**REGRESSION, name="regressor"), minutes),
        "binary": (make_spec(**BINARY, name="binary"), make_frame("binary")),
        "three": (make_spec(**THREE, name="three"), make_frame("three")),
        "quantiles": (make_spec("delay", name="quantiles", unit="minutes",
                                loss="MultiQuantile:alpha=0.2,0.5,0.8"), minutes),
    }
    out = {}
    for key, (spec, frame) in cases.items():
        result = training.train(spec, frame, progress=None)
        training.publish_version(result, root=root, version="1.0.0", revision="test")
        out[key] = (result, frame, root)
    return out


def validation_rows(spec: DatasetSpec, frame: pd.DataFrame) -> training.Split:
    return training.random_split(spec, dataset.coerce_frame(spec, frame))


def load(case: tuple[training.TrainResult, pd.DataFrame, Path]) -> LoadedVersion:
    result, _, root = case
    return LoadedVersion.load(root, result.spec.name, "1.0.0")


def matrix(loaded: LoadedVersion, rows: pd.DataFrame) -> np.ndarray:
    return training.model_matrix(loaded.manifest.model_features, rows).to_numpy(dtype=object)


# --- the point regressor ------------------------------------------------------------------------


def test_regressor_manifest_interval_and_metrics(published: dict[str, Any]) -> None:
    result, frame, _ = published["regression"]
    loaded = load(published["regression"])
    manifest = loaded.manifest
    output = manifest.output
    assert (output.kind, output.unit, output.loss) == (ModelKind.REGRESSION, Unit.MINUTES, "RMSE")
    assert output.date_field is None and output.clip_min is None and not output.classes
    assert manifest.metrics.split == "random" and manifest.metrics.validation_start == ""
    assert manifest.training["split"] == "random" and manifest.training["refit"] is False

    split = validation_rows(result.spec, frame)
    y = split.validation["delay"].to_numpy()
    assert manifest.metrics.validation_rows == len(y) == round(ROWS * 0.25)
    scored = loaded.score(matrix(loaded, split.validation))
    assert (scored.value < 0).any()  # nothing clips a partly negative target
    error = scored.value - y
    metrics = manifest.metrics
    assert metrics.mae == pytest.approx(np.abs(error).mean(), rel=1e-5)
    assert metrics.rmse == pytest.approx(np.sqrt((error**2).mean()), rel=1e-5)
    assert metrics.bias == pytest.approx(error.mean(), rel=1e-4, abs=1e-6)
    median = np.median(split.train["delay"])
    assert metrics.baseline_mae == pytest.approx(np.abs(median - y).mean(), rel=1e-5)
    assert metrics.within_one_day is None and metrics.log_loss is None
    assert metrics.mae < 0.5 * metrics.baseline_mae

    # Split conformal: calibrated on one seeded half, coverage measured on the other.
    interval = output.interval
    assert isinstance(interval, ConformalInterval)
    calibration, held_out = training.conformal_halves(len(y), FAST["seed"])
    assert interval.calibration_rows == len(calibration)
    assert interval.held_out_rows == len(held_out) == len(y) - len(calibration)
    residuals = np.sort(np.abs(error[calibration]))
    rank = math.ceil((len(calibration) + 1) * 0.8)
    assert interval.half_width == pytest.approx(residuals[rank - 1], rel=1e-5)
    assert scored.lower is not None and scored.upper is not None
    np.testing.assert_allclose(scored.upper - scored.value, interval.half_width)
    inside = (y[held_out] >= scored.lower[held_out]) & (y[held_out] <= scored.upper[held_out])
    assert interval.held_out_coverage == pytest.approx(inside.mean(), rel=1e-5)
    assert interval.held_out_coverage == pytest.approx(0.8, abs=0.1)
    assert metrics.interval_coverage == interval.held_out_coverage
    assert output.interval_coverage == 0.8


def test_schema_bounds_come_from_the_spec_only(published: dict[str, Any]) -> None:
    loaded = load(published["regression"])
    by_name = {f.name: f for f in loaded.manifest.features}
    assert (by_name["x1"].min, by_name["x1"].max) == (None, None)
    assert by_name["shade"].categories == ("blue", "green", "red")
    assert not by_name["shade"].allow_unknown
    # A value beyond the training range is a request like any other.
    validated = loaded.validate([{"x1": 25.0, "x2": -9.0, "shade": "red"}])
    assert validated.matrix.shape == (1, 4)


def test_drift_reference_is_the_served_answers(published: dict[str, Any]) -> None:
    for key in ("regression", "quantiles"):
        result, frame, _ = published[key]
        loaded = load(published[key])
        train_rows = validation_rows(result.spec, frame).train
        served = loaded.score(matrix(loaded, train_rows)).value
        expected = training.numeric_reference(served)
        assert loaded.manifest.reference.prediction == expected
    result, frame, _ = published["three"]
    loaded = load(published["three"])
    reference = loaded.manifest.reference.prediction
    assert reference.bin_edges == (0.5, 1.5)  # one bin per class
    served = loaded.score(matrix(loaded, validation_rows(result.spec, frame).train)).value
    shares = np.bincount(served.astype(int), minlength=3) / len(served)
    np.testing.assert_allclose(reference.frequencies, shares, atol=1e-6)
    assert load(published["binary"]).manifest.reference.prediction.bin_edges == (0.5,)


def test_summary_follows_unit_and_kind(published: dict[str, Any]) -> None:
    text = training.summary_table(published["regression"][0], "regressor")
    assert "MAE (minutes)" in text and "80% interval coverage" in text
    assert "days" not in text and "within one day" not in text
    text = training.summary_table(published["quantiles"][0], "quantiles")
    assert "[q0.2, q0.8] coverage" in text and "MAE (minutes)" in text
    text = training.summary_table(published["three"][0], "three")
    assert "log loss" in text and "accuracy" in text and "Brier score" in text
    assert "MAE" not in text


# --- classifiers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "classes"), [("binary", ("late", "on_time")),
                                              ("three", ("0", "1", "2"))])
def test_classifier_manifest_and_metrics(published: dict[str, Any], key: str,
                                         classes: tuple[str, ...]) -> None:
    result, frame, _ = published[key]
    loaded = load(published[key])
    output, metrics = loaded.manifest.output, loaded.manifest.metrics
    assert (output.kind, output.unit, output.classes) == (ModelKind.CLASSIFICATION, Unit.NONE,
                                                          classes)
    assert output.interval is None and output.quantiles is None and output.date_field is None
    assert metrics.mae is None and metrics.interval_coverage is None

    split = validation_rows(result.spec, frame)
    target = result.spec.target
    y = np.array([classes.index(str(v)) for v in split.validation[target]])
    proba = loaded.score(matrix(loaded, split.validation)).probabilities
    assert proba is not None
    rows = np.arange(len(y))
    assert metrics.log_loss == pytest.approx(-np.log(proba[rows, y]).mean(), rel=1e-5)
    assert metrics.accuracy == pytest.approx((proba.argmax(axis=1) == y).mean(), rel=1e-5)
    onehot = np.eye(len(classes))[y]
    assert metrics.brier == pytest.approx(((proba - onehot) ** 2).sum(axis=1).mean(), rel=1e-5)
    train_y = [classes.index(str(v)) for v in split.train[target]]
    prior = np.bincount(train_y, minlength=len(classes)) / len(train_y)
    assert metrics.baseline_log_loss == pytest.approx(-np.log(prior[y]).mean(), rel=1e-5)
    assert metrics.log_loss < metrics.baseline_log_loss
    assert "class shares in training" in metrics.baseline


# --- loading what was published -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["regression", "binary", "three", "quantiles"])
def test_loaded_version_answers_what_catboost_predicts(published: dict[str, Any],
                                                       key: str) -> None:
    result, frame, root = published[key]
    loaded = load(published[key])
    rows = matrix(loaded, dataset.coerce_frame(result.spec, frame).head(50))
    scored = loaded.score(rows)
    path = registry.version_path(root, result.spec.name, "1.0.0") / MODEL_FILE
    if loaded.manifest.output.kind is ModelKind.CLASSIFICATION:
        model = catboost.CatBoostClassifier()
        model.load_model(str(path))
        np.testing.assert_array_equal(scored.probabilities, model.predict_proba(rows))
        assert [str(c) for c in model.classes_] == list(loaded.manifest.output.classes)
    else:
        model = catboost.CatBoostRegressor()
        model.load_model(str(path))
        raw = model.predict(rows)
        expected = raw if raw.ndim == 1 else np.sort(raw, axis=1)[:, 1]
        np.testing.assert_array_equal(scored.value, expected)


# --- split, refit, reproducibility --------------------------------------------------------------


def test_random_split_is_seeded(minutes: pd.DataFrame, tmp_path: Path) -> None:
    spec = make_spec(**REGRESSION, iterations=20)
    paths = [training.publish_version(training.train(spec, minutes), root=tmp_path / name,
                                      version="1.0.0") for name in ("a", "b")]
    assert (paths[0] / MODEL_FILE).read_bytes() == (paths[1] / MODEL_FILE).read_bytes()
    typed = dataset.coerce_frame(spec, minutes)
    one, two = training.random_split(spec, typed), training.random_split(spec, typed)
    pd.testing.assert_frame_equal(one.validation, two.validation)
    other = training.random_split(make_spec(**REGRESSION, seed=8), typed)
    assert not one.validation["x1"].equals(other.validation["x1"])


def test_refit_keeps_the_validated_metrics(minutes: pd.DataFrame,
                                           published: dict[str, Any]) -> None:
    plain = published["regression"][0]
    refit = training.train(make_spec(**REGRESSION, name="regressor", refit=True), minutes)
    assert refit.metrics == plain.metrics
    assert refit.output.interval == plain.output.interval
    assert refit.training["refit"] is True and refit.training["refit_rows"] == ROWS
    assert "calibrated before the refit" in refit.training["refit_note"]
    assert refit.model.tree_count_ == plain.model.tree_count_ == FAST["iterations"]
    assert refit.reference.prediction.count == ROWS  # the refit model on all its rows
    rows = training.model_matrix(refit.spec.model_features, dataset.coerce_frame(
        refit.spec, minutes).head(20))
    assert not np.allclose(refit.model.predict(rows), plain.model.predict(rows))


# --- the baseline refusal -----------------------------------------------------------------------


def write_case(tmp_path: Path, frame: pd.DataFrame, spec_lines: str) -> tuple[Path, Path]:
    data, spec = tmp_path / "rows.csv", tmp_path / "spec.toml"
    frame.to_csv(data, index=False)
    features = "".join(f'\n[[features]]\nname = "{f["name"]}"\ntype = "{f["type"]}"\n'
                       + ("required = false\n" if f.get("required") is False else "")
                       for f in FEATURES)
    training_keys = "".join(f"{k} = {v!r}\n" for k, v in FAST.items())
    spec.write_text(f"{spec_lines}\n[training]\n{training_keys}{features}", encoding="utf-8")
    tomllib.loads(spec.read_text(encoding="utf-8"))  # the test writes valid TOML
    return data, spec


def test_a_model_worse_than_its_baseline_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, spec_path = write_case(tmp_path, make_frame("noise"), '''name = "noisy"
target = "delay"
target_unit = "minutes"
''')
    spec_text = spec_path.read_text(encoding="utf-8").replace("[training]\n",
                                                              '[training]\nloss = "RMSE"\n')
    spec_path.write_text(spec_text, encoding="utf-8")
    argv = ["--spec", str(spec_path), "--data", str(data), "--registry", str(tmp_path / "reg"),
            "--version", "1.0.0"]
    assert training.main(argv) == 1
    out, err = capsys.readouterr()
    spec = dataset.load_spec(spec_path)
    result = training.train(spec, dataset.load_csv(spec, data))
    mae, base = result.metrics.mae, result.metrics.baseline_mae
    assert mae is not None and base is not None and mae >= base
    assert f"MAE {mae:g} minutes is not below the baseline's {base:g} minutes" in err
    assert "--allow-worse" in err and "not published" in out
    assert not (tmp_path / "reg" / "noisy" / "1.0.0").exists()

    assert training.main([*argv, "--allow-worse"]) == 0
    assert (tmp_path / "reg" / "noisy" / "1.0.0" / MODEL_FILE).exists()
    allowed = spec.model_copy(update={"training": spec.training.model_copy(
        update={"allow_worse_than_baseline": True})})
    _, path = training.train_and_publish(allowed, data, version="1.0.1", root=tmp_path / "reg")
    assert path.exists()
    with pytest.raises(training.WorseThanBaseline, match="not below the baseline"):
        training.train_and_publish(spec, data, version="1.0.2", root=tmp_path / "reg")


def test_cli_end_to_end_for_a_classifier(tmp_path: Path) -> None:
    data, spec = write_case(tmp_path, make_frame("three"), '''name = "grades"
target = "grade"
''')
    spec.write_text(spec.read_text(encoding="utf-8").replace(
        "[training]\n", '[training]\nloss = "MultiClass"\nrefit = true\n'), encoding="utf-8")
    reg = tmp_path / "reg"
    done = subprocess.run(
        [sys.executable, "-m", "models.training", "--spec", str(spec), "--data", str(data),
         "--version", "0.1.0", "--registry", str(reg)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "grades 0.1.0" in done.stdout and "log loss" in done.stdout
    assert "refit on all 1200 rows" in done.stdout
    loaded = LoadedVersion.load(reg, "grades", "0.1.0")
    assert loaded.manifest.output.classes == ("0", "1", "2")
    assert loaded.manifest.training["refit"] is True


# --- spec rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"training": {"loss": "Banana"}}, "loss 'Banana' is not supported"),
    ({"training": {"loss": "CrossEntropy"}}, "takes probabilities as targets"),
    ({"training": {"loss": "MultiQuantile:alpha=0.1,0.9"}}, "exactly three alphas"),
    ({"training": {"loss": "RMSE", "quantiles": [0.1, 0.5, 0.9]}}, "quantiles only apply"),
    ({"training": {"loss": "Logloss", "interval_coverage": 0.9}}, "interval_coverage applies"),
    ({"training": {"validation_months": 2}}, "validation_months needs a time_column"),
    ({"training": {"loss": "Logloss"}, "target_unit": "minutes"}, "its unit is none"),
    ({"training": {"loss": "MultiClass"}, "clip_min": 0.0}, "clip_min apply to regression"),
    ({"target_unit": "minutes", "date_field": "day", "features": [
        *FEATURES, {"name": "day", "type": "date"}]}, "needs a target in days"),
])
def test_spec_rules_per_kind(change: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {"name": "rules", "target": "delay", "features": FEATURES,
                            "training": dict(FAST)}
    training_keys = change.pop("training", {})
    data = {**data, **change}
    data["training"] = {**data["training"], **training_keys}
    with pytest.raises(DatasetError, match=message):
        dataset.parse_spec(data)


def test_logloss_needs_two_classes() -> None:
    with pytest.raises(DatasetError, match="use MultiClass"):
        training.train(make_spec("grade", loss="Logloss"), make_frame("three"))


def test_units_default_by_kind() -> None:
    assert make_spec("delay", loss="RMSE").unit is Unit.DAYS  # what specs meant before units
    assert make_spec("outcome", loss="Logloss").unit is Unit.NONE
