"""Micro-batching: callers share one scoring call, get their own rows back, errors and
deadlines stay with the right callers, a stream waits the window while a lone caller
stops paying for it. The scoring function is a deterministic stand-in for CatBoost so
each call and its rows can be observed; a gate holds the first call on the executor so
the others arrive while a batch is running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.kinds import Scored
from server.serving.batcher import MicroBatcher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.gate = threading.Event()  # the first call waits for it
        self.started = threading.Event()

    def __call__(self, matrix: np.ndarray) -> Scored:
        if not self.calls:
            self.started.set()
            self.gate.wait(5)
        self.calls.append(len(matrix))
        if self.fail:
            raise RuntimeError("model exploded")
        values = matrix[:, 0].astype(float)
        return Scored(values, values - 1, values + 1)


def rows(*values: float) -> np.ndarray:
    return np.array([[v, "x"] for v in values], dtype=object)


async def while_busy(batcher: MicroBatcher, score: Recorder,
                     *requests: np.ndarray) -> list[object]:
    """One request occupies the executor; the others arrive meanwhile; then it returns."""
    first = asyncio.create_task(batcher.score(rows(0)))
    await asyncio.to_thread(score.started.wait, 5)
    rest = [asyncio.create_task(batcher.score(r)) for r in requests]
    await asyncio.sleep(0)  # let them join the open batch
    score.gate.set()
    done = await asyncio.gather(first, *rest, return_exceptions=True)
    return [list(d.value) if isinstance(d, Scored) else d for d in done]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def test_an_idle_batcher_scores_at_once(executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    score.gate.set()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=10.0)
    result = asyncio.run(batcher.score(rows(7)))  # a 10 s window is never waited for
    assert list(result.value) == [7.0]


def test_callers_arriving_during_a_batch_share_the_next_call(
        executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.05)
    results = asyncio.run(while_busy(batcher, score, rows(1), rows(2, 3), rows(4)))
    assert results == [[0.0], [1.0], [2.0, 3.0], [4.0]]
    assert score.calls == [1, 4]
    assert (batcher.stats().batches, batcher.stats().requests) == (2, 4)


def test_a_full_batch_goes_at_once_and_the_rest_waits(executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=3, max_delay=0.05)
    results = asyncio.run(while_busy(batcher, score, rows(1, 2), rows(3), rows(4)))
    assert results == [[0.0], [1.0, 2.0], [3.0], [4.0]]
    assert sorted(score.calls) == [1, 1, 3]


def test_a_stream_of_callers_waits_the_window_and_shares_one_call(
        executor: ThreadPoolExecutor) -> None:
    """A free executor does not end the window: callers one event-loop turn apart (as
    grpc.aio hands them over under load) meet in one call."""
    score = Recorder()
    score.gate.set()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.2)

    async def go() -> list[list[float]]:
        tasks = []
        for value in range(6):
            tasks.append(asyncio.create_task(batcher.score(rows(value))))
            await asyncio.sleep(0.001)  # another request, a little later
        return [list(r.value) for r in await asyncio.gather(*tasks)]

    assert asyncio.run(go()) == [[float(v)] for v in range(6)]
    assert score.calls == [1, 5]  # the first went at once (idle), the stream waited


def test_a_lone_sequential_caller_stops_paying_for_the_window(
        executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    score.gate.set()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.2)

    async def go() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for value in range(12):  # each waits for its answer before sending the next
            await batcher.score(rows(value))
        return loop.time() - start

    elapsed = asyncio.run(go())
    assert score.calls == [1] * 12
    # One window was tried and bought nothing; the next ones went at once.
    assert 0.2 <= elapsed < 0.2 * 2


def test_the_window_bounds_the_wait_for_a_busy_executor(executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.01)

    async def go() -> list[float]:
        first = asyncio.create_task(batcher.score(rows(0)))
        await asyncio.to_thread(score.started.wait, 5)
        second = await batcher.score(rows(5))  # goes after 10 ms, the first still blocked
        score.gate.set()
        await first
        return list(second.value)

    assert asyncio.run(go()) == [5.0]


def test_no_window_means_no_batching(executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    score.gate.set()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0)

    async def go() -> None:
        await asyncio.gather(batcher.score(rows(1)), batcher.score(rows(2)))

    asyncio.run(go())
    assert score.calls == [1, 1]


def test_an_error_reaches_every_caller_of_the_batch(executor: ThreadPoolExecutor) -> None:
    score = Recorder(fail=True)
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.05)
    outcomes = asyncio.run(while_busy(batcher, score, rows(1), rows(2)))
    assert [str(o) for o in outcomes] == ["model exploded"] * 3
    assert score.calls == [1, 2]


def test_a_caller_whose_deadline_passes_is_dropped_before_scoring(
        executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.05)

    async def go() -> tuple[bool, list[float]]:
        first = asyncio.create_task(batcher.score(rows(0)))
        await asyncio.to_thread(score.started.wait, 5)
        hurried = asyncio.create_task(asyncio.wait_for(batcher.score(rows(9, 9)), 0.01))
        patient = asyncio.create_task(batcher.score(rows(5)))
        timed_out = False
        try:
            await hurried
        except TimeoutError:
            timed_out = True
        score.gate.set()
        await first
        return timed_out, list((await patient).value)

    timed_out, patient = asyncio.run(go())
    assert timed_out
    assert patient == [5.0]
    assert score.calls == [1, 1]  # the two hurried rows never reached the model
