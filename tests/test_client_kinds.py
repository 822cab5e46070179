"""The Python client on models of every kind, against the real server: a regressor without
an interval and a three-class classifier, trained here as a notebook would and imported with
`waybill registry import` beside the demo's delivery model. The client must return what
CatBoost predicts, and report value and label outcomes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import catboost
import numpy as np
import pandas as pd
import pytest
from waybill.v1 import admin_pb2
from waybill_client import (
    AsyncWaybillClient,
    InvalidArgument,
    Outcome,
    OutcomeReport,
    PredictResult,
    WaybillClient,
)

from tests.harness import ROOT, ServerProcess
from tests.routing_fixtures import admin

FEATURES = ["distance_km", "carrier", "hour", "fragile"]
CLASSES = ["early", "late", "on_time"]  # CatBoost orders string classes like this


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
    frame["band"] = np.select([delay < 0, delay <= 10], ["early", "on_time"], "late")
    return frame


@dataclass
class Trained:
    sample: pd.DataFrame  # held out: the import's sample, and the rows predicted here
    delay: catboost.CatBoostRegressor
    band: catboost.CatBoostClassifier


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Path]:
    files = tmp_path_factory.mktemp("client-kinds-models")
    data = orders(900, seed=3)
    train, sample = data.iloc[:600], data.iloc[600:]
    common = {"iterations": 30, "depth": 3, "random_seed": 0, "thread_count": 1,
              "verbose": False}
    delay = catboost.CatBoostRegressor(loss_function="RMSE", **common)
    delay.fit(train[FEATURES], train["delay_min"], cat_features=["carrier"])
    band = catboost.CatBoostClassifier(loss_function="MultiClass", **common)
    band.fit(train[FEATURES], train["band"], cat_features=["carrier"])
    delay.save_model(str(files / "delay.cbm"))
    band.save_model(str(files / "band.cbm"))
    sample.to_csv(files / "sample.csv", index=False)
    return Trained(sample, delay, band), files


@pytest.fixture(scope="module")
def kinds_server(trained: tuple[Trained, Path], registry: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    _, files = trained
    root = tmp_path_factory.mktemp("client-kinds") / "registry"
    shutil.copytree(registry, root)  # the demo delivery model, trained by the pipeline
    for source, name, extra in (
        ("delay.cbm", "arrival_delay", ("--target", "delay_min", "--unit", "minutes",
                                        "--no-interval")),
        ("band.cbm", "band", ("--target", "band")),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "server.runtime.cli", "registry", "import", str(files / source),
             "--name", name, "--version", "1.0.0", "--data", str(files / "sample.csv"),
             "--registry", str(root), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    workdir = tmp_path_factory.mktemp("client-kinds-server")
    with ServerProcess(workdir, "--registry", str(root), "--no-routing") as server:
        yield server


def client_rows(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
            for record in frame[FEATURES].to_dict("records")]


def test_a_regressor_without_interval_answers_catboosts_values(
        trained: tuple[Trained, Path], kinds_server: ServerProcess) -> None:
    models, _ = trained
    frame = models.sample.iloc[:40]
    expected = models.delay.predict(frame[FEATURES])
    assert (expected < 0).any() and (expected > 0).any()
    with WaybillClient(kinds_server.target, timeout=10) as client:
        # 5 rows go as rows, 40 as columns: both must read the same way.
        by_rows = client.predict("arrival_delay", client_rows(frame.iloc[:5]))
        by_columns = client.predict("arrival_delay", client_rows(frame))
    assert by_columns.response.HasField("columns") and not by_rows.response.HasField("columns")
    for result, n in ((by_rows, 5), (by_columns, 40)):
        assert (result.kind, result.class_names) == ("regression", ())
        np.testing.assert_allclose([p.value for p in result.predictions], expected[:n],
                                   rtol=0, atol=1e-9)
        for p in result.predictions:
            assert (p.transit_days, p.lower, p.upper, p.coverage) == (None, None, None, None)
            assert (p.delivery_date, p.label, p.probabilities) == (None, None, None)


def test_a_classifier_answers_catboosts_labels_and_probabilities(
        trained: tuple[Trained, Path], kinds_server: ServerProcess) -> None:
    models, _ = trained
    frame = models.sample.iloc[:30]
    proba = models.band.predict_proba(frame[FEATURES])
    labels = [str(c) for c in np.asarray(models.band.predict(frame[FEATURES])).ravel()]
    assert [str(c) for c in models.band.classes_] == CLASSES

    async def by_async_client() -> PredictResult:
        async with AsyncWaybillClient(kinds_server.target, timeout=10) as client:
            return await client.predict("band", client_rows(frame))

    with WaybillClient(kinds_server.target, timeout=10) as client:
        by_rows = client.predict("band", client_rows(frame.iloc[:4]))
        by_columns = client.predict("band", client_rows(frame))
    assert by_columns.response.HasField("columns")
    for result, n in ((by_rows, 4), (by_columns, 30), (asyncio.run(by_async_client()), 30)):
        assert (result.kind, result.class_names) == ("classification", tuple(CLASSES))
        assert [p.label for p in result.predictions] == labels[:n]
        got = np.array([[(p.probabilities or {})[c] for c in CLASSES]
                        for p in result.predictions])
        np.testing.assert_allclose(got, proba[:n], rtol=0, atol=1e-9)
        for p in result.predictions:
            assert list(p.probabilities or {}) == CLASSES
            assert (p.value, p.transit_days, p.lower, p.delivery_date) == (None,) * 4


def test_the_delivery_model_beside_them_answers_as_before(
        kinds_server: ServerProcess, rows: list[dict[str, object]]) -> None:
    with WaybillClient(kinds_server.target, timeout=10) as client:
        for sent in (rows[:2], rows[:20]):
            result = client.predict("delivery_eta", sent)
            assert result.kind == "quantiles"
            for p in result.predictions:
                assert p.transit_days is not None and p.transit_days == p.value
                assert p.lower is not None and p.upper is not None
                assert p.lower <= p.transit_days <= p.upper
                assert p.coverage == pytest.approx(0.8)
                assert isinstance(p.delivery_date, date) and p.label is None


def test_value_and_label_outcomes_are_recorded_and_scored(
        trained: tuple[Trained, Path], kinds_server: ServerProcess) -> None:
    models, _ = trained
    frame = models.sample.iloc[100:130]
    accuracy = admin(kinds_server.admin_target)
    with WaybillClient(kinds_server.target, timeout=10) as client:
        regression = client.predict("arrival_delay", client_rows(frame))
        classifier = client.predict("band", client_rows(frame))
        actual = frame["delay_min"].tolist()
        assert min(actual) < 0  # negative actuals are sent as given
        values = [Outcome(p.prediction_id, value=y)
                  for p, y in zip(regression.predictions, actual, strict=True)]
        labels = [Outcome(p.prediction_id, label=y)
                  for p, y in zip(classifier.predictions, frame["band"], strict=True)]
        assert client.report_outcomes(values + labels) == OutcomeReport(60, 0)
        assert client.report_outcomes(values[:3] + labels[:3]) == OutcomeReport(0, 6)
        with pytest.raises(InvalidArgument) as caught:
            client.report_outcomes([Outcome(regression.predictions[0].prediction_id,
                                            label="late")])
        assert [v.field for v in caught.value.violations] == ["outcomes[0].label"]

    figures = {v.model: v for model in ("arrival_delay", "band") for v in accuracy.GetAccuracy(
        admin_pb2.GetAccuracyRequest(model=model, window_seconds=3600), timeout=10).versions}
    predicted = np.array([p.value for p in regression.predictions])
    assert figures["arrival_delay"].outcomes == 30
    assert figures["arrival_delay"].mae == pytest.approx(
        np.mean(np.abs(predicted - np.array(actual))), abs=1e-9)
    assert not figures["arrival_delay"].has_interval
    proba = models.band.predict_proba(frame[FEATURES])
    index = np.array([CLASSES.index(y) for y in frame["band"]])
    assert figures["band"].outcomes == 30
    assert figures["band"].log_loss == pytest.approx(
        np.mean(-np.log(proba[np.arange(len(frame)), index])), abs=1e-9)
