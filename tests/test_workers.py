"""`waybill serve --workers 2`: two real worker processes behind one port.

Connections are spread by the kernel (SO_REUSEPORT hashes each connection), so the
tests open many channels: with 24 channels the chance that one worker gets none is
2^-23. What one worker is told (an admin rollback) must reach the other through the
shared database; metrics of both arrive in one scrape with a ``worker`` label; a
worker that dies comes back; SIGTERM (or SIGKILL) of the supervisor leaves no worker.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ServerProcess
from tests.routing_fixtures import admin, routing_text, split, wait_for
from tests.test_metrics import scrape
from tests.test_server_predict import struct_rows

CHANNELS = 24
OUTCOME_TOKEN = "w0rker-0utc0me"


@pytest.fixture(scope="module")
def workers(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("workers")
    config = workdir / "routing.toml"
    config.write_text(routing_text(split(50)))
    token = workdir / "outcome.token"
    token.write_text(OUTCOME_TOKEN + "\n")
    with ServerProcess(workdir, "--registry", str(registry), "--routing", str(config),
                       "--workers", "2", "--outcome-token-file", str(token),
                       # An unknown id is NOT_FOUND after this long (a sibling's queue).
                       "--outcome-wait", "0.3") as proc:
        yield proc


def worker_pids(server: ServerProcess) -> list[int]:
    return list(json.loads(server.port_file.read_text())["workers"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def predict_on_many_channels(server: ServerProcess,
                             row: dict[str, object]) -> list[pb.PredictResponse]:
    replies = []
    for i in range(CHANNELS):
        # A fresh connection each time (no subchannel sharing), so the kernel picks anew.
        with grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool",
                                                            1)]) as channel:
            replies.append(pb_grpc.PredictionServiceStub(channel).Predict(
                pb.PredictRequest(model="delivery_eta", rows=struct_rows([row]),
                                  routing_key=f"k{i}"), timeout=10))
    return replies


def requests_by_worker(server: ServerProcess) -> dict[str, float]:
    counts: dict[str, float] = {}
    for (name, labels), value in scrape(server).items():
        if name == "waybill_requests_total":
            worker = dict(labels)["worker"]
            counts[worker] = counts.get(worker, 0.0) + value
    return counts


def test_both_workers_serve_one_port_and_report_in_one_scrape(
        workers: ServerProcess, rows: list[dict[str, object]]) -> None:
    assert len(worker_pids(workers)) == 2
    replies = predict_on_many_channels(workers, rows[0])
    assert {r.version for r in replies} == {"1.0.0", "1.1.0"}  # 50/50 by routing key
    counts = requests_by_worker(workers)
    assert set(counts) == {"0", "1"}
    assert all(n > 0 for n in counts.values())
    assert sum(counts.values()) >= CHANNELS


def test_every_worker_checks_the_outcome_token(workers: ServerProcess) -> None:
    # The supervisor hands secrets to its workers in their environment: a worker that got
    # no token would leave ReportOutcome open, one that got the settings' masked dump
    # ("**********") would refuse the real token.
    request = pb.ReportOutcomeRequest(outcomes=[pb.Outcome(prediction_id="f" * 32,
                                                           transit_days=1)])
    for _ in range(CHANNELS):
        with grpc.insecure_channel(workers.target, options=[("grpc.use_local_subchannel_pool",
                                                             1)]) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                                   ((("authorization", f"Bearer {OUTCOME_TOKEN}"),),
                                    grpc.StatusCode.NOT_FOUND)):  # reached the service
                with pytest.raises(grpc.RpcError) as caught:
                    stub.ReportOutcome(request, metadata=metadata, timeout=10)
                assert caught.value.code() == code, caught.value.details()


def test_a_rollback_told_to_one_worker_reaches_the_other(
        workers: ServerProcess, rows: list[dict[str, object]]) -> None:
    reply = admin(workers.admin_target).Rollback(
        admin_pb2.RollbackRequest(model="delivery_eta", reason="worker test"), timeout=10)
    assert reply.changed

    def everyone_rolled_back() -> bool:
        replies = predict_on_many_channels(workers, rows[0])
        return {(r.version, r.route_reason) for r in replies} == {
            ("1.0.0", pb.ROUTE_REASON_OVERRIDE)}

    wait_for(everyone_rolled_back, "both workers to serve stable under the override")
    admin(workers.admin_target).ClearOverride(
        admin_pb2.ClearOverrideRequest(model="delivery_eta"), timeout=10)
    wait_for(lambda: {r.version for r in predict_on_many_channels(workers, rows[0])}
             == {"1.0.0", "1.1.0"}, "both workers to split traffic again")


def test_a_dead_worker_is_started_again(
        workers: ServerProcess, rows: list[dict[str, object]]) -> None:
    first, _second = worker_pids(workers)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: set(requests_by_worker(workers)) == {"1"}, "the dead worker's metrics "
             "to leave the scrape")
    # Calls keep succeeding throughout: the other worker holds the port.
    wait_for(lambda: (predict_on_many_channels(workers, rows[0]) and
                      set(requests_by_worker(workers)) == {"0", "1"}),
             "the restarted worker to serve and report again", timeout=60)


def test_the_supervisor_takes_its_workers_down(
        registry: Path, tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        server = ServerProcess(tmp_path / sig.name, "--registry", str(registry),
                               "--no-routing", "--workers", "2")
        with server:
            pids = worker_pids(server)
            assert all(alive(p) for p in pids)
            server.signal(sig)
            code = server.wait(30)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids), f"a worker outlived the supervisor ({sig.name})"
