"""Routing on the real server: splits, pins, stickiness, reloads under load, overrides."""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ServerProcess
from tests.routing_fixtures import (
    admin,
    count,
    reload,
    routing,
    routing_text,
    run_calls,
    split,
    write_atomically,
)
from tests.test_server_predict import struct_rows


@pytest.fixture
def routed(registry: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    config = tmp_path / "routing.toml"
    config.write_text(routing_text(split(10)))
    # Watching off: these tests reload explicitly, so each step is deterministic.
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--routing-poll", "0") as server:
        yield server, config


def test_ninety_ten_split_lands_within_three_sigma(
    routed: tuple[ServerProcess, Path], rows: list[dict[str, object]]
) -> None:
    server, _ = routed
    n = 20_000
    served = count(run_calls(server.target, rows[0], [None] * n))
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert set(served) == {"1.0.0", "1.1.0"}, served
    assert abs(served["1.1.0"] - 0.1 * n) < 3 * sigma, served


def test_weight_zero_gets_nothing_and_pins_are_exact(
    routed: tuple[ServerProcess, Path], rows: list[dict[str, object]]
) -> None:
    server, config = routed
    write_atomically(config, routing_text(split(0)))
    assert reload(server.admin_target).changed
    keys = [f"k{i}" for i in range(1000)]
    assert count(run_calls(server.target, rows[0], keys + [None] * 1000)) == {"1.0.0": 2000}
    stub = pb_grpc.PredictionServiceStub(server.channel())
    request = pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:1]))
    for pin, version, reason in [("1.1.0", "1.1.0", pb.ROUTE_REASON_PINNED),
                                 ("canary", "1.1.0", pb.ROUTE_REASON_LABEL),
                                 ("1.0.0", "1.0.0", pb.ROUTE_REASON_PINNED)]:
        reply = stub.Predict(request, metadata=(("x-model-version", pin),), timeout=5)
        assert (reply.version, reply.route_reason) == (version, reason)


def test_sticky_keys_survive_a_reload_with_unchanged_weights(
    routed: tuple[ServerProcess, Path], rows: list[dict[str, object]]
) -> None:
    server, config = routed
    keys = [f"customer-{i}" for i in range(2000)]
    before = run_calls(server.target, rows[0], keys)
    assert count(before)["1.1.0"] > 0
    write_atomically(config, routing_text(split(10), shadow=("1.1.0", 0.5), comment="edit"))
    assert reload(server.admin_target).changed
    assert run_calls(server.target, rows[0], keys) == before
    stub = pb_grpc.PredictionServiceStub(server.channel())
    reply = stub.Predict(pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:1])),
                         metadata=(("x-routing-key", "customer-1"),), timeout=5)
    assert reply.route_reason == pb.ROUTE_REASON_STICKY


def test_raising_the_canary_moves_keys_only_onto_it(
    routed: tuple[ServerProcess, Path], rows: list[dict[str, object]]
) -> None:
    server, config = routed
    keys = [f"order-{i}" for i in range(3000)]
    before = run_calls(server.target, rows[0], keys)
    write_atomically(config, routing_text(split(25)))
    assert reload(server.admin_target).changed
    after = run_calls(server.target, rows[0], keys)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert {m for m in moved} == {("1.0.0", "1.1.0")}
    # The ideal is the 15-point change; a sample of 3000 keys has sigma ~0.65 points.
    assert abs(len(moved) / len(keys) - 0.15) < 0.025
    write_atomically(config, routing_text(split(5)))
    assert reload(server.admin_target).changed
    back = run_calls(server.target, rows[0], keys)
    moved_back = {(a, b) for a, b in zip(after, back, strict=True) if a != b}
    assert moved_back == {("1.1.0", "1.0.0")}


def test_fifty_reloads_alternating_valid_and_invalid_under_load_fail_no_request(
    routed: tuple[ServerProcess, Path], rows: list[dict[str, object]]
) -> None:
    server, config = routed
    stop = threading.Event()
    outcomes: list[str] = []

    def load() -> None:
        while not stop.is_set():
            outcomes.extend(run_calls(server.target, rows[0], [None] * 64, concurrency=8))

    loader = threading.Thread(target=load)
    loader.start()
    stub = admin(server.admin_target)
    valid_hash = ""
    try:
        for i in range(50):
            if i % 2 == 0:
                text = routing_text(split(10 + i % 20), comment=f"valid {i}")
                write_atomically(config, text)
                reply = stub.ReloadConfig(admin_pb2.ReloadConfigRequest(), timeout=30)
                assert reply.changed
                valid_hash = hashlib.sha256(text.encode()).hexdigest()
            else:
                bad = routing_text(split(10), comment=f"bad {i}").replace("weight = 90",
                                                                          "weight = 95")
                write_atomically(config, bad)
                with pytest.raises(grpc.RpcError) as caught:
                    stub.ReloadConfig(admin_pb2.ReloadConfigRequest(), timeout=30)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "sum to 100" in caught.value.details()
            assert routing(server.admin_target).content_hash == valid_hash
    finally:
        stop.set()
        loader.join(60)
    assert len(outcomes) >= 64  # load ran alongside the reloads
    assert [o for o in outcomes if o.startswith("error")] == []
    state = routing(server.admin_target)
    assert "sum to 100" in state.last_failure.reason
    rejected = [e for e in server.log_events() if e.get("event") == "routing rejected"]
    assert len(rejected) == 25
    assert {e["reason"] for e in rejected} == {"invalid"}


def test_a_version_that_cannot_load_is_refused_and_the_old_snapshot_serves(
    routed: tuple[ServerProcess, Path], rows: list[dict[str, object]]
) -> None:
    server, config = routed
    write_atomically(config, routing_text([("1.0.0", 90, "stable"), ("9.9.9", 10, "canary")]))
    with pytest.raises(grpc.RpcError) as caught:
        reload(server.admin_target)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "9.9.9" in caught.value.details()
    state = routing(server.admin_target)
    assert [(r.version, r.weight) for r in state.models[0].routes] == [("1.0.0", 90),
                                                                      ("1.1.0", 10)]


def test_rollback_sends_everything_to_stable_until_cleared(
    routed: tuple[ServerProcess, Path], rows: list[dict[str, object]]
) -> None:
    server, config = routed
    stub = admin(server.admin_target)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Rollback(admin_pb2.RollbackRequest(model="delivery_eta"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = stub.Rollback(admin_pb2.RollbackRequest(model="delivery_eta", reason="bad p99"),
                          timeout=5)
    again = stub.Rollback(admin_pb2.RollbackRequest(model="delivery_eta", reason="again"),
                          timeout=5)
    assert (first.changed, again.changed) == (True, False)
    assert first.routing.override.reason == "bad p99"
    assert list(first.routing.override.rolled_back) == ["1.1.0"]
    assert {r.version: r.effective_weight for r in first.routing.routes} == {"1.0.0": 100,
                                                                            "1.1.0": 0}
    keys = [f"c{i}" for i in range(500)]
    assert count(run_calls(server.target, rows[0], keys + [None] * 500)) == {"1.0.0": 1000}
    request = pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:1]))
    reply = pb_grpc.PredictionServiceStub(server.channel()).Predict(request, timeout=5)
    assert reply.route_reason == pb.ROUTE_REASON_OVERRIDE
    # A reload that keeps the same canary keeps the override ...
    write_atomically(config, routing_text(split(20)))
    reload(server.admin_target)
    assert routing(server.admin_target).models[0].override.reason == "bad p99"
    # ... and clearing it brings the configured weights back.
    cleared = stub.ClearOverride(admin_pb2.ClearOverrideRequest(model="delivery_eta"),
                                 timeout=5)
    assert cleared.changed
    assert not cleared.routing.HasField("override")
    assert count(run_calls(server.target, rows[0], keys))["1.1.0"] > 0
    with pytest.raises(grpc.RpcError) as caught:
        stub.Rollback(admin_pb2.RollbackRequest(model="nope", reason="x"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
