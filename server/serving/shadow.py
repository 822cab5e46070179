"""Shadow scoring: a sampled share of requests is also scored by a shadow version,
off the response path, and compared with what was served.

The request path only offers work to a bounded queue (``put_nowait``); when the
queue is full the work is dropped and counted, so the shadow can never slow a
caller. One worker task drains the queue every ``GATHER_S`` and scores what it holds
with one call per shadow version on the predict executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from models.kinds import Scored
from models.loaded import LoadedVersion
from models.validation import Columns, ValidationFailed
from server.monitoring.shadow_stats import ShadowStats

log = logging.getLogger("waybill.shadow")

# How long the worker gathers sampled requests before scoring them together.
GATHER_S = 0.05


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
                 stats: ShadowStats, tracer: trace.Tracer | None = None) -> None:
        self._executor = executor
        self._tracer = tracer
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self.stats = stats
        self._task: asyncio.Task[None] | None = None

    def offer(self, model: str, shadow: LoadedVersion, rows: Columns,
              also_known: frozenset[str], served: Scored,
              parent: trace.Span | None = None) -> bool:
        """Queue shadow work without waiting; False (and counted) when the queue is full.

        ``parent`` (the request's span, when it records) becomes the parent of a
        ``waybill.shadow`` span, which ends after the request's answer has gone.
        """
        try:
            self._queue.put_nowait(_Job(model, shadow, rows, also_known, served,
                                        parent if self._tracer is not None else None))
        except asyncio.QueueFull:
            self.stats.sampled(model, shadow.version, dropped=True)
            return False
        self.stats.sampled(model, shadow.version)
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
            if not _comparable(shadow, job.served):
                self._count_failure(job)  # a shadow of another kind answers something else
                _end(span, "refused")
                continue
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
        for job, _, matrix in valid:
            end = start + len(matrix)
            self.stats.compared(job.model, shadow.version, job.served, scored.part(start, end))
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
        self.stats.failed(job.model, job.shadow.version)

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


def _comparable(shadow: LoadedVersion, served: Scored) -> bool:
    """Whether the shadow answers what the served version did: both regression kinds,
    or both classifiers over as many classes."""
    classes = len(shadow.output.classes)
    if served.probabilities is None:
        return classes == 0
    return classes == int(served.probabilities.shape[1])
