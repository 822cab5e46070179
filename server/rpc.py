"""The shared edge of every RPC handler: error mapping and one access-log line per call."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from server.errors import to_status

log = logging.getLogger("waybill.access")
errors_log = logging.getLogger("waybill.errors")

# Fields a handler adds to its access-log line (model, version, route, rows).
_call_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "waybill_call_fields", default=None
)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def annotate(**fields: Any) -> None:
    """Attach fields to the current call's access-log line."""
    current = _call_fields.get()
    if current is not None:
        current.update(fields)


def handler(method: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Wrap a servicer method: default deadline, map any exception to its status, log once.

    The servicer must have a ``default_deadline_s`` attribute.
    """

    def wrap(func: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(func)
        async def run(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            fields: dict[str, Any] = {"method": method}
            _call_fields.set(fields)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rpc started", extra={"fields": {"method": method}})
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            # A caller without a deadline gets the server's default, so nothing hangs.
            budget = self.default_deadline_s if context.time_remaining() is None else None
            try:
                async with asyncio.timeout(budget):
                    return await func(self, request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the caller went away or its deadline passed
                raise
            except Exception as error:
                status = to_status(error)
                code = status.code
                fields["error"] = status.message
                if status.error_id is not None:
                    errors_log.error("unhandled error", exc_info=error,
                                     extra={"fields": {"error_id": status.error_id,
                                                       "method": method}})
                trailing: tuple[tuple[str, bytes], ...] = ()
                if status.details is not None:
                    trailing = (("grpc-status-details-bin", status.details.SerializeToString()),)
                await context.abort(status.code, status.message, trailing_metadata=trailing)
                raise  # unreachable: abort raises
            finally:
                fields["code"] = code.name
                fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
                log.info("rpc", extra={"fields": fields})

        return run

    return wrap
