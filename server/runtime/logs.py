"""JSON-lines logging: one object per line, machine-readable first.

Call sites pass structured fields with ``log.info("event", extra={"fields": {...}})``.
A line written inside a span carries ``trace_id`` and ``span_id`` (lowercase hex, as in
W3C ``traceparent``), so it leads to its trace; the RPC access line is written inside the
call's server span.

The access line has its own writer (:mod:`server.transport.access_log`), bound here to
the same handler.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from server.transport.access_log import ACCESS, RESERVED


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _entry(ts: float, level: str, logger: str, event: str,
           span: trace.SpanContext | None, fields: Mapping[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"ts": _timestamp(ts), "level": level, "logger": logger,
                             "event": event}
    if span is not None and span.is_valid:
        entry["trace_id"] = format(span.trace_id, "032x")
        entry["span_id"] = format(span.span_id, "016x")
    if fields:
        entry.update({k: v for k, v in fields.items() if k not in RESERVED})
    return entry


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname.lower(), record.name,
                       record.getMessage(), trace.get_current_span().get_span_context(),
                       getattr(record, "fields", None))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "info", access_log: str = "all") -> None:
    # The standard library's own advice for speed: skip what the JSON lines never show.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    ACCESS.bind(handler, every_call=access_log == "all")
