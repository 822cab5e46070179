"""The composition root: the only module that wires services, health, reflection,
executors and shutdown together. Everything else receives what it needs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from waybill.v1 import admin_pb2, admin_pb2_grpc, prediction_pb2, prediction_pb2_grpc

from models.loaded import LoadedVersion
from models.registry import discover
from server.admin_service import AdminService
from server.auth import BearerToken, server_credentials
from server.catalog import Key, LoadFailed, VersionCatalog
from server.prediction_service import PredictionService
from server.predictor import Predictor
from server.routing import ConfigRejected, RoutingReloader, watch
from server.settings import Settings
from server.shadow import ShadowScorer
from server.state import ServingState, Snapshot

log = logging.getLogger("waybill.server")

PREDICTION_SERVICE = prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


class StartupError(Exception):
    pass


def load_registry_versions(settings: Settings, catalog: VersionCatalog) -> Snapshot:
    """Without a routing file: every version of the configured models, the newest default."""
    found = discover(settings.registry)
    wanted = settings.models or tuple(found)
    missing = [name for name in wanted if name not in found]
    if missing:
        raise StartupError(
            f"models {missing} not found in registry {settings.registry}; "
            f"found: {sorted(found) or 'none'}"
        )
    loaded: dict[Key, LoadedVersion] = {}
    for name in wanted:
        for ref in found[name]:
            try:
                loaded.update(catalog.ensure([(ref.name, ref.version)]))
            except LoadFailed:
                continue  # logged by the catalog; the other versions still serve
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
    """Owns the process's gRPC servers and everything they need to serve and to stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.admin_port = 0
        self.catalog = VersionCatalog(settings.registry)
        self.reloader: RoutingReloader | None = None
        if settings.routing is not None:
            self.reloader = RoutingReloader(settings.routing, self.catalog)
            try:
                initial = self.reloader.load_initial()
            except ConfigRejected as err:
                raise StartupError(f"routing config refused: {err}") from None
        else:
            initial = load_registry_versions(settings, self.catalog)
        self.state = ServingState(initial)
        self._executor = ThreadPoolExecutor(settings.predict_threads, "waybill-predict")
        self.shadow = ShadowScorer(self._executor, settings.shadow_queue)
        self._health = health.aio.HealthServicer()
        self._watcher: asyncio.Task[None] | None = None

        options = _server_options(settings)
        self._server = grpc.aio.server(options=options)
        predictor = Predictor(
            self.state, self._executor, settings.max_rows, self.shadow,
            batch_max_rows=settings.batch_max_rows,
            batch_delay_s=settings.batch_delay_us / 1e6, max_inflight=settings.max_inflight,
        )
        prediction_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(predictor, self.state, settings.default_deadline_s), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (PREDICTION_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )

        token = settings.admin_token
        interceptors = [BearerToken(token.get_secret_value())] if token else []
        self._admin = grpc.aio.server(options=options, interceptors=interceptors)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(self.state, self.reloader, self.shadow, settings.default_deadline_s),
            self._admin,
        )
        reflection.enable_server_reflection((ADMIN_SERVICE, reflection.SERVICE_NAME), self._admin)

    def _bind(self, server: grpc.aio.Server, host: str, port: int) -> int:
        address = f"{host}:{port}"
        s = self.settings
        if s.tls_cert is not None and s.tls_key is not None:
            bound = server.add_secure_port(
                address, server_credentials(s.tls_cert, s.tls_key, s.tls_client_ca)
            )
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise StartupError(f"cannot bind {address}")
        return int(bound)

    async def start(self) -> int:
        s = self.settings
        self.port = self._bind(self._server, s.host, s.port)
        self.admin_port = self._bind(self._admin, s.admin_host, s.admin_port)
        await self._server.start()
        await self._admin.start()
        self.shadow.start()
        if self.reloader is not None and s.routing_poll_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(
                watch(self.reloader.path, s.routing_poll_s, self.reload_from_file,
                      self.reloader.initial_signature),
                name="watch",
            )
        for service in ("", PREDICTION_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if s.port_file is not None:
            ports = {"port": self.port, "admin_port": self.admin_port}
            _write_atomically(s.port_file, json.dumps(ports) + "\n")
        log.info("listening", extra={"fields": {
            "host": s.host, "port": self.port, "admin_host": s.admin_host,
            "admin_port": self.admin_port, "pid": os.getpid()}})
        return self.port

    async def reload_from_file(self) -> None:
        if self.reloader is not None:
            await self.reloader.reload(self.state, "file")

    async def reload_on_signal(self) -> None:
        # A refused file is logged and counted; the snapshot in force keeps serving.
        if self.reloader is not None:
            with contextlib.suppress(ConfigRejected):
                await self.reloader.reload(self.state, "sighup")

    async def stop(self) -> None:
        """Drain: health NOT_SERVING, refuse new calls, let in-flight ones finish in grace."""
        log.info("draining", extra={"fields": {"grace_s": self.settings.grace_s}})
        await self._health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.cancel()
        try:
            await asyncio.gather(self._server.stop(self.settings.grace_s), self._admin.stop(1.0))
        finally:
            await self.shadow.stop()
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
    pending: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(server.reload_on_signal())
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    await server.stop()
    return 0
