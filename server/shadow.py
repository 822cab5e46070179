"""Shadow scoring: a sampled share of requests is also scored by a shadow version,
off the response path, and compared with what was served.

The request path only offers work to a bounded queue (``put_nowait``); when the
queue is full the work is dropped and counted, so the shadow can never slow a
caller. One worker task drains the queue and scores on the predict executor.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.loaded import LoadedVersion, Scored
from models.validation import ValidationFailed

log = logging.getLogger("waybill.shadow")

# Upper bounds (days) of the |shadow - served| histogram; the last bucket is open.
DIFF_BOUNDS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


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

    def add(self, served: Scored, shadow: Scored) -> None:
        diff = shadow.median - served.median
        self.compared_rows += len(diff)
        self.sum_diff += float(diff.sum())
        self.sum_abs_diff += float(np.abs(diff).sum())
        outside = (shadow.median < served.lower) | (shadow.median > served.upper)
        self.outside += int(outside.sum())
        for value in np.abs(diff):
            self.counts[bisect.bisect_right(DIFF_BOUNDS, float(value))] += 1


@dataclass(frozen=True, slots=True)
class _Job:
    model: str
    shadow: LoadedVersion
    rows: Sequence[Mapping[str, Any]]
    also_known: frozenset[str]
    served: Scored


class ShadowScorer:
    def __init__(self, executor: Executor, queue_size: int) -> None:
        self._executor = executor
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], ShadowTally] = {}
        self._task: asyncio.Task[None] | None = None

    def _tally(self, model: str, version: str) -> ShadowTally:
        key = (model, version)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies.setdefault(key, ShadowTally())
        return tally

    def offer(self, model: str, shadow: LoadedVersion, rows: Sequence[Mapping[str, Any]],
              also_known: frozenset[str], served: Scored) -> bool:
        """Queue shadow work without waiting; False (and counted) when the queue is full."""
        with self._lock:
            tally = self._tally(model, shadow.version)
            tally.sampled += 1
            try:
                self._queue.put_nowait(_Job(model, shadow, rows, also_known, served))
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
            job = await self._queue.get()
            try:
                await self._score(loop, job)
            finally:
                self._queue.task_done()

    async def _score(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        try:
            validated = job.shadow.validate(job.rows, job.also_known)
            scored = await loop.run_in_executor(self._executor, job.shadow.score,
                                                validated.matrix)
        except ValidationFailed:
            self._count_failure(job)  # the shadow's schema refuses what the served one took
            return
        except Exception:
            log.exception("shadow scoring failed", extra={"fields": {
                "model": job.model, "version": job.shadow.version}})
            self._count_failure(job)
            return
        with self._lock:
            self._tally(job.model, job.shadow.version).add(job.served, scored)

    def _count_failure(self, job: _Job) -> None:
        with self._lock:
            self._tally(job.model, job.shadow.version).failed += 1

    def stats(self) -> dict[tuple[str, str], ShadowTally]:
        with self._lock:
            return {
                key: ShadowTally(t.sampled, t.compared_rows, t.dropped, t.failed, t.sum_diff,
                                 t.sum_abs_diff, t.outside, list(t.counts))
                for key, t in self._tallies.items()
            }

    async def drain(self) -> None:
        """Wait until every queued job is scored."""
        await self._queue.join()
