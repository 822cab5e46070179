"""A real Prometheus scrapes the server's /metrics: PromQL sees the request rate per
version that the test sent, and every query of the Grafana dashboard evaluates.

Prometheus comes from Debian's ``prometheus`` package (``make test`` installs it); when
the binary is missing this module installs it if it can (root with apt-get), and is
skipped only when that is impossible. Prometheus listens on 127.0.0.1 and is stopped at
the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ServerProcess, terminate
from tests.routing_fixtures import routing_text, split
from tests.test_metrics import DASHBOARD, dashboard_queries
from tests.test_server_predict import struct_rows

T = TypeVar("T")


def prometheus_binary() -> str | None:
    found = shutil.which("prometheus")
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]):
        try:
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=True)
        except (subprocess.SubprocessError, OSError):
            return None
    return shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            found = probe()
        except OSError as err:  # not listening yet
            found, last = None, err
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last})")
        time.sleep(0.1)


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: waybill\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 f"--storage.tsdb.path={workdir / 'data'}"],
                stdout=out, stderr=out)

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read()) if "api" in path else response.status

    def query(self, promql: str) -> Any:
        answer = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def stop(self) -> None:
        terminate(self.proc)


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    binary = prometheus_binary()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here "
                    "(make test installs Debian's prometheus package)")
    return binary


@pytest.fixture(scope="module")
def scraped(prometheus_bin: str, registry: Path, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[ServerProcess, Prometheus]]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    routing = tmp_path / "routing.toml"
    routing.write_text(routing_text(split(10)))
    (tmp_path / "server").mkdir()
    with ServerProcess(tmp_path / "server", "--registry", str(registry),
                       "--routing", str(routing)) as server:
        prometheus = Prometheus(prometheus_bin, tmp_path, f"127.0.0.1:{server.metrics_port}")
        try:
            wait_for(lambda: prometheus.get("/-/ready") == 200, "Prometheus to be ready")
            yield server, prometheus
        finally:
            prometheus.stop()
    assert prometheus.proc.returncode is not None


def send(server: ServerProcess, row: dict[str, object], version: str, n: int) -> None:
    stub = pb_grpc.PredictionServiceStub(server.channel())
    request = pb.PredictRequest(model="delivery_eta", rows=struct_rows([row]))
    for _ in range(n):
        reply = stub.Predict(request, metadata=(("x-model-version", version),), timeout=10)
        assert reply.version == version


def test_promql_sees_the_request_rate_per_version_that_was_sent(
        scraped: tuple[ServerProcess, Prometheus], rows: list[dict[str, object]]) -> None:
    server, prometheus = scraped
    total = 'sum by (version) (waybill_requests_total{model="delivery_eta", code="OK"})'
    # Starting points, scraped before the traffic, in the same 3:1 proportion as the
    # traffic: rate() extrapolates a counter that starts inside its window towards zero by
    # first value / increase, so equal proportions extrapolate both series alike.
    send(server, rows[0], "1.0.0", 3)
    send(server, rows[0], "1.1.0", 1)
    wait_for(lambda: prometheus.by(total, "version") == {"1.0.0": 3.0, "1.1.0": 1.0},
             "the first scrape of both versions")
    send(server, rows[0], "1.0.0", 30)
    send(server, rows[0], "1.1.0", 10)
    wait_for(lambda: prometheus.by(total, "version") == {"1.0.0": 33.0, "1.1.0": 11.0},
             "a scrape after the traffic")
    rate = 'sum by (version) (rate(waybill_requests_total{model="delivery_eta", code="OK"}[1m]))'
    rates = wait_for(lambda: prometheus.by(rate, "version") or None, "rates")
    assert set(rates) == {"1.0.0", "1.1.0"}
    assert rates["1.0.0"] / rates["1.1.0"] == pytest.approx(3.0, rel=0.05)
    p50 = prometheus.query('histogram_quantile(0.5, sum by (le) (rate('
                           'waybill_request_duration_seconds_bucket[1m])))')
    assert 0 < float(p50[0]["value"][1]) < 1.0
    up = prometheus.by('up{job="waybill"}', "job")
    assert up == {"waybill": 1.0}


def test_every_dashboard_query_evaluates(scraped: tuple[ServerProcess, Prometheus]) -> None:
    _, prometheus = scraped
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [q for q in dashboard_queries(dashboard) if not q.startswith("label_values(")]
    assert queries
    for query in queries:
        promql = query.replace("$__rate_interval", "1m").replace("$model", ".*")
        prometheus.query(promql)  # asserts status success: the query parses and runs
