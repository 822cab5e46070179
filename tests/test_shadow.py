"""The shadow scorer on real versions from the test registry: sampled requests are
gathered and scored together, and each is still compared with its own served answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.loaded import LoadedVersion
from models.validation import rows_to_columns
from server.monitoring.shadow_stats import ShadowStats
from server.serving.catalog import VersionCatalog
from server.serving.shadow import ShadowScorer


class CountingExecutor(ThreadPoolExecutor):
    """Counts the calls handed to it: one per CatBoost call the scorer makes."""

    def __init__(self) -> None:
        super().__init__(1)
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="module")
def versions(registry: Path) -> dict[str, LoadedVersion]:
    catalog = VersionCatalog(registry)
    loaded = catalog.ensure([("delivery_eta", "1.0.0"), ("delivery_eta", "1.1.0")])
    return {version: v for (_, version), v in loaded.items()}


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    with CountingExecutor() as pool:
        yield pool


def test_sampled_requests_are_scored_in_one_call_and_compared_one_by_one(
        versions: dict[str, LoadedVersion], executor: CountingExecutor,
        rows: list[dict[str, object]]) -> None:
    served, shadow = versions["1.1.0"], versions["1.0.0"]
    known = frozenset(rows[0])
    requests = [rows[0:1], rows[1:4], rows[4:5], rows[5:13]]
    answers = [served.score(served.validate(r, known).matrix) for r in requests]
    # What each request's rows score alone on the shadow, for the expected differences.
    alone = [shadow.score(shadow.validate(r, known).matrix) for r in requests]

    async def run() -> ShadowScorer:
        scorer = ShadowScorer(executor, queue_size=16, stats=ShadowStats())
        scorer.start()
        for request, answer in zip(requests, answers, strict=True):
            assert scorer.offer("delivery_eta", shadow, rows_to_columns(request), known,
                                answer)
        await scorer.drain()
        await scorer.stop()
        return scorer

    scorer = asyncio.run(run())
    assert executor.calls == 1
    tally = scorer.stats.stats()[("delivery_eta", "1.0.0")]
    assert (tally.sampled, tally.compared_rows, tally.failed) == (4, 13, 0)
    diffs = np.concatenate([s.value - a.value for s, a in zip(alone, answers, strict=True)])
    assert tally.sum_diff == pytest.approx(float(diffs.sum()))
    assert tally.sum_abs_diff == pytest.approx(float(np.abs(diffs).sum()))
    outside = sum(int(((s.value < a.lower) | (s.value > a.upper)).sum())
                  for s, a in zip(alone, answers, strict=True))
    assert tally.outside == outside


def test_a_request_the_shadow_refuses_does_not_spoil_the_others(
        versions: dict[str, LoadedVersion], executor: CountingExecutor,
        rows: list[dict[str, object]]) -> None:
    served, shadow = versions["1.1.0"], versions["1.0.0"]
    known = frozenset(rows[0])
    good = rows[:2]
    bad = [{**rows[2], "distance_km": -5.0}]  # below the schema's minimum
    answer = served.score(served.validate(good, known).matrix)

    async def run() -> ShadowScorer:
        scorer = ShadowScorer(executor, queue_size=16, stats=ShadowStats())
        scorer.start()
        scorer.offer("delivery_eta", shadow, rows_to_columns(good), known, answer)
        scorer.offer("delivery_eta", shadow, rows_to_columns(bad), known, answer)
        await scorer.drain()
        await scorer.stop()
        return scorer

    tally = asyncio.run(run()).stats.stats()[("delivery_eta", "1.0.0")]
    assert (tally.sampled, tally.compared_rows, tally.failed) == (2, 2, 1)
    assert executor.calls == 1
