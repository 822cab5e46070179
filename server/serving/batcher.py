"""Dynamic micro-batching: concurrent requests for one version share a CatBoost call.

CatBoost costs about the same for 1 row as for 8, so scoring requests one by one
wastes most of a core. A request that finds the version idle (no batch running,
none in the last ``max_delay`` seconds) is scored at once: light load adds no
wait. Otherwise it opens (or joins) a batch that goes ``max_delay`` seconds after
it opened or when it holds ``max_rows`` rows, whichever is first: one call on the
predict executor. Results go back to each caller in order; an error goes to every
caller of that batch.

The window is what makes batches form: grpc.aio hands new requests to the
application one per turn of a busy event loop, so taking what is queued when a
running batch returns gives batches of about one request (measured: 1.03 requests
per batch at 32 concurrent callers). A caller whose deadline passes while it
waits is cancelled by its own timeout; its rows are dropped before scoring if the
batch has not started yet.

When the request's span records, a batch gets a ``waybill.batch`` span: the child of the
first traced request in it, linked to the others, from flush to delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace

from models.kinds import Scored

ScoreFn = Callable[[np.ndarray], Scored]
# Called once per CatBoost call with (requests, rows).
OnBatch = Callable[[int, int], None]
_Part = tuple[np.ndarray, "asyncio.Future[Scored]", "trace.Span | None"]
PROBE_EVERY = 16


@dataclass(slots=True)
class _Batch:
    parts: list[_Part] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class BatchStats:
    batches: int
    rows: int
    requests: int


class MicroBatcher:
    """Batches for one loaded version. Use from the event loop thread only."""

    def __init__(self, score: ScoreFn, executor: Executor, max_rows: int,
                 max_delay: float, *, tracer: trace.Tracer | None = None,
                 on_batch: OnBatch | None = None) -> None:
        self._score = score
        self._executor = executor
        self._max_rows = max_rows
        self._max_delay = max_delay
        self._tracer = tracer
        self._on_batch = on_batch
        self._open: _Batch | None = None
        self._running = 0  # batches on the executor now
        self._last_arrival = float("-inf")
        # Windows that gathered nobody but their opener (a lone sequential caller): after
        # one, requests go at once, and only every PROBE_EVERY-th tries a window again.
        self._lonely = 0
        self.batches = 0
        self.rows = 0
        self.requests = 0

    async def score(self, matrix: np.ndarray, parent: trace.Span | None = None) -> Scored:
        """Score ``matrix`` in the next batch; ``parent`` is the caller's recording span."""
        loop = asyncio.get_running_loop()
        if self._max_delay <= 0 or len(matrix) >= self._max_rows:
            # Nothing to wait for: a big request is a batch of its own.
            self._count(1, len(matrix))
            span = self._batch_span([parent], 1, len(matrix))
            failure: BaseException | None = None
            try:
                return await loop.run_in_executor(self._executor, self._score, matrix)
            except BaseException as error:
                failure = error
                raise
            finally:
                _end(span, failure)
        now = loop.time()
        # A stream: the previous request came less than a window ago, so others are
        # coming too. Waiting the window is what lets them meet: grpc.aio hands the
        # application one request per turn of a busy loop, so "whatever is queued now"
        # is about one request.
        stream = now - self._last_arrival < self._max_delay
        self._last_arrival = now
        if stream and self._lonely:
            self._lonely = (self._lonely + 1) % PROBE_EVERY
            stream = self._lonely == 0
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            if stream or self._running:
                batch.timer = loop.call_later(self._max_delay, self._flush, batch)
        future: asyncio.Future[Scored] = loop.create_future()
        batch.parts.append((matrix, future, parent))
        batch.rows += len(matrix)
        # Idle: nobody to wait for, so go now (no added latency under light load).
        # Otherwise gather until the window ends or the batch is full.
        if batch.timer is None or batch.rows >= self._max_rows:
            self._flush(batch)
        return await future

    def _count(self, requests: int, rows: int) -> None:
        self.batches += 1
        self.requests += requests
        self.rows += rows
        if self._on_batch is not None:
            self._on_batch(requests, rows)

    def _batch_span(self, parents: list[trace.Span | None], requests: int,
                    rows: int) -> trace.Span | None:
        traced = [p for p in parents if p is not None]
        if self._tracer is None or not traced:
            return None
        links = [trace.Link(p.get_span_context()) for p in traced[1:]]
        return self._tracer.start_span(
            "waybill.batch", context=trace.set_span_in_context(traced[0]), links=links,
            attributes={"waybill.batch.requests": requests, "waybill.batch.rows": rows})

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
            if len(batch.parts) == 1 and batch.rows < self._max_rows:
                self._lonely = 1  # the window bought nothing: stop waiting for a while
        live = [p for p in batch.parts if not p[1].done()]  # drop cancelled callers
        if not live:
            return
        matrix = live[0][0] if len(live) == 1 else np.concatenate([p[0] for p in live])
        self._count(len(live), len(matrix))
        span = self._batch_span([p[2] for p in live], len(live), len(matrix))
        task = asyncio.get_running_loop().run_in_executor(self._executor, self._score, matrix)
        self._running += 1
        task.add_done_callback(lambda done: self._done(done, live, span))

    def _done(self, done: asyncio.Future[Scored], live: list[_Part],
              span: trace.Span | None) -> None:
        self._running -= 1
        _deliver(done, live, span)

    def stats(self) -> BatchStats:
        return BatchStats(self.batches, self.rows, self.requests)


def _end(span: trace.Span | None, error: BaseException | None) -> None:
    if span is None:
        return
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(trace.StatusCode.ERROR, type(error).__name__)
    span.end()


def _deliver(done: asyncio.Future[Scored], parts: list[_Part],
             span: trace.Span | None) -> None:
    if done.cancelled():  # the executor shut down under us
        _end(span, asyncio.CancelledError())
        for _, future, _ in parts:
            future.cancel()
        return
    error = done.exception()
    _end(span, error)
    if error is not None:
        for _, future, _ in parts:
            if not future.done():
                future.set_exception(error)
        return
    scored = done.result()
    start = 0
    for matrix, future, _ in parts:
        end = start + len(matrix)
        if not future.done():
            future.set_result(scored.part(start, end))
        start = end
