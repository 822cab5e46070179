"""Settings from flags and WAYBILL_* variables: the prediction log's retention, parsed,
validated, and reaching the store of a real server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from server.runtime.settings import SettingsError, load_settings
from tests.harness import ROOT, ServerProcess
from tests.routing_fixtures import wait_for
from tests.test_server_predict import struct_rows


@pytest.mark.parametrize(("written", "seconds"), [
    ("7d", 7 * 86400.0), ("12h", 43200.0), ("30m", 1800.0), ("90s", 90.0), ("1.5h", 5400.0),
    ("3600", 3600.0), ("0.5", 0.5),
])
def test_retention_is_a_duration_or_seconds_by_flag_or_environment(
    written: str, seconds: float
) -> None:
    assert load_settings({"prediction_retention_s": written}, {}).prediction_retention_s == \
        seconds
    from_env = load_settings({}, {"WAYBILL_PREDICTION_RETENTION_S": written})
    assert from_env.prediction_retention_s == seconds


def test_retention_defaults_and_max_rows_by_environment() -> None:
    settings = load_settings({}, {})
    assert (settings.prediction_retention_s, settings.prediction_max_rows) == (
        7 * 86400.0, 5_000_000)
    assert load_settings({}, {"WAYBILL_PREDICTION_MAX_ROWS": "10"}).prediction_max_rows == 10


@pytest.mark.parametrize(("setting", "written", "message"), [
    ("prediction_retention_s", "0", "greater than 0"),
    ("prediction_retention_s", "0s", "greater than 0"),
    ("prediction_retention_s", "-1h", "a duration such as 7d"),
    ("prediction_retention_s", "a week", "a duration such as 7d"),
    ("prediction_max_rows", "0", "greater than or equal to 1"),
    ("prediction_max_rows", "-5", "greater than or equal to 1"),
])
def test_retention_settings_must_be_positive(setting: str, written: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"{setting}=.*{message}"):
        load_settings({setting: written}, {})


def test_a_bad_retention_flag_stops_the_start_naming_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "server.runtime.cli", "serve", "--port", "0", "--admin-port", "0",
         "--no-metrics", "--no-database", "--prediction-max-rows", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "prediction_max_rows=0" in proc.stderr


def logged(database: Path) -> tuple[int, float | None]:
    """Predictions in the server's log, and when the newest was logged."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        count, newest = conn.execute("SELECT count(*), max(logged_at) FROM predictions").fetchone()
    return int(count), newest


def test_the_retention_flags_reach_the_store(
    registry: Path, rows: list[dict[str, object]], tmp_path: Path
) -> None:
    database = tmp_path / "waybill.db"
    server = ServerProcess(tmp_path, "--registry", str(registry), "--database", str(database))
    with server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        stub.Predict(pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:30])),
                     timeout=10)
    assert logged(database)[0] == 30
    # The store applies retention as it starts: the newest rows stay.
    server.args += ["--prediction-max-rows", "5"]
    with server:
        wait_for(lambda: logged(database)[0] == 5, "the log to be cut to 5 predictions")
    # Older than a second: the next start purges them all.
    newest = logged(database)[1]
    assert newest is not None
    wait_for(lambda: time.time() - newest > 1.5, "the predictions to be over a second old")
    server.args += ["--prediction-retention", "1s"]
    with server:
        wait_for(lambda: logged(database)[0] == 0, "the expired predictions to go")


def test_alertmanagers_by_repeated_flag_or_comma_separated_environment() -> None:
    assert load_settings({}, {}).alertmanager == ()
    assert load_settings({}, {}).alertmanager_resend_s == 60.0
    flags = load_settings({"alertmanager": ("http://am-a:9093/", "https://am-b.example/am")}, {})
    assert flags.alertmanager == ("http://am-a:9093", "https://am-b.example/am")
    env = load_settings({}, {"WAYBILL_ALERTMANAGER": "http://am-a:9093, http://am-b:9093,",
                             "WAYBILL_ALERTMANAGER_RESEND_S": "30"})
    assert env.alertmanager == ("http://am-a:9093", "http://am-b:9093")
    assert env.alertmanager_resend_s == 30.0
    # A flag replaces the environment's list; the same Alertmanager twice is posted to once.
    both = load_settings({"alertmanager": ("http://127.0.0.1:9093", "http://127.0.0.1:9093/")},
                         {"WAYBILL_ALERTMANAGER": "http://am-a:9093"})
    assert both.alertmanager == ("http://127.0.0.1:9093",)


@pytest.mark.parametrize(("url", "message"), [
    ("127.0.0.1:9093", "http:// or https:// URL of a host"),
    ("ftp://am:9093", "http:// or https:// URL of a host"),
    ("http://", "http:// or https:// URL of a host"),
    ("http://am:port", "is not a URL"),
    ("http://user:secret@am:9093", "credentials in the URL are not supported"),
    ("http://am:9093/?x=1", "without a query or fragment"),
    ("http://am:9093/api/v2/alerts", "give Alertmanager's base URL"),
])
def test_a_bad_alertmanager_url_is_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"alertmanager=.*{message}") as refused:
        load_settings({"alertmanager": (url,)}, {})
    assert "secret" not in str(refused.value)


def test_the_alertmanager_flags_parse_repeated() -> None:
    from server.runtime.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--alertmanager", "http://a:9093", "--alertmanager", "http://b:9093",
         "--alertmanager-resend", "15", "--alert-webhook", "http://hook"])
    assert args.alertmanager == ["http://a:9093", "http://b:9093"]
    assert (args.alertmanager_resend, args.alert_webhook) == (15.0, "http://hook")


def test_database_is_a_path_or_a_postgresql_url_never_echoing_its_password() -> None:
    assert load_settings({}, {}).database == "var/waybill.db"
    url = "postgresql://waybill:s3cret@db:5432/waybill"
    assert load_settings({}, {"WAYBILL_DATABASE": url}).database == url
    assert load_settings({"database": ""}, {}).database is None
    with pytest.raises(SettingsError, match="postgresql:// URL") as caught:
        load_settings({"database": "mysql://waybill:s3cret@db/waybill"}, {})
    assert "s3cret" not in str(caught.value)
    with pytest.raises(SettingsError, match="log_flush_interval_s"):
        load_settings({"log_flush_interval_s": "0"}, {})


def test_an_unreachable_database_stops_the_start_without_its_password(tmp_path: Path) -> None:
    from tests.pgcluster import free_port

    url = f"postgresql://waybill:s3cret@127.0.0.1:{free_port()}/waybill"
    proc = subprocess.run(
        [sys.executable, "-m", "server.runtime.cli", "serve", "--port", "0", "--admin-port", "0",
         "--no-metrics", "--no-routing", "--database", url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "cannot start: database: cannot connect to postgresql://waybill:***@127.0.0.1" in (
        proc.stderr)
    assert "s3cret" not in proc.stderr + proc.stdout
