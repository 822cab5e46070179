"""Dynamic micro-batching: concurrent requests for one version share a CatBoost call.

CatBoost costs about the same for 1 row as for 8, so scoring requests one by one
wastes most of a core. A request's rows join the open batch of its version; the
batch is scored when it holds ``max_rows`` rows or ``max_delay`` seconds after it
opened, whichever comes first, as one call on the predict executor. Results go
back to each caller in order; an error goes to every caller of that batch.

The window matters: grpc.aio only hands new requests to the application while
the event loop is free, so "whatever is queued now" yields batches of about one
(measured, see docs). A caller whose deadline passes while it waits is cancelled
by its own timeout; its rows are dropped before scoring if the batch has not
started yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from models.loaded import Scored

ScoreFn = Callable[[np.ndarray], Scored]


@dataclass(slots=True)
class _Batch:
    parts: list[tuple[np.ndarray, asyncio.Future[Scored]]] = field(default_factory=list)
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
                 max_delay: float) -> None:
        self._score = score
        self._executor = executor
        self._max_rows = max_rows
        self._max_delay = max_delay
        self._open: _Batch | None = None
        self.batches = 0
        self.rows = 0
        self.requests = 0

    async def score(self, matrix: np.ndarray) -> Scored:
        loop = asyncio.get_running_loop()
        if self._max_delay <= 0 or len(matrix) >= self._max_rows:
            # Nothing to wait for: a big request is a batch of its own.
            self._count(1, len(matrix))
            return await loop.run_in_executor(self._executor, self._score, matrix)
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            batch.timer = loop.call_later(self._max_delay, self._flush, batch)
        future: asyncio.Future[Scored] = loop.create_future()
        batch.parts.append((matrix, future))
        batch.rows += len(matrix)
        if batch.rows >= self._max_rows:
            self._flush(batch)
        return await future

    def _count(self, requests: int, rows: int) -> None:
        self.batches += 1
        self.requests += requests
        self.rows += rows

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
        live = [(m, f) for m, f in batch.parts if not f.done()]  # drop cancelled callers
        if not live:
            return
        matrix = live[0][0] if len(live) == 1 else np.concatenate([m for m, _ in live])
        self._count(len(live), len(matrix))
        task = asyncio.get_running_loop().run_in_executor(self._executor, self._score, matrix)
        task.add_done_callback(lambda done: _deliver(done, live))

    def stats(self) -> BatchStats:
        return BatchStats(self.batches, self.rows, self.requests)


def _deliver(done: asyncio.Future[Scored],
             parts: list[tuple[np.ndarray, asyncio.Future[Scored]]]) -> None:
    if done.cancelled():  # the executor shut down under us
        for _, future in parts:
            future.cancel()
        return
    error = done.exception()
    if error is not None:
        for _, future in parts:
            if not future.done():
                future.set_exception(error)
        return
    scored = done.result()
    start = 0
    for matrix, future in parts:
        end = start + len(matrix)
        if not future.done():
            future.set_result(Scored(scored.median[start:end], scored.lower[start:end],
                                     scored.upper[start:end]))
        start = end
