"""Shadow scoring: a sampled share of requests is also scored by a shadow version,
off the response path, and compared with what was served.

The request path only offers work to a bounded queue (``put_nowait``); when the
queue is full the work is dropped and counted, so the shadow can never slow a
caller. One worker task drains the queue every ``GATHER_S`` and scores what it holds
with one call per shadow version on the predict executor.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace

from models.loaded import LoadedVersion, Scored
from models.validation import Columns, ValidationFailed
from server.monitoring.observe import HistogramPoint

log = logging.getLogger("waybill.shadow")

# Upper bounds (days) of the |shadow - served| histogram; the last bucket is open.
DIFF_BOUNDS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# How long the worker gathers sampled requests before scoring them together.
GATHER_S = 0.05


@dataclass
class ShadowTally:
    sampled: int = 0
    compared_rows: int = 0
    dropped: int = 0
    failed: int = 0
    sum_diff: float = 0.0
    sum_abs_diff: float = 0.0
    outside: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(DIFF_BOUNDS) + 1))
    min_abs_diff: float = float("inf")
    max_abs_diff: float = 0.0

    def add(self, served: Scored, shadow: Scored) -> None:
        diff = shadow.median - served.median
        if not len(diff):
            return
        absolute = np.abs(diff)
        self.compared_rows += len(diff)
        self.sum_diff += float(diff.sum())
        self.sum_abs_diff += float(absolute.sum())
        self.min_abs_diff = min(self.min_abs_diff, float(absolute.min()))
        self.max_abs_diff = max(self.max_abs_diff, float(absolute.max()))
        outside = (shadow.median < served.lower) | (shadow.median > served.upper)
        self.outside += int(outside.sum())
        for value in absolute:
            self.counts[bisect.bisect_right(DIFF_BOUNDS, float(value))] += 1


@dataclass(frozen=True, slots=True)
class _Job:
    model: str
    shadow: LoadedVersion
    rows: Columns
    also_known: frozenset[str]
    served: Scored
    parent: trace.Span | None  # the request's recording server span, if any


class ShadowScorer:
    def __init__(self, executor: Executor, queue_size: int,
                 tracer: trace.Tracer | None = None) -> None:
        self._executor = executor
        self._tracer = tracer
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], ShadowTally] = {}
        self._task: asyncio.Task[None] | None = None
        self._started_ns = time.time_ns()

    def _tally(self, model: str, version: str) -> ShadowTally:
        key = (model, version)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies.setdefault(key, ShadowTally())
        return tally

    def offer(self, model: str, shadow: LoadedVersion, rows: Columns,
              also_known: frozenset[str], served: Scored,
              parent: trace.Span | None = None) -> bool:
        """Queue shadow work without waiting; False (and counted) when the queue is full.

        ``parent`` (the request's span, when it records) becomes the parent of a
        ``waybill.shadow`` span, which ends after the request's answer has gone.
        """
        with self._lock:
            tally = self._tally(model, shadow.version)
            tally.sampled += 1
            try:
                self._queue.put_nowait(_Job(model, shadow, rows, also_known, served,
                                            parent if self._tracer is not None else None))
            except asyncio.QueueFull:
                tally.dropped += 1
                return False
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="shadow")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            # Nobody waits for a shadow answer: gather a while, then one CatBoost call per
            # shadow version instead of one per sampled request (each call costs about as
            # much for 1 row as for 8, and every executor hop competes with serving).
            await asyncio.sleep(GATHER_S)
            while not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            try:
                by_version: dict[int, list[_Job]] = {}
                for job in jobs:
                    by_version.setdefault(id(job.shadow), []).append(job)
                for group in by_version.values():
                    await self._score(loop, group)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _score(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        """Validate each job, score the valid ones in one call, compare each with its own."""
        shadow = jobs[0].shadow
        spans = [self._span(job) for job in jobs]
        valid: list[tuple[_Job, trace.Span | None, np.ndarray]] = []
        for job, span in zip(jobs, spans, strict=True):
            try:
                valid.append((job, span, shadow.validate(job.rows, job.also_known).matrix))
            except ValidationFailed:
                self._count_failure(job)  # the shadow's schema refuses what the served one took
                _end(span, "refused")
            except Exception:
                self._failed(job, span)
        if not valid:
            return
        matrices = [matrix for _, _, matrix in valid]
        try:
            scored = await loop.run_in_executor(
                self._executor, shadow.score,
                matrices[0] if len(matrices) == 1 else np.concatenate(matrices))
        except Exception:
            for job, span, _ in valid:
                self._failed(job, span)
            return
        start = 0
        with self._lock:
            for job, _, matrix in valid:
                end = start + len(matrix)
                self._tally(job.model, shadow.version).add(job.served, scored.part(start, end))
                start = end
        for _, span, _ in valid:
            _end(span, "compared")

    def _span(self, job: _Job) -> trace.Span | None:
        if self._tracer is None or job.parent is None:
            return None
        return self._tracer.start_span(
            "waybill.shadow", context=trace.set_span_in_context(job.parent),
            attributes={"waybill.model": job.model, "waybill.version": job.shadow.version,
                        "waybill.rows": job.rows.n_rows})

    def _failed(self, job: _Job, span: trace.Span | None) -> None:
        log.exception("shadow scoring failed", extra={"fields": {
            "model": job.model, "version": job.shadow.version}})
        self._count_failure(job)
        _end(span, "failed")

    def _count_failure(self, job: _Job) -> None:
        with self._lock:
            self._tally(job.model, job.shadow.version).failed += 1

    def stats(self) -> dict[tuple[str, str], ShadowTally]:
        with self._lock:
            return {
                key: ShadowTally(t.sampled, t.compared_rows, t.dropped, t.failed, t.sum_diff,
                                 t.sum_abs_diff, t.outside, list(t.counts), t.min_abs_diff,
                                 t.max_abs_diff)
                for key, t in self._tallies.items()
            }

    def divergence(self) -> list[HistogramPoint]:
        """|shadow - served| per compared row as cumulative histogram points."""
        return [
            HistogramPoint({"model": model, "version": version}, tuple(t.counts),
                           t.sum_abs_diff, t.min_abs_diff, t.max_abs_diff, self._started_ns)
            for (model, version), t in self.stats().items() if t.compared_rows
        ]

    async def drain(self) -> None:
        """Wait until every queued job is scored."""
        await self._queue.join()


def _end(span: trace.Span | None, outcome: str) -> None:
    if span is None:
        return
    span.set_attribute("waybill.shadow.outcome", outcome)
    if outcome == "failed":
        span.set_status(trace.StatusCode.ERROR, "shadow scoring failed")
    span.end()
