"""How a routing file reaches a running server: file watch (ConfigMap symlink swaps),
half-written files, SIGHUP; shadow scoring; admin token; TLS; the PR check command."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from waybill.v1 import admin_pb2, admin_pb2_grpc
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ROOT, ServerProcess
from tests.routing_fixtures import (
    admin,
    reload,
    routing,
    routing_text,
    run_calls,
    split,
    wait_for,
    write_atomically,
)
from tests.test_metrics import scrape, value
from tests.test_server_predict import struct_rows


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def events(server: ServerProcess, name: str) -> list[dict[str, object]]:
    return [e for e in server.log_events() if e.get("event") == name]


def configmap_dir(root: Path, text: str, generation: int) -> Path:
    """Lay out a directory the way the kubelet does: routing.toml -> ..data/routing.toml,
    ..data -> ..<generation>/; an update swaps the ..data symlink atomically."""
    root.mkdir(exist_ok=True)
    data = root / f"..gen{generation}"
    data.mkdir()
    (data / "routing.toml").write_text(text)
    link = root / "..data_tmp"
    link.symlink_to(data.name)
    link.replace(root / "..data")
    visible = root / "routing.toml"
    if not visible.is_symlink():
        visible.symlink_to("..data/routing.toml")
    return visible


def test_configmap_symlink_swap_is_picked_up(registry: Path, tmp_path: Path) -> None:
    first = routing_text(split(10))
    config = configmap_dir(tmp_path / "cm", first, 1)
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--routing-poll", "0.05") as server:
        assert routing(server.admin_target).content_hash == sha(first)
        second = routing_text(split(30))
        configmap_dir(tmp_path / "cm", second, 2)
        wait_for(lambda: routing(server.admin_target).content_hash == sha(second),
                 "the swapped config to apply")
        applied = events(server, "routing applied")
        assert [e["trigger"] for e in applied] == ["start", "file"]


def test_half_written_file_is_never_applied(registry: Path, tmp_path: Path) -> None:
    config = tmp_path / "routing.toml"
    good = routing_text(split(10))
    config.write_text(good)
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--routing-poll", "0.05") as server:
        final = routing_text(split(20), shadow=("1.1.0", 0.1), comment="the whole file")
        # A writer that stops mid-way (no temp file + rename): first a torn half, ...
        with config.open("w") as handle:
            handle.write(final[: len(final) // 2])
        wait_for(lambda: len(events(server, "routing rejected")) >= 1, "the torn file")
        assert routing(server.admin_target).content_hash == sha(good)
        # ... then a half that parses but is incomplete (the canary route is missing).
        with config.open("w") as handle:
            handle.write(routing_text([("1.0.0", 80, "stable")], comment="cut short"))
        wait_for(lambda: len(events(server, "routing rejected")) >= 2, "the short file")
        assert routing(server.admin_target).content_hash == sha(good)
        config.write_text(final)
        wait_for(lambda: routing(server.admin_target).content_hash == sha(final),
                 "the complete file")
        rejected = events(server, "routing rejected")
    assert {e["reason"] for e in rejected} == {"invalid"}
    applied_hashes = {e["content_hash"] for e in events(server, "routing applied")}
    assert applied_hashes == {sha(good), sha(final)}


def test_sighup_reloads(registry: Path, tmp_path: Path) -> None:
    config = tmp_path / "routing.toml"
    config.write_text(routing_text(split(10)))
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--routing-poll", "0") as server:
        changed = routing_text(split(50))
        write_atomically(config, changed)
        server.signal(signal.SIGHUP)
        wait_for(lambda: routing(server.admin_target).content_hash == sha(changed), "SIGHUP")
        assert events(server, "routing applied")[-1]["trigger"] == "sighup"


def missing_count(server: ServerProcess) -> float:
    return value(scrape(server), "waybill_config_reloads_total", outcome="rejected",
                 reason="missing")


def holds(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` stays true for ``seconds``: what did not happen can only be
    shown over a window (checked all along it, not slept through)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            return False
        time.sleep(0.02)
    return True


def test_a_deleted_routing_file_is_logged_and_counted_once_per_disappearance(
    registry: Path, tmp_path: Path
) -> None:
    config = tmp_path / "routing.toml"
    text = routing_text(split(10))
    config.write_text(text)
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--routing-poll", "0.05") as server:
        for gone in (1, 2):
            config.unlink()
            counted = lambda n=gone: missing_count(server) == n  # noqa: E731
            wait_for(counted, "the disappearance to be counted")
            # Once per disappearance, not once per poll: the watcher polls 20 times here.
            assert holds(counted, 1.0)
            shown = routing(server.admin_target)
            assert shown.content_hash == sha(text)  # the snapshot in force keeps serving
            assert str(config) in shown.last_failure.reason
            # Back with the content in force: nothing to reload, and nothing wrong now.
            config.write_text(text)
            wait_for(lambda: not routing(server.admin_target).HasField("last_failure"),
                     "the failure to clear")
        lines = [e for e in events(server, "routing rejected") if e["reason"] == "missing"]
        assert len(lines) == 2
        assert all(e["level"] == "error" and str(config) in str(e["error"])
                   and "keeps serving" in str(e["error"]) for e in lines)
        assert [e["trigger"] for e in events(server, "routing applied")] == ["start"]
        assert value(scrape(server), "waybill_config_reloads_total", outcome="applied",
                     reason="none") == 1


def test_restoring_the_content_in_force_clears_the_last_failure(
    registry: Path, tmp_path: Path
) -> None:
    config = tmp_path / "routing.toml"
    good = routing_text(split(10))
    config.write_text(good)
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--routing-poll", "0.05") as server:
        # By the watcher ...
        write_atomically(config, "version = [")
        wait_for(lambda: routing(server.admin_target).HasField("last_failure"),
                 "the bad file to be refused")
        write_atomically(config, good)
        wait_for(lambda: not routing(server.admin_target).HasField("last_failure"),
                 "the failure to clear")
        # ... and by ReloadConfig, which says nothing changed.
        write_atomically(config, "version = [")
        with pytest.raises(grpc.RpcError) as caught:
            reload(server.admin_target)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert routing(server.admin_target).HasField("last_failure")
        write_atomically(config, good)
        assert not reload(server.admin_target).changed
        assert not routing(server.admin_target).HasField("last_failure")
        assert routing(server.admin_target).content_hash == sha(good)
        assert [e["trigger"] for e in events(server, "routing applied")] == ["start"]


def test_shadow_is_compared_and_a_full_queue_drops_without_failing_callers(
    registry: Path, tmp_path: Path, rows: list[dict[str, object]]
) -> None:
    config = tmp_path / "routing.toml"
    config.write_text(routing_text([("1.0.0", 100, "stable")], shadow=("1.1.0", 1.0)))
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--routing-poll", "0", "--shadow-queue", "1") as server:
        served = run_calls(server.target, rows[0], [None] * 600, concurrency=32)
        assert set(served) == {"1.0.0"}
        stub = admin(server.admin_target)

        def stats() -> admin_pb2.ShadowStats:
            (only,) = stub.GetShadowStats(admin_pb2.GetShadowStatsRequest(), timeout=5).stats
            return only

        wait_for(lambda: stats().compared_rows + stats().dropped + stats().failed == 600,
                 "shadow work to finish")
        s = stats()
    assert (s.model, s.shadow_version, s.sampled) == ("delivery_eta", "1.1.0", 600)
    assert s.dropped > 0  # a queue of one cannot keep up with 32 concurrent callers
    assert s.compared_rows > 0
    assert s.failed == 0
    assert sum(s.counts) == s.compared_rows
    assert s.mean_absolute_difference >= abs(s.mean_difference)
    assert 0.0 <= s.outside_served_interval <= 1.0


def test_admin_token_rules(registry: Path, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "server.runtime.cli", "serve", "--registry", str(registry),
         "--port", "0", "--admin-host", "0.0.0.0", "--admin-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if k != "WAYBILL_ADMIN_TOKEN"},
    )
    assert refused.returncode == 2
    assert "admin token" in refused.stderr
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with ServerProcess(tmp_path, "--registry", str(registry),
                       "--admin-token-file", str(token_file)) as server:
        anonymous = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(server.admin_target))
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as caught:
                anonymous.GetRouting(admin_pb2.GetRoutingRequest(), metadata=metadata,
                                     timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = admin(server.admin_target, token="s3cret-token").GetRouting(
            admin_pb2.GetRoutingRequest(), timeout=5)
        assert ok.models[0].model == "delivery_eta"
    assert "s3cret" not in server.log_text()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    return key, cert


def test_tls_and_mutual_tls(registry: Path, tmp_path: Path,
                            rows: list[dict[str, object]]) -> None:
    server_key, server_cert = _self_signed(tmp_path, "server")
    client_key, client_cert = _self_signed(tmp_path, "client")
    request = pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:1]))
    with ServerProcess(tmp_path, "--registry", str(registry), "--tls-cert", str(server_cert),
                       "--tls-key", str(server_key), "--tls-client-ca", str(client_cert),
                       "--outcome-auth", "mtls") as server:
        mutual = grpc.ssl_channel_credentials(
            root_certificates=server_cert.read_bytes(),
            private_key=client_key.read_bytes(), certificate_chain=client_cert.read_bytes())
        stub = pb_grpc.PredictionServiceStub(grpc.secure_channel(server.target, mutual))
        reply = stub.Predict(request, timeout=10)
        assert len(reply.predictions) == 1
        # --outcome-auth mtls: the client certificate is the credential, no token is asked.
        outcome = stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[pb.Outcome(
            prediction_id=reply.predictions[0].prediction_id, transit_days=2)]), timeout=10)
        assert outcome.recorded == 1
        admin_reply = admin_pb2_grpc.AdminServiceStub(
            grpc.secure_channel(server.admin_target, mutual)).GetRouting(
                admin_pb2.GetRoutingRequest(), timeout=10)
        assert admin_reply.models
        no_client_cert = grpc.ssl_channel_credentials(root_certificates=server_cert.read_bytes())
        for credentials in (no_client_cert, None):
            channel = (grpc.secure_channel(server.target, credentials) if credentials
                       else grpc.insecure_channel(server.target))
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def waybill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.runtime.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_routing_check_command(registry: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.toml"
    new = tmp_path / "new.toml"
    old.write_text(routing_text(split(10)))
    new.write_text(routing_text(split(25)))
    result = waybill("routing", "check", str(new), "--against", str(old),
                     "--registry", str(registry))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
    assert "| 1.1.0 | canary | 10% | 25% |" in result.stdout
    moved = re.search(r"change version: \*\*([0-9.]+)%\*\*", result.stdout)
    assert moved is not None and 14.0 < float(moved.group(1)) < 16.0
    assert "| 1.0.0 | 1.1.0 |" in result.stdout
    assert "| 1.1.0 | 1.0.0 |" not in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(routing_text([("1.0.0", 90, "stable"), ("2.0.0", 10, "canary")]))
    result = waybill("routing", "check", str(bad), "--registry", str(registry))
    assert result.returncode == 1
    assert "2.0.0" in result.stdout and "invalid" in result.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text("version = 1\n[models.delivery_eta\n")
    result = waybill("routing", "check", str(broken), "--registry", str(registry))
    assert result.returncode == 1
    assert "line 2" in result.stdout
    result = waybill("routing", "check", str(ROOT / "deploy" / "routing.toml"), "--against",
                     "HEAD")
    assert result.returncode == 0, result.stdout + result.stderr
