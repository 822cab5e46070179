"""Start the real `waybill serve` process on 127.0.0.1 with an OS-chosen port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port_file = workdir / "port"
        self.log_path = workdir / "server.log"
        self.args = [
            sys.executable, "-m", "server.runtime.cli", "serve",
            "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", "--metrics-port", "0",
            "--port-file", str(self.port_file), *args,
        ]
        if "--database" not in args and "--no-database" not in args:
            self.args += ["--database", str(workdir / "waybill.db")]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin_port = 0
        self.metrics_port: int | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_target(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.port_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        # The server writes the port file only once every model is loaded and it listens.
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"server did not start in {timeout}s:\n{self.log_text()}")
            time.sleep(0.02)
        ports = json.loads(self.port_file.read_text())
        self.port, self.admin_port = ports["port"], ports["admin_port"]
        self.metrics_port = ports.get("metrics_port")
        return self

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port is not None, "the server runs without a metrics endpoint"
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop a helper process (Prometheus, Alertmanager): SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
