"""The composition root: the only module that wires services, health, reflection,
executors and shutdown together. Everything else receives what it needs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from waybill.v1 import prediction_pb2, prediction_pb2_grpc

from models.artifact import ArtifactError
from models.loaded import LoadedVersion
from models.registry import discover
from server.prediction_service import PredictionService
from server.predictor import Predictor
from server.settings import Settings
from server.state import ServingState, Snapshot

log = logging.getLogger("waybill.server")

PREDICTION_SERVICE = prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name


class StartupError(Exception):
    pass


def load_versions(settings: Settings) -> Snapshot:
    """Load every version of the configured models; refuse (and log) the broken ones."""
    found = discover(settings.registry)
    wanted = settings.models or tuple(found)
    missing = [name for name in wanted if name not in found]
    if missing:
        raise StartupError(
            f"models {missing} not found in registry {settings.registry}; "
            f"found: {sorted(found) or 'none'}"
        )
    loaded: dict[str, dict[str, LoadedVersion]] = {}
    for name in wanted:
        for ref in found[name]:
            try:
                version = LoadedVersion.load(settings.registry, ref.name, ref.version)
            except ArtifactError as err:
                log.error("version refused", extra={"fields": {
                    "model": ref.name, "version": ref.version, "reason": str(err)}})
                continue
            loaded.setdefault(name, {})[ref.version] = version
            log.info("version loaded", extra={"fields": {
                "model": ref.name, "version": ref.version, "sha256": version.manifest.sha256}})
    if not loaded:
        raise StartupError(f"no servable model version in registry {settings.registry}")
    return Snapshot.of(loaded)


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # max_metadata_size alone is a soft limit; the absolute one is enforced.
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
        ("grpc.so_reuseport", 0),
    ]


class WaybillServer:
    """Owns the process's gRPC server and everything it needs to serve and to stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.state = ServingState(load_versions(settings))
        self._executor = ThreadPoolExecutor(settings.predict_threads, "waybill-predict")
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(options=_server_options(settings))
        predictor = Predictor(self.state, self._executor, settings.max_rows)
        prediction_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(predictor, self.state, settings.default_deadline_s), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (PREDICTION_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )

    async def start(self) -> int:
        self.port = self._server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.port == 0:
            raise StartupError(f"cannot bind {self.settings.host}:{self.settings.port}")
        await self._server.start()
        for service in ("", PREDICTION_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.port_file is not None:
            _write_atomically(self.settings.port_file, f"{self.port}\n")
        log.info("listening", extra={"fields": {
            "host": self.settings.host, "port": self.port, "pid": os.getpid()}})
        return self.port

    async def stop(self) -> None:
        """Drain: health NOT_SERVING, refuse new calls, let in-flight ones finish in grace."""
        log.info("draining", extra={"fields": {"grace_s": self.settings.grace_s}})
        await self._health.enter_graceful_shutdown()
        try:
            await self._server.stop(self.settings.grace_s)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")

    async def wait(self) -> None:
        await self._server.wait_for_termination()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain and return the exit code."""
    server = WaybillServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0
