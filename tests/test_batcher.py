"""Micro-batching: callers share one scoring call, get their own rows back, errors and
deadlines stay with the right callers. The scoring function is a deterministic stand-in
for CatBoost so each call and its rows can be observed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.loaded import Scored
from server.batcher import MicroBatcher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def __call__(self, matrix: np.ndarray) -> Scored:
        self.calls.append(len(matrix))
        if self.fail:
            raise RuntimeError("model exploded")
        values = matrix[:, 0].astype(float)
        return Scored(values, values - 1, values + 1)


def rows(*values: float) -> np.ndarray:
    return np.array([[v, "x"] for v in values], dtype=object)


async def gather_scores(batcher: MicroBatcher, *requests: np.ndarray) -> list[list[float]]:
    results = await asyncio.gather(*(batcher.score(r) for r in requests))
    return [list(r.median) for r in results]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def test_concurrent_callers_share_one_call_and_get_their_own_rows(
        executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.05)
    results = asyncio.run(gather_scores(batcher, rows(1), rows(2, 3), rows(4)))
    assert results == [[1.0], [2.0, 3.0], [4.0]]
    assert score.calls == [4]
    assert (batcher.stats().batches, batcher.stats().requests) == (1, 3)


def test_a_full_batch_goes_at_once_and_the_rest_waits_for_the_next(
        executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=3, max_delay=0.05)
    results = asyncio.run(gather_scores(batcher, rows(1, 2), rows(3), rows(4)))
    assert results == [[1.0, 2.0], [3.0], [4.0]]
    assert score.calls == [3, 1]


def test_no_window_means_no_batching(executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0)
    asyncio.run(gather_scores(batcher, rows(1), rows(2)))
    assert score.calls == [1, 1]


def test_an_error_reaches_every_caller_of_the_batch(executor: ThreadPoolExecutor) -> None:
    batcher = MicroBatcher(Recorder(fail=True), executor, max_rows=100, max_delay=0.01)

    async def go() -> list[BaseException | Scored]:
        return await asyncio.gather(batcher.score(rows(1)), batcher.score(rows(2)),
                                    return_exceptions=True)

    outcomes = asyncio.run(go())
    assert [str(o) for o in outcomes] == ["model exploded", "model exploded"]


def test_a_caller_whose_deadline_passes_is_dropped_before_scoring(
        executor: ThreadPoolExecutor) -> None:
    score = Recorder()
    batcher = MicroBatcher(score, executor, max_rows=100, max_delay=0.2)

    async def go() -> tuple[bool, list[float]]:
        hurried = asyncio.create_task(asyncio.wait_for(batcher.score(rows(9, 9)), 0.01))
        patient = asyncio.create_task(batcher.score(rows(5)))
        timed_out = False
        try:
            await hurried
        except TimeoutError:
            timed_out = True
        return timed_out, list((await patient).median)

    timed_out, patient = asyncio.run(go())
    assert timed_out
    assert patient == [5.0]
    assert score.calls == [1]  # the two hurried rows never reached the model
