"""The training pipeline: spec parsing, CSV checks, time split, fit, manifest, publish."""

from __future__ import annotations

import argparse
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import catboost
import numpy as np
import pandas as pd
import pytest

from models import datagen, dataset, registry, training
from models.artifact import (
    MODEL_FILE,
    ArtifactError,
    CategoricalReference,
    FeatureType,
    NumericReference,
    sha256_file,
)
from models.build_demo import DEMO_VERSIONS
from models.dataset import DatasetError, DatasetSpec

SPEC_FILE = DEMO_VERSIONS[-1][1]  # delivery_eta 1.1.0: every feature type
FAST = {"iterations": 40, "depth": 4, "learning_rate": 0.3, "verbose_every": 0, "thread_count": 2}
START, END = date(2024, 3, 1), date(2025, 2, 28)


def spec_data(**training: Any) -> dict[str, Any]:
    with SPEC_FILE.open("rb") as handle:
        data = tomllib.load(handle)
    data["training"] = {**data["training"], **FAST, "validation_months": 2, **training}
    return data


def make_spec(**training: Any) -> DatasetSpec:
    return dataset.parse_spec(spec_data(**training))


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return datagen.generate(6000, 21, START, END)


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return make_spec()


@pytest.fixture(scope="module")
def frame(spec: DatasetSpec, orders: pd.DataFrame) -> pd.DataFrame:
    return dataset.coerce_frame(spec, orders)


@pytest.fixture(scope="module")
def result(spec: DatasetSpec, orders: pd.DataFrame) -> training.TrainResult:
    # Raw generator output: train() checks and types it itself.
    return training.train(spec, orders, progress=None)


@pytest.fixture(scope="module")
def published(
    result: training.TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("registry")
    return root, training.publish_version(result, root=root, version="1.1.0")


# --- committed specs ----------------------------------------------------------------------------


def test_committed_specs_load_and_grow() -> None:
    (v0, path0), (v1, path1) = DEMO_VERSIONS
    old, new = dataset.load_spec(path0), dataset.load_spec(path1)
    assert (v0, v1) == ("1.0.0", "1.1.0")
    assert {f.name for f in old.features} < {f.name for f in new.features}
    for spec in (old, new):
        by_name = {f.name: f for f in spec.features}
        assert by_name["carrier"].allow_unknown
        assert not by_name["service_level"].allow_unknown
        assert not by_name["origin_warehouse"].allow_unknown
    assert new.feature("zip_code").allow_unknown  # type: ignore[union-attr]
    assert not new.feature("weight_kg").required  # type: ignore[union-attr]


# --- spec errors --------------------------------------------------------------------------------


def test_unknown_training_key_is_named() -> None:
    data = spec_data()
    data["training"]["iteratons"] = 10
    with pytest.raises(DatasetError, match=r"unknown key 'iteratons' in training"):
        dataset.parse_spec(data)


def test_unknown_feature_key_names_the_feature() -> None:
    data = spec_data()
    data["features"][3]["alow_unknown"] = True
    with pytest.raises(
        DatasetError, match=r"unknown key 'alow_unknown' in features\[3\] \(carrier\)"
    ):
        dataset.parse_spec(data)


def test_unknown_top_level_key_is_named() -> None:
    data = {**spec_data(), "target_colum": "transit_days"}
    with pytest.raises(DatasetError, match="unknown key 'target_colum' in"):
        dataset.parse_spec(data)


def test_bad_feature_type_and_missing_key_are_named() -> None:
    data = spec_data()
    data["features"][2]["type"] = "float"
    del data["target"]
    with pytest.raises(DatasetError) as caught:
        dataset.parse_spec(data, "my.toml")
    message = str(caught.value)
    assert message.startswith("my.toml: ")
    assert "features[2] (distance_km).type" in message
    assert "target: required key is missing" in message


def test_spec_rules_are_enforced() -> None:
    data = spec_data()
    data["date_field"] = "distance_km"
    with pytest.raises(
        DatasetError, match="date_field 'distance_km' is not a feature of type date"
    ):
        dataset.parse_spec(data)
    data = spec_data(quantiles=[0.5, 0.1, 0.9])
    with pytest.raises(DatasetError, match=r"training.quantiles"):
        dataset.parse_spec(data)
    data = spec_data()
    data["baseline"]["lane"] = ["zip_code[3]"]
    with pytest.raises(DatasetError, match=r"lane entry 'zip_code\[3\]'"):
        dataset.parse_spec(data)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('name = "x"\nname = "y"\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"spec.toml: not valid TOML"):
        dataset.load_spec(path)


# --- CSV checks ---------------------------------------------------------------------------------


def write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "orders.csv"
    datagen.write_csv(frame, path)
    return path


@pytest.fixture
def small(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.head(50).copy()


def test_csv_round_trip_matches_the_frame(
    tmp_path: Path, spec: DatasetSpec, orders: pd.DataFrame, frame: pd.DataFrame
) -> None:
    loaded = dataset.load_csv(spec, write(tmp_path, orders))
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=False)
    assert loaded["zip_code"].str.len().eq(5).all()  # leading zeros survive


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("distance_km", "far", "'far' is not a number"),
        ("distance_km", "-5", "-5 is below min 0"),
        ("hour", "7.5", "'7.5' is not a whole number"),
        ("after_cutoff", "maybe", "'maybe' is not a boolean"),
        ("order_date", "2024/03/01", "'2024/03/01' is not a date"),
        ("order_time", "yesterday", "'yesterday' is not a ISO 8601 timestamp"),
        ("carrier", "", "1 missing values (first at line 12); the spec marks it required"),
        ("transit_days", "", "the target needs a value"),
    ],
)
def test_csv_type_errors_name_column_and_line(
    tmp_path: Path, spec: DatasetSpec, small: pd.DataFrame, column: str, value: str, problem: str
) -> None:
    path = write(tmp_path, small)
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    text.loc[10, column] = value  # data row 10 is line 12 (after the header)
    text.to_csv(path, index=False)
    with pytest.raises(DatasetError) as caught:
        dataset.load_csv(spec, path)
    message = str(caught.value)
    assert f"column {column!r}" in message
    assert problem in message
    assert "line 12" in message


def test_optional_feature_may_be_missing(
    tmp_path: Path, spec: DatasetSpec, small: pd.DataFrame
) -> None:
    small["weight_kg"] = np.nan
    loaded = dataset.load_csv(spec, write(tmp_path, small))
    assert loaded["weight_kg"].isna().all()


def test_missing_column_is_named(tmp_path: Path, spec: DatasetSpec, small: pd.DataFrame) -> None:
    with pytest.raises(DatasetError, match=r"missing columns \['zip_code'\]"):
        dataset.load_csv(spec, write(tmp_path, small.drop(columns="zip_code")))


# --- split --------------------------------------------------------------------------------------


def test_time_split_puts_the_latest_months_in_validation(
    spec: DatasetSpec, frame: pd.DataFrame
) -> None:
    shuffled = frame.sample(frac=1.0, random_state=0)
    split = training.time_split(spec, shuffled)
    assert split.validation_start == pd.Timestamp("2025-01-01")
    times = spec.time_column
    assert split.train[times].max() < split.validation_start <= split.validation[times].min()
    assert set(split.validation[times].dt.month) == {1, 2}
    assert split.train[times].is_monotonic_increasing
    assert len(split.train) + len(split.validation) == len(frame)


def test_time_split_refuses_an_empty_training_set(frame: pd.DataFrame) -> None:
    with pytest.raises(DatasetError, match="validation_months=24"):
        training.time_split(make_spec(validation_months=24), frame)


# --- the model ----------------------------------------------------------------------------------


def test_model_beats_the_naive_baseline(result: training.TrainResult) -> None:
    assert result.metrics.mae < 0.8 * result.metrics.baseline_mae
    assert result.metrics.within_one_day > 0.7
    assert 0.6 < result.metrics.interval_coverage <= 1.0


def test_metrics_match_the_validation_rows(
    spec: DatasetSpec, frame: pd.DataFrame, result: training.TrainResult
) -> None:
    split = training.time_split(spec, frame)
    y = split.validation[spec.target].to_numpy()
    scored = result.validation_scored
    predicted = np.column_stack([scored.lower, scored.value, scored.upper])
    assert (np.diff(predicted, axis=1) >= 0).all()  # quantiles sorted per row
    assert result.metrics.mae == pytest.approx(np.abs(predicted[:, 1] - y).mean(), rel=1e-5)
    baseline = training.naive_baseline(spec, split.train, split.validation)
    assert result.metrics.baseline_mae == pytest.approx(np.abs(baseline - y).mean(), rel=1e-5)
    assert result.metrics.validation_rows == len(y)
    assert result.metrics.validation_start == "2025-01-01"


def test_naive_baseline_uses_lane_medians_then_the_global_median(spec: DatasetSpec) -> None:
    rows = pd.DataFrame(
        {
            "origin_warehouse": ["ATL", "ATL", "ATL", "CHI"],
            "zip_code": ["30301", "30399", "30301", "60601"],
            "service_level": ["ground"] * 4,
            "transit_days": [2.0, 4.0, 9.0, 1.0],
        }
    )
    unseen = rows.iloc[[0]].assign(origin_warehouse="SEA")
    predicted = training.naive_baseline(spec, rows, pd.concat([rows.iloc[[0]], unseen]))
    assert predicted.tolist() == [4.0, 3.0]  # lane ATL|303|ground; global median


def test_same_seed_same_model_bytes(
    spec: DatasetSpec, frame: pd.DataFrame, result: training.TrainResult, tmp_path: Path
) -> None:
    again = training.train(spec, frame, progress=None)  # typed this time: same data
    assert again.metrics == result.metrics
    paths = [
        training.publish_version(r, root=tmp_path / name, version="1.0.0")
        for name, r in (("a", result), ("b", again))
    ]
    assert (paths[0] / MODEL_FILE).read_bytes() == (paths[1] / MODEL_FILE).read_bytes()
    reseeded = training.train(make_spec(seed=99), frame, progress=None)
    other = training.publish_version(reseeded, root=tmp_path / "c", version="1.0.0")
    assert (other / MODEL_FILE).read_bytes() != (paths[0] / MODEL_FILE).read_bytes()


def test_keys_added_for_kinds_leave_the_demo_identity_alone(spec: DatasetSpec) -> None:
    # model.cbm's GUID derives from spec_identity: keys at their defaults must not change it.
    identity = dataset.spec_identity(spec)
    assert "refit" not in identity and '"loss"' not in identity
    refit = spec.model_copy(update={"training": spec.training.model_copy(update={"refit": True})})
    assert '"refit":true' in dataset.spec_identity(refit)
    assert spec.training.loss_function == "MultiQuantile:alpha=0.1,0.5,0.9"


def test_catboost_columns_follow_the_manifest(
    spec: DatasetSpec,
    frame: pd.DataFrame,
    result: training.TrainResult,
    published: tuple[Path, Path],
) -> None:
    root, path = published
    manifest = registry.check_files(path, root)
    names = [f.name for f in manifest.model_features]
    model = catboost.CatBoostRegressor()
    model.load_model(str(path / MODEL_FILE), format="cbm")
    assert model.feature_names_ == names
    categorical = [
        i for i, f in enumerate(manifest.model_features) if f.type is FeatureType.CATEGORICAL
    ]
    assert sorted(model.get_cat_feature_indices()) == categorical
    # The serving encoding (an object matrix) gives the training predictions.
    validation = training.time_split(spec, frame).validation
    matrix = training.model_matrix(manifest.model_features, validation).to_numpy(dtype=object)
    served = np.sort(model.predict(matrix, thread_count=1), axis=1)
    scored = result.validation_scored
    np.testing.assert_allclose(served, np.column_stack([scored.lower, scored.value, scored.upper]))


def test_manifest_validates_and_matches_the_model_file(published: tuple[Path, Path]) -> None:
    root, path = published
    manifest = registry.check_files(path, root)  # schema, magic and digest
    assert manifest.sha256 == sha256_file(path / MODEL_FILE)
    assert manifest.size_bytes == (path / MODEL_FILE).stat().st_size
    assert (manifest.name, manifest.version) == ("delivery_eta", "1.1.0")
    assert manifest.created_at.endswith("Z")
    assert manifest.code_revision
    assert manifest.output.date_field == "order_date"
    assert manifest.training["data"]["sha256"]  # type: ignore[index]
    by_name = {f.name: f for f in manifest.features}
    assert by_name["service_level"].categories == ("express", "ground", "overnight")
    assert not by_name["service_level"].allow_unknown
    zips = by_name["zip_code"].categories
    assert list(zips) == sorted(zips) and len(zips) > 500
    assert (by_name["hour"].min, by_name["hour"].max) == (0.0, 23.0)  # from the spec


def test_reference_distributions(result: training.TrainResult, spec: DatasetSpec) -> None:
    references = result.reference.features
    assert set(references) == {f.name for f in spec.model_features}
    distance = references["distance_km"]
    assert isinstance(distance, NumericReference)
    assert 10 <= len(distance.bin_edges) <= 20
    assert len(distance.frequencies) == len(distance.bin_edges) + 1
    assert sum(distance.frequencies) == pytest.approx(1.0, abs=1e-4)
    assert list(distance.quantiles) == sorted(distance.quantiles) and len(distance.quantiles) <= 200
    weekday = references["day_of_week"]
    assert isinstance(weekday, NumericReference)
    assert weekday.bin_edges == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    assert weekday.frequencies[0] == 0.0  # nothing below Monday
    weight = references["weight_kg"]
    assert isinstance(weight, NumericReference) and 0.0 < weight.missing_rate < 0.1
    zips = references["zip_code"]
    assert isinstance(zips, CategoricalReference)
    assert len(zips.frequencies) == training.TOP_CATEGORIES
    assert sum(zips.frequencies.values()) + zips.other == pytest.approx(1.0, abs=1e-4)
    prediction = result.reference.prediction
    assert prediction.count == result.metrics.train_rows


# --- publishing ---------------------------------------------------------------------------------


def test_publish_refuses_an_existing_version(result: training.TrainResult, tmp_path: Path) -> None:
    path = training.publish_version(result, root=tmp_path, version="2.0.0")
    before = (path / "model.json").read_bytes()
    with pytest.raises(ArtifactError, match="already exists"):
        training.publish_version(result, root=tmp_path, version="2.0.0")
    assert (path / "model.json").read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["2.0.0"]  # no temp dir left


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0+build"])
def test_publish_refuses_a_non_semver_version(
    result: training.TrainResult, tmp_path: Path, version: str
) -> None:
    with pytest.raises(ArtifactError, match="not a semantic version"):
        training.publish_version(result, root=tmp_path, version=version)
    assert list(tmp_path.iterdir()) == []


def test_failed_build_leaves_no_temp_dir(
    result: training.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(version_dir: Path, manifest: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(training, "write_manifest", broken)
    with pytest.raises(OSError, match="disk full"):
        training.publish_version(result, root=tmp_path, version="3.0.0")
    assert list((tmp_path / "delivery_eta").iterdir()) == []


def test_published_version_is_readable_by_others(published: tuple[Path, Path]) -> None:
    _, path = published
    assert path.stat().st_mode & 0o055 == 0o055  # group/other may list and read it


# --- command line -------------------------------------------------------------------------------


def test_cli_trains_and_publishes(
    tmp_path: Path, orders: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_text = SPEC_FILE.read_text(encoding="utf-8")
    spec_text = spec_text.replace("iterations = 300", "iterations = 20").replace(
        "verbose_every = 50", "verbose_every = 10"
    )
    spec_path.write_text(spec_text, encoding="utf-8")
    data = write(tmp_path, orders)
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    argv = ["--spec", str(spec_path), "--data", str(data), "--registry", str(tmp_path / "reg")]
    args = parser.parse_args([*argv, "--version", "1.2.0", "--name", "eta_test"])

    assert training.run(args) == 0
    out, err = capsys.readouterr()
    assert "eta_test 1.2.0" in out and "MAE (days)" in out and "baseline" in out
    assert "learn:" in err  # CatBoost progress goes to stderr
    manifest = registry.check_files(tmp_path / "reg" / "eta_test" / "1.2.0", tmp_path / "reg")
    assert manifest.training["data"]["sha256"] == sha256_file(data)  # type: ignore[index]

    assert training.run(args) == 1  # the version exists: refused before training
    out, err = capsys.readouterr()
    assert "already exists" in err and "learn:" not in err
