"""Who may call what, on the real server and in the settings.

A blank admin token is refused at start (it used to turn admin authentication off, on a port
that may listen beyond loopback), and so is any token a client could not send. ReportOutcome
needs its own credentials, separate from the admin token: a bearer outcome token, or a client
certificate with ``--outcome-auth mtls``; a host beyond loopback refuses to start with neither
unless ``--outcome-auth none`` says so. Predict, PredictStream, ListModels and GetModel stay
open.

No test here listens beyond loopback: the refusals run ``waybill serve`` on a registry that
does not exist, so a process that got past the settings would stop at loading models (exit 1,
"cannot start") before binding any port, and the check that it exited 2 with the settings'
message is what proves the refusal. Everything that would have to bind beyond loopback is
checked through ``load_settings``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc
from waybill_client import Unauthenticated, WaybillClient

from server.runtime.cli import _read_token_file
from server.runtime.settings import Settings, SettingsError, load_settings
from tests.harness import ROOT, ServerProcess
from tests.routing_fixtures import admin
from tests.test_server_predict import struct_rows

SECRET = "outcome-s3cret-7f3a"
MODEL = "delivery_eta"
ADMIN_SOURCES = "WAYBILL_ADMIN_TOKEN or --admin-token-file"
OUTCOME_SOURCES = "WAYBILL_OUTCOME_TOKEN or --outcome-token-file"
# Tokens that were given but could never authenticate anyone.
UNUSABLE = ["", " ", "\t\n", "\n", " zq9x", "zq9x ", "zq9x\n", "zq9\x00x", "zq9ö"]


def refused_at_start(tmp_path: Path, *args: str,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`waybill serve` that must stop at its settings (exit 2), before any port is bound."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WAYBILL_")}
    result = subprocess.run(
        [sys.executable, "-m", "server.runtime.cli", "serve",
         "--registry", str(tmp_path / "no-registry"), "--no-routing", "--no-database",
         "--no-metrics", "--port", "0", "--admin-port", "0", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**base, **(env or {})},
    )
    assert result.returncode == 2, result.stderr
    assert "cannot start" not in result.stderr  # it never got as far as the models
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("waybill: invalid settings: "), result.stderr
    return result


# ------------------------------------------------------------------------- item 1: admin token


def test_blank_admin_token_is_refused_at_start(tmp_path: Path) -> None:
    empty, blank = tmp_path / "empty.token", tmp_path / "blank.token"
    empty.write_text("")
    blank.write_text(" \t\n")
    cases: list[tuple[tuple[str, ...], dict[str, str]]] = [
        # On loopback too: a token that was given must be usable.
        (("--admin-token-file", str(empty)), {}),
        (("--admin-host", "0.0.0.0", "--admin-token-file", str(empty)), {}),
        (("--admin-host", "0.0.0.0", "--admin-token-file", str(blank)), {}),
        (("--admin-host", "0.0.0.0"), {"WAYBILL_ADMIN_TOKEN": ""}),
        ((), {"WAYBILL_ADMIN_TOKEN": "   "}),
    ]
    for args, env in cases:
        stderr = refused_at_start(tmp_path, *args, env=env).stderr
        assert "admin_token=***" in stderr and "empty or blank" in stderr, (args, env, stderr)
        assert ADMIN_SOURCES in stderr


def test_admin_token_file_loses_one_line_ending_and_nothing_else(tmp_path: Path) -> None:
    padded = tmp_path / "padded.token"
    padded.write_text(" s3cret-padded\n")  # a client sends "Bearer s3cret-padded": refused
    stderr = refused_at_start(tmp_path, "--admin-token-file", str(padded)).stderr
    assert "surrounding whitespace" in stderr and "s3cret" not in stderr
    two_lines = tmp_path / "two.token"
    two_lines.write_text("s3cret-two\n\n")
    stderr = refused_at_start(tmp_path, "--admin-token-file", str(two_lines)).stderr
    assert "surrounding whitespace" in stderr and "s3cret" not in stderr
    missing = refused_at_start(tmp_path, "--admin-token-file", str(tmp_path / "nope")).stderr
    assert "admin_token" in missing and "nope" in missing and "Traceback" not in missing
    for text in ("s3cret\n", "s3cret\r\n", "s3cret"):
        (tmp_path / "ok.token").write_text(text, newline="")
        assert _read_token_file(tmp_path / "ok.token", "admin_token") == "s3cret"


@pytest.mark.parametrize("setting", ["admin_token", "outcome_token"])
@pytest.mark.parametrize("token", UNUSABLE)
def test_unusable_tokens_are_refused_without_being_echoed(setting: str, token: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({setting: token, "host": "0.0.0.0", "admin_host": "0.0.0.0"}, environ={})
    message = str(caught.value)
    assert f"{setting}=***" in message
    assert (ADMIN_SOURCES if setting == "admin_token" else OUTCOME_SOURCES) in message
    if token.strip():
        assert "zq9" not in message


def test_empty_admin_token_in_the_environment_is_refused_beyond_loopback() -> None:
    with pytest.raises(SettingsError, match="admin_token"):
        load_settings({"admin_host": "0.0.0.0"}, environ={"WAYBILL_ADMIN_TOKEN": ""})
    settings = load_settings({"admin_host": "0.0.0.0"}, environ={"WAYBILL_ADMIN_TOKEN": "t0k"})
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "t0k"


# ---------------------------------------------------------------------- item 2: outcome auth


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "waybill.example"])
def test_public_host_without_outcome_credentials_is_refused(host: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"host": host}, environ={})
    message = str(caught.value)
    assert repr(host) in message
    # Both ways out are named.
    assert OUTCOME_SOURCES in message
    assert "--outcome-auth none" in message and "WAYBILL_OUTCOME_AUTH=none" in message


def test_outcome_auth_choices() -> None:
    # Loopback without a token: open, as before (make serve, the tests).
    local = load_settings({}, environ={})
    assert (local.outcome_auth, local.outcome_token) == ("token", None)
    assert load_settings({"host": "localhost"}, environ={}).outcome_token is None
    token = load_settings({"host": "0.0.0.0", "outcome_token": "t0k"}, environ={})
    assert token.outcome_token is not None and token.outcome_token.get_secret_value() == "t0k"
    assert load_settings({"host": "0.0.0.0", "outcome_auth": "none"},
                         environ={}).outcome_auth == "none"
    by_env = load_settings({}, environ={"WAYBILL_HOST": "0.0.0.0",
                                        "WAYBILL_OUTCOME_TOKEN": "t0k"})
    assert by_env.outcome_token is not None
    assert load_settings({}, environ={"WAYBILL_HOST": "0.0.0.0",
                                      "WAYBILL_OUTCOME_AUTH": "none"}).outcome_auth == "none"
    # A token that would be ignored is a mistake, not a choice.
    with pytest.raises(SettingsError, match="ignores it"):
        load_settings({"outcome_auth": "none", "outcome_token": "t0k"}, environ={})


def test_mtls_outcome_auth_needs_a_client_ca(tmp_path: Path) -> None:
    tls = {"tls_cert": tmp_path / "c.pem", "tls_key": tmp_path / "k.pem"}
    for overrides in ({"outcome_auth": "mtls"}, {"outcome_auth": "mtls", **tls},
                      {"outcome_auth": "mtls", "host": "0.0.0.0", **tls}):
        with pytest.raises(SettingsError, match="tls_client_ca"):
            load_settings(overrides, environ={})
    settings = load_settings({"outcome_auth": "mtls", "host": "0.0.0.0", **tls,
                              "tls_client_ca": tmp_path / "ca.pem"}, environ={})
    assert settings.outcome_auth == "mtls"


def test_public_host_without_outcome_token_is_refused_at_start(tmp_path: Path) -> None:
    stderr = refused_at_start(tmp_path, "--host", "0.0.0.0").stderr
    assert "--outcome-auth none" in stderr and OUTCOME_SOURCES in stderr
    stderr = refused_at_start(tmp_path, "--outcome-auth", "mtls").stderr
    assert "tls_client_ca" in stderr


def test_worker_settings_carry_no_secret() -> None:
    from server.runtime.workers import worker_settings

    settings = Settings(admin_token="adm1n-t0k", outcome_token="0utc0me-t0k")  # type: ignore[arg-type]
    data = worker_settings(settings, 0, 1, 2, Path("port"))
    assert "admin_token" not in data and "outcome_token" not in data
    assert "t0k" not in repr(data)


def test_report_outcome_needs_the_outcome_token_and_the_rest_stays_open(
    registry: Path, tmp_path: Path, rows: list[dict[str, object]],
) -> None:
    token_file = tmp_path / "outcome.token"
    token_file.write_text(SECRET + "\n")  # the one trailing newline is not part of the token
    with ServerProcess(tmp_path, "--registry", str(registry), "--no-routing",
                       "--outcome-token-file", str(token_file)) as server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        # Open without credentials: Predict, PredictStream, ListModels, GetModel.
        predicted = stub.Predict(pb.PredictRequest(model=MODEL, rows=struct_rows(rows[:2])),
                                 timeout=10)
        ids = [p.prediction_id for p in predicted.predictions]
        streamed = list(stub.PredictStream(iter([pb.PredictStreamRequest(
            request=pb.PredictRequest(model=MODEL, rows=struct_rows(rows[2:3])))]), timeout=10))
        assert len(streamed) == 1 and streamed[0].WhichOneof("result") == "response"
        assert stub.ListModels(pb.ListModelsRequest(), timeout=10).models
        assert stub.GetModel(pb.GetModelRequest(model=MODEL), timeout=10).model_version.version

        request = pb.ReportOutcomeRequest(outcomes=[pb.Outcome(prediction_id=ids[0],
                                                               transit_days=3)])
        for metadata in ((), (("authorization", "Bearer wrong"),),
                         (("authorization", SECRET),), (("authorization", f"Bearer {SECRET}x"),)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ReportOutcome(request, metadata=metadata, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert "outcome token" in (caught.value.details() or "")
        # Nothing of the refused calls was recorded: the first accepted report is new.
        reply = stub.ReportOutcome(request, metadata=(("authorization", f"Bearer {SECRET}"),),
                                   timeout=10)
        assert (reply.recorded, reply.duplicates) == (1, 0)

        # The client sends the token on its outcome reports (and only there).
        with WaybillClient(server.target, timeout=10, outcome_token=SECRET) as client:
            result = client.predict(MODEL, rows[3:4])
            report = client.report_outcomes([(result.predictions[0].prediction_id, 2)])
            assert (report.recorded, report.duplicates) == (1, 0)
        with WaybillClient(server.target, timeout=10) as anonymous:
            result = anonymous.predict(MODEL, rows[4:5])
            with pytest.raises(Unauthenticated):
                anonymous.report_outcomes([(result.predictions[0].prediction_id, 2)])

        # The admin port knows nothing of the outcome token (no admin token on loopback).
        accuracy = admin(server.admin_target).GetAccuracy(
            admin_pb2.GetAccuracyRequest(model=MODEL), timeout=10)
        assert sum(v.outcomes for v in accuracy.versions) == 2
    assert SECRET not in server.log_text()
