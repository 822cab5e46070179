"""The composition root: the only module that wires services, health, reflection,
executors, telemetry and shutdown together. Everything else receives what it needs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from inference import open_inference_grpc_pb2
from waybill.v1 import admin_pb2, prediction_pb2

from models.loaded import LoadedVersion
from models.registry import discover
from server.monitoring.drift import DriftSettings
from server.monitoring.notify import Notifier
from server.monitoring.rules import AlertRule
from server.monitoring.shadow_stats import ShadowStats
from server.monitoring.signals import STORE_METRICS, Signals
from server.monitoring.trackers import DriftBook
from server.runtime.settings import Settings
from server.serving.alerting import AlertEngine
from server.serving.catalog import Key, LoadFailed, VersionCatalog
from server.serving.journal import Journal
from server.serving.outcomes import OutcomeScorer
from server.serving.predictor import Predictor
from server.serving.reloads import ConfigRejected, RoutingReloader, watch
from server.serving.shadow import ShadowScorer
from server.serving.state import ServingState, Snapshot
from server.storage.backends import describe, open_store
from server.storage.base import Store, StoreUnavailable
from server.telemetry.export import FLUSH_MAX_S, VERSION, Telemetry, TelemetryError
from server.telemetry.observe import Instrumented, Observer, observe_process
from server.transport.admin_service import AdminService
from server.transport.auth import BearerToken, server_credentials
from server.transport.inference_service import InferenceService
from server.transport.prediction_service import PredictionService
from server.transport.reflection import enable_reflection
from server.transport.rpc import add_service, quiet, start_draining, stopped_accepting
from server.transport.streams import StreamBudget

log = logging.getLogger("waybill.server")

_PREDICTION = prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"]
PREDICTION_SERVICE = _PREDICTION.full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
# The Open Inference Protocol (KServe V2), beside waybill.v1 on the public port.
INFERENCE_SERVICE = open_inference_grpc_pb2.DESCRIPTOR.services_by_name[
    InferenceService.NAME].full_name
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
HEALTH_METHODS = frozenset(f"/{_HEALTH.full_name}/{m.name}" for m in _HEALTH.methods)
# Looked up, not spelled out: a renamed method fails here instead of leaving outcomes open.
REPORT_OUTCOME = f"/{PREDICTION_SERVICE}/{_PREDICTION.methods_by_name['ReportOutcome'].name}"


MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
# The health service name that reports the store's database (SERVING while it answers);
# "" and PredictionService stay SERVING either way: predictions do not need it.
STORE_HEALTH = "waybill.store"
STORE_HEALTH_INTERVAL_S = 0.5
# A drain stops the server once no call has arrived for this long.
DRAIN_QUIET_S = 0.05


class StartupError(Exception):
    pass


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for both ports, or None without it; a file that cannot be read stops the start
    with one line naming the setting, the path and why."""
    s = settings
    if s.tls_cert is None or s.tls_key is None:
        return None
    try:
        return server_credentials(s.tls_cert, s.tls_key, s.tls_client_ca)
    except OSError as err:
        files = {"tls_key": s.tls_key, "tls_cert": s.tls_cert, "tls_client_ca": s.tls_client_ca}
        name = next((n for n, path in files.items() if str(path) == str(err.filename)),
                    "tls file")
        raise StartupError(f"{name} {err.filename}: {err.strerror or err}") from None


def _bind_refusal(host: str, port: int, reuse_port: bool) -> str | None:
    """Why the system would refuse ``host:port``, or None when some address of it binds.

    gRPC says only that a bind failed (and logs a line of its own), so a plain socket
    asks first, with the options gRPC's listener sets: SO_REUSEADDR, and SO_REUSEPORT
    for workers, which share the port with the supervisor's reservation.
    """
    if port == 0:
        return None  # any free port: nothing to collide with
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        return str(err.strerror)
    reasons = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(address)
            except OSError as err:
                reasons.append(err.strerror or str(err))
            else:
                return None  # gRPC, too, needs only one of the host's addresses
    return reasons[0] if reasons else None


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
        # Only workers share a port; a lone server must fail on a port already taken.
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        # Clients keep one HTTP/2 connection for as long as it lives, so replicas added by
        # the autoscaler would get no traffic from them: a GOAWAY after 5 minutes (calls
        # in flight get 30 s more) makes every client reconnect through the balancer.
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", 30_000),
        # Past this many calls at once on one connection, gRPC refuses the next at once
        # (REFUSED_STREAM, which callers see as UNAVAILABLE and may retry): a flood from
        # one client never reaches the event loop.
        ("grpc.max_concurrent_streams", settings.max_calls_per_connection),
        # No window growth past the 64 KiB default: what a stream sends ahead of the
        # server's reading is held by gRPC, and with growing windows 200 streams held 1 GB.
        ("grpc.http2.bdp_probe", 0),
    ]


def _outcome_auth(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The public port's interceptors: the outcome token's check on ReportOutcome alone.

    None with outcome_auth "none", "mtls" (the TLS handshake admitted only callers with a
    client certificate; see auth.server_credentials), or "token" without a token, which the
    settings allow only on a loopback host."""
    token = settings.outcome_token
    if settings.outcome_auth != "token" or token is None:
        return []
    return [BearerToken(token.get_secret_value(),
                        "ReportOutcome needs 'authorization: Bearer <outcome token>'",
                        only=(REPORT_OUTCOME,))]


class WaybillServer:
    """Owns the process's gRPC servers and everything they need to serve and to stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # First: a TLS file that cannot be read stops the start before anything is loaded.
        self._credentials = _tls_credentials(settings)
        self.port = 0
        self.admin_port = 0
        self.metrics_port: int | None = None
        self.catalog = VersionCatalog(settings.registry)
        self.store: Store | None = None
        if settings.database is not None:
            self.store = _open_store(settings)
            self.store.start()
        # Processes sharing the store (workers, replicas) tell their own alerts apart by
        # this; a lone process keeps the event log as it always did.
        sharing = settings.reuse_port or (self.store is not None and self.store.shared)
        instance = f"{socket.gethostname()}/{settings.worker_index}" if sharing else ""
        self.journal = Journal(self.store, instance=instance)
        self.reloader: RoutingReloader | None = None
        try:
            if settings.routing is not None:
                self.reloader = RoutingReloader(settings.routing, self.catalog, self.journal)
                try:
                    initial = self.reloader.load_initial()
                except ConfigRejected as err:
                    raise StartupError(f"routing config refused: {err}") from None
            else:
                initial = load_registry_versions(settings, self.catalog)
            # A server killed while rolled back comes back rolled back.
            initial = initial.with_table(self.journal.restore(initial.table))
            self.journal.started(initial)
        except BaseException:
            self._close_store()
            raise
        self.state = ServingState(initial)
        # After the models: a server that cannot serve starts no exporter threads.
        try:
            self.telemetry = Telemetry(os.environ, prometheus=settings.metrics_enabled)
        except TelemetryError as err:
            self._close_store()
            raise StartupError(f"telemetry: {err}") from None
        self.observer = Observer(self.telemetry.meter, self.telemetry.tracer,
                                 root_ratio=self.telemetry.root_ratio)
        self.telemetry.histograms.add(self.observer.histograms)
        self._executor = ThreadPoolExecutor(settings.predict_threads, "waybill-predict")
        self.shadow_stats = ShadowStats()
        self.shadow = ShadowScorer(self._executor, settings.shadow_queue, self.shadow_stats,
                                   self.observer.tracer)
        self.drift: DriftBook | None = None
        if settings.drift_enabled:
            self.drift = DriftBook(DriftSettings(
                window_rows=settings.drift_window_rows, window_seconds=settings.drift_window_s,
                min_rows=settings.drift_min_rows))
        state, drift = self.state, self.drift
        signals = Signals(self.observer,
                          lambda model, version: (drift.find(state.current.versions, model,
                                                             version)
                                                  if drift is not None else None),
                          self.store, self.shadow_stats)
        # Firing alerts are re-sent at evaluations: never more often than those happen.
        store = self.store

        def shared(rule: AlertRule) -> bool:
            """A rule on evidence every process sharing the store reads alike (accuracy
            from the shared outcomes): one process acts on it, for all."""
            return store is not None and store.shared and rule.metric in STORE_METRICS

        self.notifier = Notifier(
            self.observer.tracer, settings.alert_webhook,
            labels={"instance": socket.gethostname(), "worker": str(settings.worker_index)},
            alertmanagers=settings.alertmanager,
            resend_s=max(settings.alertmanager_resend_s, settings.alert_interval_s),
            per_process=lambda rule: not shared(rule))
        self.alerts = AlertEngine(self.state, signals, self.journal, self.notifier,
                                  settings.alert_interval_s or 1.0,
                                  before=drift.roll if drift is not None else lambda: None,
                                  lead=store.lead if store is not None else lambda: True,
                                  shared=shared)
        self.alerts.seed(self.journal.firing(), self.journal.decided())
        self._alerting: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None
        self._store_health: asyncio.Task[None] | None = None
        # One health service per port: the public one answers for PredictionService and
        # GRPCInferenceService, the admin one for AdminService; both SERVING once started,
        # NOT_SERVING on drain.
        self._health = health.aio.HealthServicer()
        self._admin_health = health.aio.HealthServicer()
        self._watcher: asyncio.Task[None] | None = None

        options = _server_options(settings)
        self._server = grpc.aio.server(options=options, interceptors=_outcome_auth(settings))
        predictor = Predictor(
            self.state, self._executor, settings.max_rows, self.shadow,
            batch_max_rows=settings.batch_max_rows,
            batch_delay_s=settings.batch_delay_us / 1e6, max_inflight=settings.max_inflight,
            observer=self.observer, drift=self.drift, store=self.store,
        )
        self._register_metrics(predictor)
        add_service(self._server, PredictionService(
            predictor, self.state, settings.default_deadline_s, self.observer, self.store,
            siblings=settings.reuse_port or (self.store is not None and self.store.shared),
            outcome_wait_s=settings.outcome_wait_s,
            streams=StreamBudget(settings.max_streams, settings.stream_rows),
            outcome_scorer=OutcomeScorer(self.state, settings.registry)))
        # The same predictor: V2 calls are routed, validated, scored, logged and
        # monitored exactly as Predict calls are.
        add_service(self._server, InferenceService(
            predictor, self.state, settings.default_deadline_s, self.observer,
            server_version=VERSION))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        enable_reflection(self._server, (PREDICTION_SERVICE, INFERENCE_SERVICE,
                                         health.SERVICE_NAME))

        token = settings.admin_token
        # Health answers without the token, as on the public port: probes carry no secret,
        # and it says no more than the public port's health does.
        interceptors = [BearerToken(token.get_secret_value(),
                                    "admin calls need 'authorization: Bearer <token>'",
                                    exempt=HEALTH_METHODS)
                        ] if token is not None else []
        self._admin = grpc.aio.server(options=options, interceptors=interceptors)
        add_service(self._admin, AdminService(
            self.state, self.reloader, self.shadow_stats, settings.default_deadline_s,
            self.observer, journal=self.journal, drift=self.drift, store=self.store,
            alerts=self.alerts, accuracy_window_s=settings.accuracy_window_s))
        health_pb2_grpc.add_HealthServicer_to_server(self._admin_health, self._admin)
        enable_reflection(self._admin, (ADMIN_SERVICE, health.SERVICE_NAME))

    def _register_metrics(self, predictor: Predictor) -> None:
        """Each owner registers its own metrics, read at collection time."""
        observer, state = self.observer, self.state
        owners: tuple[Instrumented | None, ...] = (
            self.catalog, state, self.reloader, self.shadow_stats, predictor, self.alerts,
            self.notifier, self.journal)
        for owner in owners:
            if owner is not None:
                owner.register_metrics(observer)
        if self.drift is not None:
            self.drift.register_metrics(observer, lambda: state.current.versions)
        if self.store is not None:
            self.store.register_metrics(observer, lambda: state.current.versions,
                                        self.settings.accuracy_window_s)
        observe_process(observer)

    def _bind(self, server: grpc.aio.Server, what: str, host: str, port: int) -> int:
        address = f"{host}:{port}"
        refusal = _bind_refusal(host, port, self.settings.reuse_port)
        if refusal is not None:
            raise StartupError(f"cannot bind {what}{address}: {refusal}")
        try:
            if self._credentials is not None:
                bound = server.add_secure_port(address, self._credentials)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0  # taken since the check, or a reason only gRPC sees (its log line)
        if bound == 0:
            raise StartupError(f"cannot bind {what}{address}")
        return int(bound)

    async def start(self) -> int:
        s = self.settings
        self.port = self._bind(self._server, "", s.host, s.port)
        self.admin_port = self._bind(self._admin, "admin ", s.admin_host, s.admin_port)
        if s.metrics_enabled:
            metrics_host = s.metrics_host or s.host
            try:
                self.metrics_port = self.telemetry.serve_metrics(metrics_host, s.metrics_port)
            except OSError as err:
                raise StartupError(f"cannot bind metrics {metrics_host}:{s.metrics_port}: "
                                   f"{err.strerror or err}") from None
        await self._server.start()
        await self._admin.start()
        self.shadow.start()
        if self.reloader is not None and s.routing_poll_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(
                watch(self.reloader.path, s.routing_poll_s, self.reload_from_file,
                      self.reloader.initial_signature, self.reloader.missing),
                name="watch",
            )
        if s.alert_interval_s > 0:
            self._alerting = asyncio.get_running_loop().create_task(self.alerts.run(),
                                                                    name="alerts")
        if self.store is not None and (s.reuse_port or self.store.shared):
            # Sibling workers and other replicas roll back and clear too: follow what they
            # save.
            self._following = asyncio.get_running_loop().create_task(
                self.journal.follow_every(self.state, s.follow_interval_s), name="follow")
        for service in ("", PREDICTION_SERVICE, INFERENCE_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        for service in ("", ADMIN_SERVICE):
            await self._admin_health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.store is not None:
            await self._report_store()
            self._store_health = asyncio.get_running_loop().create_task(
                self._watch_store(), name="store-health")
        # Everything loaded so far (models, schemas, libraries) lives as long as the process
        # or is freed by reference counting (a version and its batcher, tracker and
        # validator hold no cycles): the cyclic collector need not scan it on every full
        # pass while serving. 6 % more 1-row req/s (bench/ab.py).
        gc.collect()
        gc.freeze()
        # A request's objects die with it by reference counting, so young-generation
        # passes every 700 allocations mostly scan what is about to go anyway: every
        # 20,000 costs 3 % less CPU a call (bench/ab.py), and at most that many objects of
        # cyclic garbage (a failed call's traceback) wait for the next pass.
        gc.set_threshold(20_000, 10, 10)
        if s.port_file is not None:
            ports = {"port": self.port, "admin_port": self.admin_port,
                     "metrics_port": self.metrics_port}
            _write_atomically(s.port_file, json.dumps(ports) + "\n")
        log.info("listening", extra={"fields": {
            "host": s.host, "port": self.port, "admin_host": s.admin_host,
            "admin_port": self.admin_port, "metrics_port": self.metrics_port,
            "pid": os.getpid()}})
        return self.port

    async def _report_store(self) -> None:
        """The store's state on both ports' health, under STORE_HEALTH."""
        assert self.store is not None
        status = (health_pb2.HealthCheckResponse.SERVING if self.store.up
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for servicer in (self._health, self._admin_health):
            await servicer.set(STORE_HEALTH, status)

    async def _watch_store(self) -> None:
        while True:
            await asyncio.sleep(STORE_HEALTH_INTERVAL_S)
            await self._report_store()

    async def reload_from_file(self) -> None:
        if self.reloader is not None:
            await self.reloader.reload(self.state, "file")

    async def reload_on_signal(self) -> None:
        # A refused file is logged and counted; the snapshot in force keeps serving.
        if self.reloader is not None:
            with contextlib.suppress(ConfigRejected):
                await self.reloader.reload(self.state, "sighup")

    async def stop(self) -> None:
        """Drain: health NOT_SERVING, refuse new calls, let in-flight ones finish in grace,
        then flush telemetry in what is left of the grace period (at most FLUSH_MAX_S)."""
        deadline = time.monotonic() + self.settings.grace_s
        log.info("draining", extra={"fields": {"grace_s": self.settings.grace_s}})
        await self._health.enter_graceful_shutdown()
        await self._admin_health.enter_graceful_shutdown()
        start_draining()
        for task in (self._watcher, self._alerting, self._following, self._store_health):
            if task is not None:
                task.cancel()
        # Calls arriving now are held (server/transport/rpc.py): stop once they no longer
        # arrive, at most a fifth of the grace period from now, then answer them.
        await quiet(DRAIN_QUIET_S, self.settings.grace_s / 5)
        try:
            left = max(0.0, deadline - time.monotonic())
            stopping = asyncio.gather(self._server.stop(left), self._admin.stop(1.0))
            await asyncio.sleep(0)  # stop() has sent GOAWAY: no new call reaches a handler
            stopped_accepting()
            await stopping
        finally:
            stopped_accepting()  # whatever happened above, no call stays held
            await self.shadow.stop()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self.notifier.close()
            await asyncio.to_thread(self._close_store)
            budget = min(FLUSH_MAX_S, max(0.0, deadline - time.monotonic()))
            await asyncio.to_thread(self.telemetry.shutdown, budget)
        log.info("stopped")

    def close_telemetry(self) -> None:
        """For a server that never started: stop exporters after a short final flush."""
        self.telemetry.shutdown(0.5)
        self.notifier.close()
        self._close_store()

    def _close_store(self) -> None:
        if self.store is not None:
            self.store.close()

    async def wait(self) -> None:
        await self._server.wait_for_termination()


def _open_store(settings: Settings) -> Store:
    database = settings.database
    assert database is not None
    try:
        return open_store(
            database, retention_s=settings.prediction_retention_s,
            max_predictions=settings.prediction_max_rows, max_events=settings.event_max_rows,
            purge_interval_s=settings.purge_interval_s,
            flush_interval_s=settings.log_flush_interval_s, queue_max=settings.log_queue_max,
            pool_size=settings.database_pool_size, op_timeout_s=settings.database_timeout_s)
    except StoreUnavailable as err:
        # A replica that cannot read the overrides in force must not serve: it could send
        # traffic to a canary the others rolled back. The orchestrator starts it again.
        raise StartupError(f"database: {err}") from None
    except (OSError, sqlite3.Error, RuntimeError) as err:
        raise StartupError(f"database {describe(database)}: {err}") from None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(settings: Settings, name: str = "waybill") -> int:
    """Serve until SIGTERM or SIGINT; a server that cannot start says why and returns 1."""
    try:
        return asyncio.run(serve(settings))
    except StartupError as err:
        print(f"{name}: cannot start: {err}", file=sys.stderr)
        return 1


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain and return the exit code."""
    server = WaybillServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(server.reload_on_signal())
        pending.add(task)
        task.add_done_callback(pending.discard)

    # Before start(): once the port file says "ready", a signal must not hit the
    # default action (SIGHUP would kill the process).
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await server.start()
    except BaseException:
        server.close_telemetry()
        raise
    await stop.wait()
    await server.stop()
    return 0
