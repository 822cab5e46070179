"""`waybill drift`: a drift verdict (YES/no) only for a window that gives one.

A window under --drift-min-rows ("not_enough_data") or still open has statistics but no
verdict (docs/observability.md): the report shows "-" in the drift column and says why.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from server.runtime.drift_report import no_verdict, render
from tests.harness import ROOT, ServerProcess
from tests.test_server_predict import struct_rows


def drift_column(report: str) -> list[str]:
    """The drift column of every feature line (header and footnote left out)."""
    lines = report.splitlines()
    header = lines[1]
    start = header.index("drift")
    return [line[start:start + 5].strip() for line in lines[2:]
            if line.startswith("  ") and len(line) > start and not line.startswith("  no ")]


def window(status: str, rows: int, drifted: bool) -> admin_pb2.VersionDrift:
    feature = admin_pb2.FeatureDrift(name="carrier", kind="categorical", rows=rows, psi=0.9,
                                     drifted=drifted)
    prediction = admin_pb2.FeatureDrift(kind="numeric", rows=rows, psi=0.05)
    w = admin_pb2.DriftWindow(started_at=1_700_000_000, ended_at=1_700_000_060, rows=rows,
                              status=status, features=[feature], prediction=prediction,
                              max_psi=0.9, max_psi_feature="carrier")
    return admin_pb2.VersionDrift(model="delivery_eta", version="1.1.0", completed=[w])


def test_a_window_with_too_few_rows_prints_no_verdict() -> None:
    drift = window("not_enough_data", 19, drifted=False)
    report = render(drift, drift.completed[0])
    assert drift_column(report) == ["-", "-"], report
    assert "19 rows, not_enough_data" in report
    assert report.splitlines()[-1].strip().startswith("no verdict: too few rows (19,"), report
    assert no_verdict(drift.completed[0]) is not None


def test_an_open_window_prints_no_verdict() -> None:
    drift = window("open", 7, drifted=False)
    report = render(drift, drift.completed[0])
    assert drift_column(report) == ["-", "-"], report
    assert "no verdict: the window is still open (7 rows so far)" in report


def test_a_full_window_prints_its_verdict() -> None:
    drift = window("ok", 800, drifted=True)
    report = render(drift, drift.completed[0])
    assert drift_column(report) == ["YES", "no"], report
    assert "no verdict" not in report
    assert no_verdict(drift.completed[0]) is None


def test_the_cli_on_a_19_row_window_of_a_real_server(registry: Path, tmp_path: Path,
                                                     rows: list[dict[str, object]]) -> None:
    """The case the issue found: a closed window of 19 rows printed `drift no`."""
    with ServerProcess(tmp_path, "--registry", str(registry), "--drift-window-rows", "19",
                       "--drift-window-s", "0") as server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        stub.Predict(pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:19])),
                     metadata=(("x-model-version", "1.1.0"),), timeout=10)
        report = subprocess.run(
            [sys.executable, "-m", "server.runtime.cli", "drift", "--admin",
             server.admin_target, "--model", "delivery_eta", "--version", "1.1.0"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "19 rows, not_enough_data" in report, report
    assert set(drift_column(report)) == {"-"}, report
    assert "no verdict: too few rows (19," in report
