"""The RPC access line: one JSON object per call, written by :mod:`server.transport.rpc`.

Through ``logging`` a line cost about 50 us in place (a LogRecord, the generic formatter
looking up the current span, the handler lock and flush), a sixth of a whole Predict. The
writer makes the same object the JSON formatter (:mod:`server.runtime.logs`) makes from
what the RPC wrapper already holds and writes it with the handler's stream and lock.

Even so, a line for every successful call costs 15-20 us in place (5-7 % of a Predict)
and, at thousands of calls a second per core, is mostly noise that the prediction log,
the metrics and the traces already hold. So by default (``access_log="sampled"``) a call
gets its line when it failed, when it was slow (``SLOW_CALL_S``), or when its trace is
recorded (so a sampled trace always has its line, and the line its trace);
``access_log="all"`` writes one for every call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

# Keys every line has; fields of the same name are dropped rather than clobber them.
RESERVED = frozenset({"ts", "level", "logger", "event", "trace_id", "span_id"})
ACCESS_LOGGER = "waybill.access"
# A call at least this long always gets its access line.
SLOW_CALL_S = 0.25
# Lines for calls whose bytes did not even decode: a flood of junk costs the log at most
# this many a second (a burst of twice that), however many arrive; the metrics count all.
JUNK_LINES_PER_S = 10.0


class AccessLog:
    """Writes the ``rpc`` line of each call: the same JSON object the formatter makes.

    Until :func:`server.runtime.logs.configure` binds it to a handler (unit tests,
    embedding), lines go through the ``waybill.access`` logger like any other.
    """

    _HEAD = '{"ts": "%s", "level": "info", "logger": "%s", "event": "rpc", '

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._handler: logging.StreamHandler[Any] | None = None
        self._every_call = True
        self._second = -1
        self._second_text = ""
        self._junk_tokens = 2 * JUNK_LINES_PER_S
        self._junk_at = time.monotonic()
        self._junk_suppressed = 0

    def bind(self, handler: logging.StreamHandler[Any] | None, every_call: bool = True) -> None:
        self._handler = handler
        self._every_call = every_call

    def _junk_admit(self) -> int | None:
        """None to leave this line out; otherwise how many were left out before it."""
        now = time.monotonic()
        self._junk_tokens = min(2 * JUNK_LINES_PER_S,
                                self._junk_tokens + (now - self._junk_at) * JUNK_LINES_PER_S)
        self._junk_at = now
        if self._junk_tokens < 1:
            self._junk_suppressed += 1
            return None
        self._junk_tokens -= 1
        suppressed, self._junk_suppressed = self._junk_suppressed, 0
        return suppressed

    def _ts(self, now: float) -> str:
        # The formatter's timestamp, with the date and time part made once a second.
        second = int(now)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{int((now - second) * 1000):03d}+00:00"

    def write(self, fields: Mapping[str, Any], span: trace.Span | None, *, ok: bool = True,
              seconds: float = 0.0, junk: bool = False) -> None:
        """The line for one call; ``ok`` and ``seconds`` decide it when not every call
        gets one. ``junk`` lines (a message that did not decode) are rate-limited: the
        next one written says how many were left out."""
        if not (self._every_call or not ok or seconds >= SLOW_CALL_S
                or (span is not None and span.is_recording())):
            return
        if junk:
            suppressed = self._junk_admit()
            if suppressed is None:
                return
            if suppressed:
                fields = {**fields, "suppressed": suppressed}
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = self._handler
        if handler is None:
            logger.info("rpc", extra={"fields": fields})
            return
        if not RESERVED.isdisjoint(fields):
            fields = {k: v for k, v in fields.items() if k not in RESERVED}
        head = self._HEAD % (self._ts(time.time()), ACCESS_LOGGER)
        context = span.get_span_context() if span is not None else None
        if context is not None and context.is_valid:
            head += f'"trace_id": "{context.trace_id:032x}", "span_id": "{context.span_id:016x}", '
        body = json.dumps(fields, default=str)
        line = head + body[1:] + "\n" if len(body) > 2 else head[:-2] + "}\n"
        handler.acquire()
        try:
            handler.stream.write(line)
        except Exception:
            handler.handleError(logging.makeLogRecord({"msg": "rpc", "name": ACCESS_LOGGER}))
        finally:
            handler.release()


ACCESS = AccessLog()
