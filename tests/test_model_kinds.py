"""Models as users bring them: trained in plain Python as a notebook would, imported with
`waybill registry import`, served beside the demo model, and checked over gRPC against
CatBoost's own predict / predict_proba.

No date column anywhere: a regressor of arrival delay in minutes (partly negative), a
binary classifier saved as an MLflow model directory (the MLmodel file and model.cb that
mlflow.catboost writes; MLflow itself is not installed, and the importer does not need
it), and a three-class classifier.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import catboost
import grpc
import numpy as np
import pandas as pd
import pytest
from google.protobuf import json_format, struct_pb2
from waybill.v1 import admin_pb2, admin_pb2_grpc
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ROOT, ServerProcess

FEATURES = ["distance_km", "carrier", "hour", "fragile"]
TRAIN_ROWS = 2000  # the rest is the held-out sample the import describes the model with
DRIFT_ROWS = 1000


def orders(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "distance_km": rng.uniform(1, 500, n).round(1),
        "carrier": rng.choice(["ax", "bee", "cargo"], n),
        "hour": rng.integers(0, 24, n),
        "fragile": rng.choice([True, False], n),
    })
    effect = frame["carrier"].map({"ax": -12.0, "bee": 0.0, "cargo": 10.0})
    delay = (0.06 * frame["distance_km"] - 18 + effect + 0.4 * frame["hour"]
             + 6 * frame["fragile"] + rng.normal(0, 6, n))
    frame["delay_min"] = delay.round(1)
    frame["late"] = (delay > 10).astype(int)
    frame["band"] = np.select([delay < 0, delay <= 10], ["early", "on_time"], "late")
    return frame


@dataclass
class Notebook:
    """What a data scientist has after the notebook ran: models, data, saved files."""

    data: pd.DataFrame
    train: pd.DataFrame
    sample: pd.DataFrame
    delay: catboost.CatBoostRegressor
    late: catboost.CatBoostClassifier
    band: catboost.CatBoostClassifier
    files: Path


def fit(model: catboost.CatBoost, frame: pd.DataFrame, target: str) -> catboost.CatBoost:
    model.fit(frame[FEATURES], frame[target], cat_features=["carrier"], verbose=False)
    return model


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Notebook:
    files = tmp_path_factory.mktemp("notebook")
    data = orders(3000, seed=5)
    train, sample = data.iloc[:TRAIN_ROWS], data.iloc[TRAIN_ROWS:]
    common = {"iterations": 80, "depth": 4, "random_seed": 0, "thread_count": 1}
    delay = fit(catboost.CatBoostRegressor(loss_function="RMSE", **common), train, "delay_min")
    late = fit(catboost.CatBoostClassifier(loss_function="Logloss", **common), train, "late")
    band = fit(catboost.CatBoostClassifier(loss_function="MultiClass", **common), train, "band")
    delay.save_model(str(files / "delay.cbm"))
    band.save_model(str(files / "band.cbm"))
    mlflow_dir = files / "late_mlflow"
    mlflow_dir.mkdir()
    late.save_model(str(mlflow_dir / "model.cb"))
    (mlflow_dir / "MLmodel").write_text(
        "flavors:\n  catboost:\n    catboost_version: 1.2.8\n    code: null\n"
        "    data: model.cb\n    model_type: CatBoostClassifier\n    save_format: cbm\n"
        "  python_function:\n    data: model.cb\n    loader_module: mlflow.catboost\n"
        "mlflow_version: 2.19.0\n", encoding="utf-8")
    sample.to_csv(files / "sample.csv", index=False)
    sample[FEATURES].to_csv(files / "features_only.csv", index=False)
    return Notebook(data, train, sample, delay, late, band, files)


def waybill(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.runtime.cli", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def import_model(registry: Path, source: Path, name: str, sample: Path,
                 *extra: str) -> subprocess.CompletedProcess[str]:
    return waybill("registry", "import", source, "--name", name, "--version", "1.0.0",
                   "--data", sample, "--registry", registry, *extra)


@pytest.fixture(scope="module")
def kinds_registry(notebook: Notebook, registry: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kinds") / "registry"
    shutil.copytree(registry, root)  # the demo delivery model, trained by the pipeline
    sample = notebook.files / "sample.csv"
    for source, name, extra in (
        (notebook.files / "delay.cbm", "arrival_delay",
         ("--target", "delay_min", "--unit", "minutes", "--kind", "regression")),
        (notebook.files / "late_mlflow", "late", ("--target", "late")),
        (notebook.files / "band.cbm", "band", ("--target", "band")),
    ):
        done = import_model(root, source, name, sample, *extra)
        assert done.returncode == 0, done.stderr
        assert f"imported {name} 1.0.0" in done.stdout
    return root


@pytest.fixture(scope="module")
def kinds_server(kinds_registry: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("kinds-server")
    with ServerProcess(workdir, "--registry", str(kinds_registry), "--no-routing",
                       "--max-rows", "2000",
                       "--drift-window-rows", str(DRIFT_ROWS), "--drift-window-s", "0",
                       "--drift-min-rows", str(DRIFT_ROWS)) as server:
        yield server


@pytest.fixture(scope="module")
def stub(kinds_server: ServerProcess) -> Iterator[pb_grpc.PredictionServiceStub]:
    with kinds_server.channel() as channel:
        yield pb_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def admin(kinds_server: ServerProcess) -> Iterator[admin_pb2_grpc.AdminServiceStub]:
    with grpc.insecure_channel(kinds_server.admin_target) as channel:
        yield admin_pb2_grpc.AdminServiceStub(channel)


def struct_rows(frame: pd.DataFrame) -> list[struct_pb2.Struct]:
    rows = []
    for record in frame[FEATURES].to_dict("records"):
        row = struct_pb2.Struct()
        row.update({k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()})
        rows.append(row)
    return rows


def columns(frame: pd.DataFrame) -> list[pb.Column]:
    return [pb.Column(name="distance_km", numbers=frame["distance_km"].tolist()),
            pb.Column(name="carrier", strings=frame["carrier"].tolist()),
            pb.Column(name="hour", numbers=frame["hour"].astype(float).tolist()),
            pb.Column(name="fragile", booleans=frame["fragile"].tolist())]


def test_a_regressor_answers_its_own_predict_negative_values_and_no_dates(
        notebook: Notebook, stub: pb_grpc.PredictionServiceStub) -> None:
    rows = notebook.sample.iloc[:300]
    expected = notebook.delay.predict(rows[FEATURES])
    assert (expected < 0).sum() > 30, "the fixture must exercise negative predictions"
    answer = stub.Predict(pb.PredictRequest(model="arrival_delay", rows=struct_rows(rows)))
    assert answer.kind == "regression" and list(answer.class_names) == []
    got = np.array([p.value for p in answer.predictions])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    for prediction in answer.predictions:
        assert prediction.HasField("value")
        assert (prediction.transit_days, prediction.delivery_date,
                prediction.latest_delivery_date) == (0.0, "", "")
        # The conformal interval: value +- the half width calibrated on the sample.
        half = (prediction.interval.upper - prediction.interval.lower) / 2
        assert prediction.interval.coverage == 0.8 and half > 0
        assert prediction.interval.lower == pytest.approx(prediction.value - half, abs=1e-9)
    by_columns = stub.Predict(pb.PredictRequest(model="arrival_delay", columns=columns(rows)))
    np.testing.assert_allclose(by_columns.columns.value, expected, rtol=0, atol=1e-9)
    assert list(by_columns.columns.transit_days) == []
    assert list(by_columns.columns.delivery_date) == []


@pytest.mark.parametrize("name", ["late", "band"])
def test_a_classifier_answers_its_own_predict_proba(
        notebook: Notebook, stub: pb_grpc.PredictionServiceStub, name: str) -> None:
    model = notebook.late if name == "late" else notebook.band
    rows = notebook.sample.iloc[:200]
    proba = model.predict_proba(rows[FEATURES])
    labels = [str(c) for c in np.asarray(model.predict(rows[FEATURES])).ravel()]
    answer = stub.Predict(pb.PredictRequest(model=name, rows=struct_rows(rows)))
    assert answer.kind == "classification"
    assert list(answer.class_names) == [str(c) for c in model.classes_]
    got = np.array([list(p.probabilities) for p in answer.predictions])
    np.testing.assert_allclose(got, proba, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    assert [p.label for p in answer.predictions] == labels
    assert not any(p.HasField("value") or p.HasField("interval") for p in answer.predictions)
    by_columns = stub.Predict(pb.PredictRequest(model=name, columns=columns(rows)))
    flat = np.array(by_columns.columns.probabilities).reshape(len(rows), len(model.classes_))
    np.testing.assert_allclose(flat, proba, rtol=0, atol=1e-9)
    assert list(by_columns.columns.label) == labels


def accuracy_of(admin: admin_pb2_grpc.AdminServiceStub, model: str) -> admin_pb2.VersionAccuracy:
    reply = admin.GetAccuracy(admin_pb2.GetAccuracyRequest(model=model, window_seconds=3600))
    (figures,) = reply.versions
    assert isinstance(figures, admin_pb2.VersionAccuracy)
    return figures


def test_outcomes_of_either_sign_give_the_offline_accuracy(
        notebook: Notebook, stub: pb_grpc.PredictionServiceStub,
        admin: admin_pb2_grpc.AdminServiceStub) -> None:
    rows = notebook.sample.iloc[300:500]
    answer = stub.Predict(pb.PredictRequest(model="arrival_delay", rows=struct_rows(rows)))
    actual = rows["delay_min"].to_numpy()
    assert (actual < 0).any()
    reply = stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[
        pb.Outcome(prediction_id=p.prediction_id, value=float(y))
        for p, y in zip(answer.predictions, actual, strict=True)]))
    assert reply.recorded == len(rows)
    predicted = notebook.delay.predict(rows[FEATURES])
    figures = accuracy_of(admin, "arrival_delay")
    assert figures.kind == "regression" and figures.has_interval
    assert figures.outcomes == len(rows)
    assert figures.mae == pytest.approx(np.mean(np.abs(predicted - actual)), abs=1e-9)
    assert figures.bias == pytest.approx(np.mean(predicted - actual), abs=1e-9)
    lower = np.array([p.interval.lower for p in answer.predictions])
    upper = np.array([p.interval.upper for p in answer.predictions])
    assert figures.coverage == pytest.approx(np.mean((actual >= lower) & (actual <= upper)))
    assert not figures.HasField("on_time") and not figures.HasField("log_loss")


def test_class_outcomes_give_the_offline_log_loss_accuracy_and_brier(
        notebook: Notebook, stub: pb_grpc.PredictionServiceStub,
        admin: admin_pb2_grpc.AdminServiceStub) -> None:
    rows = notebook.sample.iloc[500:700]
    answer = stub.Predict(pb.PredictRequest(model="band", rows=struct_rows(rows)))
    actual = rows["band"].tolist()
    reply = stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[
        pb.Outcome(prediction_id=p.prediction_id, label=y)
        for p, y in zip(answer.predictions, actual, strict=True)]))
    assert reply.recorded == len(rows)
    proba = notebook.band.predict_proba(rows[FEATURES])
    classes = [str(c) for c in notebook.band.classes_]
    index = np.array([classes.index(y) for y in actual])
    onehot = np.eye(len(classes))[index]
    figures = accuracy_of(admin, "band")
    assert figures.kind == "classification" and figures.outcomes == len(rows)
    assert figures.log_loss == pytest.approx(
        np.mean(-np.log(proba[np.arange(len(rows)), index])), abs=1e-9)
    assert figures.accuracy == pytest.approx(np.mean(proba.argmax(axis=1) == index))
    assert figures.brier == pytest.approx(np.mean(((proba - onehot) ** 2).sum(axis=1)),
                                          abs=1e-9)


def test_outcomes_that_do_not_fit_the_kind_are_refused_by_field(
        notebook: Notebook, stub: pb_grpc.PredictionServiceStub) -> None:
    rows = struct_rows(notebook.sample.iloc[:1])
    regression = stub.Predict(pb.PredictRequest(model="arrival_delay", rows=rows))
    classifier = stub.Predict(pb.PredictRequest(model="late", rows=rows))
    cases = [
        (pb.Outcome(prediction_id=regression.predictions[0].prediction_id, label="1"),
         "outcomes[0].label"),
        (pb.Outcome(prediction_id=regression.predictions[0].prediction_id,
                    delivery_date="2025-01-01"), "outcomes[0].delivery_date"),
        (pb.Outcome(prediction_id=classifier.predictions[0].prediction_id, value=1.0),
         "outcomes[0].label"),
        (pb.Outcome(prediction_id=classifier.predictions[0].prediction_id, label="maybe"),
         "outcomes[0].label"),
    ]
    for outcome, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[outcome]))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(field), caught.value.details()


def test_prediction_drift_on_rows_from_the_training_period_stays_quiet(
        notebook: Notebook, stub: pb_grpc.PredictionServiceStub,
        admin: admin_pb2_grpc.AdminServiceStub) -> None:
    rows = notebook.train.iloc[:DRIFT_ROWS]
    for name in ("arrival_delay", "band"):
        stub.Predict(pb.PredictRequest(model=name, columns=columns(rows)))
        reply = admin.GetDrift(admin_pb2.GetDriftRequest(model=name, windows=1))
        (version,) = reply.versions
        (window,) = version.completed
        assert window.rows >= DRIFT_ROWS and window.status == "ok"
        drifted = [f.name for f in [*window.features, window.prediction] if f.drifted]
        assert drifted == [], (name, drifted, json_format.MessageToDict(window))
        assert window.prediction.rows == window.rows and window.prediction.psi < 0.1


def test_the_demo_model_still_answers_dates_beside_them(
        stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    row = struct_pb2.Struct()
    row.update(rows[0])
    answer = stub.Predict(pb.PredictRequest(model="delivery_eta", rows=[row]))
    (prediction,) = answer.predictions
    assert answer.kind == "quantiles"
    assert prediction.value == prediction.transit_days > 0
    assert len(prediction.delivery_date) == 10 and prediction.interval.coverage == 0.8


def test_registry_list_and_verify_treat_imported_versions_like_trained_ones(
        kinds_registry: Path) -> None:
    verify = waybill("registry", "verify", "--registry", kinds_registry)
    assert verify.returncode == 0, verify.stdout
    assert verify.stdout.count("ok ") == 5  # the demo's two versions and the three imports
    listed = json.loads(waybill("registry", "list", "--json", "--registry",
                                kinds_registry).stdout)
    kinds = {row["model"]: (row["kind"], row["metric"]) for row in listed}
    assert kinds["band"] == ("classification", "log_loss")
    assert kinds["arrival_delay"] == ("regression", "mae")


def relabel(version_dir: Path, **output: object) -> None:
    manifest = json.loads((version_dir / "model.json").read_text())
    manifest["output"].update(output)
    (version_dir / "model.json").write_text(json.dumps(manifest))


def test_a_mislabelled_kind_is_refused_at_import_and_at_load(
        notebook: Notebook, kinds_registry: Path, tmp_path: Path) -> None:
    sample = notebook.files / "sample.csv"
    done = import_model(tmp_path, notebook.files / "band.cbm", "band", sample,
                        "--kind", "regression")
    assert done.returncode == 1
    assert "--kind regression" in done.stderr and "MultiClass" in done.stderr
    assert "classification" in done.stderr
    root = tmp_path / "registry"
    shutil.copytree(kinds_registry, root)
    # A classifier whose manifest says regression; a quantile model whose says regression.
    relabel(root / "band" / "1.0.0", kind="regression", classes=[], unit="none")
    relabel(root / "delivery_eta" / "1.1.0", kind="regression", quantiles=None)
    verify = waybill("registry", "verify", "--registry", root)
    assert verify.returncode == 1
    failed = [line for line in verify.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2, verify.stdout
    assert any("band 1.0.0" in line and "declares kind regression" in line
               and "MultiClass" in line for line in failed)
    assert any("delivery_eta 1.1.0" in line and "MultiQuantile" in line for line in failed)


def test_import_refuses_what_it_cannot_serve_faithfully(
        notebook: Notebook, tmp_path: Path) -> None:
    sample = notebook.files / "sample.csv"
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"not": "a model"}))
    one_vs_all = fit(catboost.CatBoostClassifier(loss_function="MultiClassOneVsAll",
                                                 iterations=5, thread_count=1),
                     notebook.train, "band")
    one_vs_all.save_model(str(tmp_path / "ova.cbm"))
    cases = [
        (pickled, sample, (), "pickle"),
        (notebook.files / "delay.cbm", notebook.files / "features_only.csv",
         ("--target", "delay_min"), "'delay_min' is not a column"),
        (tmp_path / "ova.cbm", sample, (), "MultiClassOneVsAll"),
    ]
    for source, data, extra, reason in cases:
        done = import_model(tmp_path / "reg", source, "m", data, *extra)
        assert done.returncode == 1 and reason in done.stderr, done.stderr
    slashed = notebook.train.rename(columns={"hour": "hour/local"})
    named = catboost.CatBoostRegressor(iterations=5, thread_count=1, verbose=False)
    named.fit(slashed[["distance_km", "hour/local"]], slashed["delay_min"])
    named.save_model(str(tmp_path / "slashed.cbm"))
    done = import_model(tmp_path / "reg", tmp_path / "slashed.cbm", "m", sample)
    assert done.returncode == 1, done.stderr
    assert "feature names ['hour/local'] are not usable as request fields" in done.stderr
    narrow = tmp_path / "narrow.csv"
    notebook.sample[["distance_km", "carrier", "hour"]].to_csv(narrow, index=False)
    done = import_model(tmp_path / "reg", notebook.files / "delay.cbm", "m", narrow)
    assert done.returncode == 1 and "lacks the model's features ['fragile']" in done.stderr
    first = import_model(tmp_path / "reg", notebook.files / "delay.cbm", "m", sample)
    assert first.returncode == 0, first.stderr
    again = import_model(tmp_path / "reg", notebook.files / "delay.cbm", "m", sample)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_prediction_histograms_use_each_versions_own_buckets(
        kinds_server: ServerProcess, kinds_registry: Path,
        stub: pb_grpc.PredictionServiceStub, notebook: Notebook) -> None:
    stub.Predict(pb.PredictRequest(model="arrival_delay",
                                   rows=struct_rows(notebook.sample.iloc[:5])))
    with urllib.request.urlopen(kinds_server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    manifest = json.loads((kinds_registry / "arrival_delay" / "1.0.0" / "model.json").read_text())
    edges = manifest["reference"]["prediction"]["bin_edges"]
    assert min(edges) < 0  # minutes early: the buckets follow the model, not days
    buckets = [line for line in text.splitlines()
               if line.startswith("waybill_prediction_value_bucket{")
               and 'model="arrival_delay"' in line]
    bounds = [float(line.split('le="')[1].split('"')[0]) for line in buckets]
    assert bounds[:-1] == pytest.approx(edges) and bounds[-1] == float("inf")
    assert not any(line.startswith("waybill_prediction_transit_days")
                   and 'model="arrival_delay"' in line for line in text.splitlines())


def test_predict_stream_answers_each_kind(notebook: Notebook,
                                         stub: pb_grpc.PredictionServiceStub) -> None:
    rows = notebook.sample.iloc[:20]
    requests = [pb.PredictStreamRequest(request=pb.PredictRequest(
        model=name, rows=struct_rows(rows))) for name in ("arrival_delay", "band")]
    delay, band = list(stub.PredictStream(iter(requests)))
    np.testing.assert_allclose([p.value for p in delay.response.predictions],
                               notebook.delay.predict(rows[FEATURES]), rtol=0, atol=1e-9)
    np.testing.assert_allclose([list(p.probabilities) for p in band.response.predictions],
                               notebook.band.predict_proba(rows[FEATURES]), rtol=0, atol=1e-9)
    assert band.response.kind == "classification"
