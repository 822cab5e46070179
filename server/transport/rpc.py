"""The shared edge of every RPC handler: error mapping, one access-log line, the server
span and the RPC metrics of each call."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace

from server.runtime.logs import ACCESS, ACCESS_LOGGER
from server.serving.errors import Unavailable
from server.telemetry.observe import UNKNOWN, Call, Observer, begin_call, current_call
from server.transport.status import WireStatus, to_status

log = logging.getLogger(ACCESS_LOGGER)
errors_log = logging.getLogger("waybill.errors")

# Servicers built without an observer still aggregate (cheaply) and export nothing.
_UNOBSERVED = Observer()

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


# Set once on SIGTERM: calls that still reach a handler are refused with UNAVAILABLE
# (which clients retry) while the calls already in flight finish.
_draining = threading.Event()
# Called when draining starts: long calls (streams) that must stop reading.
_drain_callbacks: set[Callable[[], None]] = set()


def start_draining() -> None:
    """Called on the event loop by the server's stop."""
    _draining.set()
    for callback in list(_drain_callbacks):
        callback()


def on_drain(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` (on the event loop) when draining starts, at once if it has;
    returns the function that unsubscribes it."""
    if _draining.is_set():
        callback()
        return lambda: None
    _drain_callbacks.add(callback)
    return lambda: _drain_callbacks.discard(callback)


def draining() -> bool:
    return _draining.is_set()


def log_call(call: Call, code: grpc.StatusCode, seconds: float, span: trace.Span | None,
             ) -> None:
    """Complete a call's access-log fields and write its line (if the policy wants it)."""
    fields = call.fields
    if call.model is not None and call.version != UNKNOWN and "version" not in fields:
        fields["version"], fields["route"] = call.version, call.route  # failed late
    fields["code"] = code.name
    fields["duration_ms"] = round(seconds * 1000, 3)
    ACCESS.write(fields, span, ok=code is grpc.StatusCode.OK, seconds=seconds)


def failure(error: Exception, method: str) -> WireStatus:
    """The status an exception maps to; an unexpected one is logged with its error id."""
    status = to_status(error)
    if status.error_id is not None:
        errors_log.error("unhandled error", exc_info=error,
                         extra={"fields": {"error_id": status.error_id, "method": method}})
    return status


def annotate(**fields: Any) -> None:
    """Attach fields to the current call's access-log line."""
    call = current_call()
    if call is not None:
        call.fields.update(fields)


def handler(method: str, *, streaming: bool = False,
            ) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Wrap a servicer method: default deadline, server span, map any exception to its
    status, log once, record the call's duration and outcome.

    A ``streaming`` call gets no default deadline (it lives as long as its caller wants;
    its messages get one each, see PredictionService.PredictStream).

    The servicer must have ``default_deadline_s`` and ``service`` (the full gRPC service
    name) attributes, and may have ``observer`` (a :class:`server.telemetry.observe.Observer`).
    """

    def wrap(func: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(func)
        async def run(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            observer: Observer = getattr(self, "observer", None) or _UNOBSERVED
            rpc = observer.rpc_method(self.service, method)
            fields: dict[str, Any] = {"method": method}
            call = begin_call(fields)
            started = time.perf_counter()
            span = (observer.start_span(rpc, context.invocation_metadata(), call)
                    if observer.tracer is not None else None)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rpc started", extra={"fields": {"method": method}})
            code = grpc.StatusCode.OK
            failed: BaseException | None = None
            recorded = False

            def record() -> None:
                nonlocal recorded
                if recorded:
                    return
                recorded = True
                elapsed = time.perf_counter() - started
                log_call(call, code, elapsed, span[1] if span is not None else None)
                observer.end_span(span, call, code.name, code.value[0], failed)
                observer.finish(rpc, call, code.name, code.value[0], elapsed)

            # A caller without a deadline gets the server's default, so nothing hangs.
            budget = (self.default_deadline_s
                      if context.time_remaining() is None and not streaming else None)
            try:
                if draining():
                    raise Unavailable("server is draining; retry on another replica")
                async with asyncio.timeout(budget):
                    return await func(self, request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the caller went away or its deadline passed
                raise
            except Exception as error:
                status = failure(error, method)
                code = status.code
                failed = error
                fields["error"] = status.message
                trailing: tuple[tuple[str, bytes], ...] = ()
                if status.details is not None:
                    trailing = (("grpc-status-details-bin", status.details.SerializeToString()),)
                # abort sends the status at once: record the call before the caller can see
                # it, so its metrics and log line are there when the caller looks.
                record()
                await context.abort(status.code, status.message, trailing_metadata=trailing)
                raise  # unreachable: abort raises
            finally:
                record()

        return run

    return wrap
