"""``waybill serve --workers N``: N server processes sharing one port.

Python runs one request at a time per process, so a second core needs a second
process. The supervisor (this module, the process the user started) reserves the
prediction and admin ports with ``SO_REUSEPORT``, starts N workers that bind the
same ports with the same option (the kernel spreads new connections over them),
and then does only three things:

- **metrics**: it serves ``/metrics`` on the configured port, made of every worker's
  own endpoint (each on an ephemeral loopback port) with a ``worker`` label added,
  so one scrape sees the whole pod and no series of two workers collide;
- **signals**: SIGTERM/SIGINT drain every worker and exit; SIGHUP reaches every
  worker (each reloads the routing file);
- **restarts**: a worker that dies is started again, with the same ports.

Routing state reaches every worker without the supervisor: each worker watches the
routing file itself, and overrides (rollbacks, clears) made in one worker are saved
in the shared database (the pod's SQLite file, or the replicas' PostgreSQL database), which
the others follow (``Journal.follow``). An
admin call lands on one worker, like a call to one replica: rollback, clear and
reload reach the others within a second; drift, alerts and shadow statistics are
that worker's (as they are per replica in a fleet).
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from server.runtime.settings import Settings

log = logging.getLogger("waybill.workers")

SETTINGS_ENV = "WAYBILL_WORKER_SETTINGS"
# Secrets reach a worker in its environment, never in the settings JSON (model_dump writes a
# SecretStr as "**********", which the worker would take for the token) or a command line.
SECRET_ENV = {"admin_token": "WAYBILL_ADMIN_TOKEN", "outcome_token": "WAYBILL_OUTCOME_TOKEN"}
READY_TIMEOUT_S = 120.0
RESTART_DELAY_S = 1.0


def reserve(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: it fixes the port (0 = any free one)
    until every worker has bound it too, and never accepts a connection itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_settings(settings: Settings, index: int, port: int, admin_port: int,
                    port_file: Path) -> dict[str, Any]:
    data = settings.model_dump(mode="json", exclude=set(SECRET_ENV))
    data.update(workers=1, worker_index=index, reuse_port=True, port=port,
                admin_port=admin_port, port_file=str(port_file), metrics_port=0,
                metrics_host="127.0.0.1")
    return data


class MergedMetrics:
    """A collector made of the workers' expositions, each sample labelled by worker."""

    def __init__(self, endpoints: dict[int, int]) -> None:
        self.endpoints = endpoints  # worker index -> its metrics port

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for index, port in sorted(self.endpoints.items()):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=5) as response:
                    text = response.read().decode()
            except OSError as err:  # a restarting worker: the others still report
                log.warning("worker metrics unavailable", extra={"fields": {
                    "worker": index, "error": str(err)}})
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": str(index)},
                                      sample.value, sample.timestamp, sample.exemplar)
        return list(families.values())


def serve_merged_metrics(host: str, port: int, merged: MergedMetrics) -> http.server.HTTPServer:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(merged)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd


class Worker:
    def __init__(self, index: int, settings: dict[str, Any], secrets: dict[str, str]) -> None:
        self.index = index
        self.settings = settings
        self.secrets = secrets  # environment variable -> value
        self.port_file = Path(settings["port_file"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port: int | None = None

    def start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        env = {**os.environ, SETTINGS_ENV: json.dumps(self.settings), **self.secrets}
        self.proc = subprocess.Popen([sys.executable, "-m", "server.runtime.workers"], env=env)

    def ready(self) -> bool:
        """True once the worker wrote its port file (it is serving)."""
        if self.metrics_port is not None:
            return True
        try:
            ports = json.loads(self.port_file.read_text())
        except (OSError, ValueError):
            return False
        self.metrics_port = ports.get("metrics_port") or 0
        return True


def _cannot_bind(what: str, host: str, port: int, err: OSError) -> int:
    # The single process says the same (server.runtime.app): one line, exit code 1.
    print(f"waybill: cannot start: cannot bind {what}{host}:{port}: {err.strerror or err}",
          file=sys.stderr)
    return 1


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` workers until SIGTERM/SIGINT; returns the exit code."""
    stop = threading.Event()
    hup = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    try:
        main = reserve(settings.host, settings.port)
    except OSError as err:
        return _cannot_bind("", settings.host, settings.port, err)
    try:
        admin = reserve(settings.admin_host, settings.admin_port)
    except OSError as err:
        main.close()
        return _cannot_bind("admin ", settings.admin_host, settings.admin_port, err)
    port, admin_port = main.getsockname()[1], admin.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="waybill-workers-"))
    secrets = {env: secret.get_secret_value() for name, env in SECRET_ENV.items()
               if (secret := getattr(settings, name)) is not None}
    workers = [Worker(i, worker_settings(settings, i, port, admin_port,
                                         workdir / f"worker-{i}.json"), secrets)
               for i in range(settings.workers)]
    for worker in workers:
        worker.start()
    merged = MergedMetrics({})
    httpd = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(w.ready() for w in workers):
            if stop.is_set() or any(w.proc is not None and w.proc.poll() is not None
                                    for w in workers):
                print("waybill: a worker failed to start", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print("waybill: workers did not start in time", file=sys.stderr)
                return 1
            time.sleep(0.05)
        merged.endpoints = {w.index: w.metrics_port for w in workers if w.metrics_port}
        metrics_port = None
        if settings.metrics_enabled:
            httpd = serve_merged_metrics(settings.host, settings.metrics_port, merged)
            metrics_port = httpd.server_address[1]
        # Every worker holds the ports now; the reservations can go.
        main.close()
        admin.close()
        if settings.port_file is not None:
            ports = {"port": port, "admin_port": admin_port, "metrics_port": metrics_port,
                     "workers": [w.proc.pid for w in workers if w.proc is not None]}
            tmp = settings.port_file.with_name(f".{settings.port_file.name}.tmp")
            tmp.write_text(json.dumps(ports) + "\n")
            os.replace(tmp, settings.port_file)
        log.info("workers listening", extra={"fields": {
            "port": port, "admin_port": admin_port, "metrics_port": metrics_port,
            "workers": settings.workers, "pid": os.getpid()}})
        _watch(workers, merged, stop, hup)
        return 0
    finally:
        _stop(workers, settings.grace_s + 5.0)
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        main.close()
        admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _watch(workers: list[Worker], merged: MergedMetrics, stop: threading.Event,
           hup: threading.Event) -> None:
    while not stop.wait(0.2):
        if hup.is_set():
            hup.clear()
            for worker in workers:
                if worker.proc is not None and worker.proc.poll() is None:
                    worker.proc.send_signal(signal.SIGHUP)
        for worker in workers:
            proc = worker.proc
            if proc is not None and proc.poll() is not None:
                log.error("worker exited; starting it again", extra={"fields": {
                    "worker": worker.index, "code": proc.returncode}})
                time.sleep(RESTART_DELAY_S)
                worker.metrics_port = None
                merged.endpoints.pop(worker.index, None)
                worker.start()
            elif worker.metrics_port is None and worker.ready() and worker.metrics_port:
                merged.endpoints[worker.index] = worker.metrics_port


def _stop(workers: list[Worker], timeout_s: float) -> None:
    for worker in workers:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        if worker.proc is None:
            continue
        try:
            worker.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL, so that
    no worker outlives it holding the port."""
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _child() -> int:
    """A worker: the settings the supervisor passed, then the ordinary server."""
    from server.runtime import logs
    from server.runtime.app import run

    _die_with_parent()
    data = json.loads(os.environ.pop(SETTINGS_ENV))
    for name, env in SECRET_ENV.items():
        if env in os.environ:
            data[name] = os.environ[env]
    settings = Settings.model_validate(data)
    logs.configure(settings.log_level, settings.access_log)
    return run(settings, f"waybill worker {settings.worker_index}")


if __name__ == "__main__":
    sys.exit(_child())
