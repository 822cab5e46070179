"""The shared edge of every RPC: error mapping, one access-log line, the server span and
the RPC metrics of each call.

A servicer declares what its calls need as one :class:`Edge` (its gRPC service name, the
observer, the default deadline), and :func:`handler` wraps its methods. The bookkeeping of
one call (:class:`CallRecord`) is the same for a unary call and for each request of a
PredictStream: begin, map a failure to its status, and close once with the log line, the
span and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from server.serving.errors import MalformedMessage, Unavailable
from server.telemetry.observe import (
    UNKNOWN,
    Call,
    Observer,
    RpcMethod,
    Started,
    begin_call,
    current_call,
)
from server.transport.access_log import ACCESS, ACCESS_LOGGER
from server.transport.status import WireStatus, to_status

log = logging.getLogger(ACCESS_LOGGER)
errors_log = logging.getLogger("waybill.errors")


class Edge:
    """What every call of one gRPC service needs from the process: the service (its name
    and how to decode each method's requests), the default deadline, the observer."""

    __slots__ = ("_decoders", "default_deadline_s", "descriptor", "observer", "service")

    def __init__(self, service: ServiceDescriptor, default_deadline_s: float,
                 observer: Observer | None = None) -> None:
        self.descriptor = service
        self.service = service.full_name  # e.g. waybill.v1.PredictionService
        self.default_deadline_s = default_deadline_s  # for callers that send none
        self.observer = observer or Observer()
        self._decoders: dict[str, Callable[[bytes], Any]] = {
            m.name: message_factory.GetMessageClass(m.input_type).FromString
            for m in service.methods}

    def decode(self, method: str, raw: bytes) -> Any:
        """A request as its method reads it; DecodeError (INVALID_ARGUMENT) when it is not."""
        try:
            return self._decoders[method](raw)
        except DecodeError:
            raise MalformedMessage(self.descriptor.methods_by_name[method].input_type
                                   .full_name) from None

    async def decode_stream(self, method: str, raw: AsyncIterator[bytes],
                            ) -> AsyncIterator[Any]:
        async for message in raw:
            yield self.decode(method, message)


def add_service(server: grpc.aio.Server, servicer: Servicer) -> None:
    """Register every method of the servicer's service with its requests handed over as
    bytes: the edge decodes them (:meth:`Edge.decode`), so a message that does not decode
    is the caller's INVALID_ARGUMENT, counted under its method, not gRPC's UNKNOWN with a
    traceback in the log."""
    service = servicer.edge.descriptor
    handlers = {}
    for method in service.methods:
        answer = message_factory.GetMessageClass(method.output_type).SerializeToString
        make = _HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=None, response_serializer=answer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    # Registered too, as generated code does: gRPC then matches these methods' calls
    # itself, each method with calls waiting for it, instead of one queue for everything.
    server.add_registered_method_handlers(service.full_name, handlers)


_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class Servicer(Protocol):
    """A servicer whose methods :func:`handler` wraps."""

    @property
    def edge(self) -> Edge: ...


S = TypeVar("S", bound=Servicer)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]
# What gRPC calls: the request still as bytes (or a stream of bytes).
Raw = Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[Resp]]


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


# A drain must not stop the server while gRPC holds calls it accepted and the application
# has not yet asked for: stopping cancels those (CANCELLED, which callers do not retry).
# So a call that arrives while draining is held in its handler until the server has
# stopped accepting (GOAWAY sent), then answered UNAVAILABLE: held callers send nothing
# new, gRPC's queue empties, and the server stops when calls have stopped arriving.
_last_start = [0.0]
_stopped_accepting = asyncio.Event()


async def quiet(for_s: float, at_most_s: float) -> None:
    """Return once no call has reached a handler for ``for_s`` (so none waits in gRPC),
    or after ``at_most_s``."""
    give_up = time.monotonic() + at_most_s
    while (now := time.monotonic()) < give_up and now - _last_start[0] < for_s:
        await asyncio.sleep(for_s / 2)


def stopped_accepting() -> None:
    """The server sends no more calls to handlers: answer the held ones UNAVAILABLE."""
    _stopped_accepting.set()


class CallRecord:
    """One call's bookkeeping: a unary call (``rpc`` given: its RPC metrics too) or one
    request of a stream (only the request's).

    ``span`` is what :meth:`Observer.start_span` started, or a child span with no context
    token; :meth:`close` ends it once, whatever path the call took.
    """

    __slots__ = ("_closed", "_started", "call", "code", "error", "observer", "rpc", "span")

    def __init__(self, observer: Observer, method: str, rpc: RpcMethod | None = None) -> None:
        self.observer = observer
        self.rpc = rpc
        self.call: Call = begin_call({"method": method})
        self.span: Started | None = None
        self.code = grpc.StatusCode.OK
        self.error: BaseException | None = None
        self._started = time.perf_counter()
        self._closed = False

    def fail(self, error: Exception) -> WireStatus:
        """The status ``error`` maps to, noted for the log line, span and metrics; an
        unexpected error is logged with its error id."""
        status = to_status(error)
        if status.error_id is not None:
            errors_log.error("unhandled error", exc_info=error, extra={"fields": {
                "error_id": status.error_id, "method": self.call.fields["method"]}})
        self.code, self.error = status.code, error
        self.call.fields["error"] = status.message
        return status

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        elapsed = time.perf_counter() - self._started
        call, code = self.call, self.code
        fields = call.fields
        if call.model is not None and call.version != UNKNOWN and "version" not in fields:
            fields["version"], fields["route"] = call.version, call.route  # failed late
        fields["code"] = code.name
        fields["duration_ms"] = round(elapsed * 1000, 3)
        span = self.span[1] if self.span is not None else None
        ACCESS.write(fields, span, ok=code is grpc.StatusCode.OK, seconds=elapsed,
                     junk=isinstance(self.error, MalformedMessage))
        observer = self.observer
        observer.end_span(self.span, call, code.name, code.value[0], self.error)
        if self.rpc is not None:
            observer.finish(self.rpc, call, code.name, code.value[0], elapsed)
        else:
            observer.request_done(call, code.name, elapsed)


def _gone(context: grpc.aio.ServicerContext) -> bool:
    """The caller left, or its own deadline passed (a server default is ours to report)."""
    if context.cancelled():
        return True
    left = context.time_remaining()
    return left is not None and left <= 0


def trailing_details(status: WireStatus) -> tuple[tuple[str, bytes], ...]:
    if status.details is None:
        return ()
    return (("grpc-status-details-bin", status.details.SerializeToString()),)


def annotate(**fields: Any) -> None:
    """Attach fields to the current call's access-log line."""
    call = current_call()
    if call is not None:
        call.fields.update(fields)


def handler(method: str, *, streaming: bool = False,
            ) -> Callable[[Handler[S, Req, Resp]], Raw[S, Resp]]:
    """Wrap a servicer method: default deadline, server span, map any exception to its
    status, log once, record the call's duration and outcome.

    A ``streaming`` call gets no default deadline (it lives as long as its caller wants;
    its messages get one each, see PredictionService.PredictStream).
    """

    def wrap(func: Handler[S, Req, Resp]) -> Raw[S, Resp]:
        @functools.wraps(func)
        async def run(self: S, raw: Any, context: grpc.aio.ServicerContext) -> Resp:
            _last_start[0] = time.monotonic()
            edge = self.edge
            observer = edge.observer
            rpc = observer.rpc_method(edge.service, method)
            record = CallRecord(observer, method, rpc)
            if observer.tracer is not None:
                record.span = observer.start_span(rpc, context.invocation_metadata(),
                                                  record.call)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rpc started", extra={"fields": {"method": method}})
            # The caller's deadline is the server's too: work past it is cancelled and its
            # rows dropped unscored. gRPC itself cancels the handler at the caller's
            # deadline, so only a caller without one gets a timer here (the server's
            # default, so nothing hangs): an asyncio.timeout on every call cost 6 % of
            # 1-row throughput (bench/ab.py). A stream lives as long as its caller wants.
            budget = None if streaming else context.time_remaining()
            caller_deadline = budget is not None
            if budget is None and not streaming:
                budget = edge.default_deadline_s
            if budget is not None:
                record.call.deadline = asyncio.get_running_loop().time() + budget
            try:
                if budget is not None and budget <= 0:
                    raise TimeoutError("the deadline passed before the call started")
                if draining():
                    # Held (see _stopped_accepting), but never past half the caller's
                    # time: it must still get UNAVAILABLE, which it retries, in time.
                    left = context.time_remaining() or budget
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(None if left is None else left / 2):
                            await _stopped_accepting.wait()
                    raise Unavailable("server is draining; retry on another replica")
                request: Any = (edge.decode_stream(method, raw) if streaming
                                else edge.decode(method, raw))
                if caller_deadline:
                    return await func(self, request, context)
                async with asyncio.timeout(budget):
                    return await func(self, request, context)
            except asyncio.CancelledError:
                # The caller left, or gRPC ended the call at the caller's deadline.
                left = context.time_remaining()
                record.code = (grpc.StatusCode.DEADLINE_EXCEEDED
                               if left is not None and left <= 0 else grpc.StatusCode.CANCELLED)
                raise
            except Exception as error:
                if _gone(context):
                    # Whatever broke, the caller has left or its deadline has passed: that
                    # is the call's outcome, not a server error, and nobody can be told.
                    record.code = (grpc.StatusCode.CANCELLED if context.cancelled()
                                   else grpc.StatusCode.DEADLINE_EXCEEDED)
                    raise asyncio.CancelledError from None
                status = record.fail(error)
                # abort sends the status at once: record the call before the caller can see
                # it, so its metrics and log line are there when the caller looks.
                record.close()
                await context.abort(status.code, status.message,
                                    trailing_metadata=trailing_details(status))
                raise  # unreachable: abort raises
            finally:
                record.close()

        return run

    return wrap
