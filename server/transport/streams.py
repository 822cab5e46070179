"""One PredictStream call: read requests, score them concurrently, answer in order.

A reader task reads requests and starts one answer task for each, with at most ``limit``
read and not yet answered (beyond that it stops reading, and HTTP/2 flow control holds
the caller back). The call's own task writes the answers in request order.

- A drain (SIGTERM) cuts the reader, even one waiting for a request that never comes;
  what was read is still answered, then the call ends UNAVAILABLE.
- A malformed message ends reading the same way; the call then ends with its error.
- The caller going away (or the call's deadline) cancels the reader and every answer.

All streams together share one :class:`StreamBudget`: at most ``max_streams`` calls open
(one more is refused RESOURCE_EXHAUSTED at once) and at most ``max_rows`` rows read and
not yet answered. A reader that would go past the rows waits for room, so a flood of
streams holds a bounded amount of memory and HTTP/2 flow control holds the callers back.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from waybill.v1 import prediction_pb2 as pb

from server.serving.errors import Overloaded, Unavailable
from server.transport.rpc import on_drain

Answer = Callable[[pb.PredictRequest], Coroutine[Any, Any, pb.PredictStreamResponse]]


class StreamBudget:
    """What all open PredictStream calls may hold together. Event loop thread only.

    Rows count from when a message is read until its answer is computed (not written: a
    caller that does not read its answers holds at most its own 64 computed answers, never
    the rows every other stream needs). Waiting readers are served first come, first
    served, so a big message is not starved by small ones.
    """

    def __init__(self, max_streams: int, max_rows: int) -> None:
        self.max_streams = max_streams
        self.max_rows = max_rows
        self.open = 0
        self.rows = 0
        self.refused = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def opened(self) -> None:
        if self.open >= self.max_streams:
            self.refused += 1
            raise Overloaded(f"{self.open} streams are open; the limit is {self.max_streams}")
        self.open += 1

    def closed(self) -> None:
        self.open -= 1

    async def take(self, rows: int) -> int:
        """Wait for room for ``rows`` (a message bigger than the whole budget takes all of
        it); returns what was taken, to give back once the answer is computed."""
        rows = max(1, min(rows, self.max_rows))
        if not self._waiting and self.rows + rows <= self.max_rows:
            self.rows += rows
            return rows
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.give(rows)  # granted as the reader was cancelled: hand it on
            else:
                self._waiting.remove((rows, turn))
                self._serve()  # the head may have changed
            raise
        return rows

    def give(self, rows: int) -> None:
        self.rows -= rows
        self._serve()

    def _serve(self) -> None:
        while self._waiting and self.rows + self._waiting[0][0] <= self.max_rows:
            rows, turn = self._waiting.popleft()
            if turn.done():
                continue
            self.rows += rows
            turn.set_result(None)


class Expiring:
    __slots__ = ("deadline", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[Any]) -> None:
        self.deadline = deadline  # event-loop time
        self.task = task
        self.expired = False  # set when the deadline cancelled the task


class Expiry:
    """The deadlines of one stream's messages, with one timer at a time.

    Every message gets the same budget from when it is read, so messages expire in the
    order they came: the oldest one still running is the next to expire, and one timer
    set for it is all the stream needs. An ``asyncio.timeout`` per message cost 7 % of
    PredictStream's throughput (bench/ab.py --workload stream). An expired message's task
    is cancelled with ``expired`` set, so its answer can say DEADLINE_EXCEEDED.
    """

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        self._running: deque[Expiring] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[Any]) -> Expiring:
        loop = asyncio.get_running_loop()
        running = self._running
        while running and running[0].task.done():  # answered: nothing to expire
            running.popleft()
        watched = Expiring(loop.time() + self._budget_s, task)
        running.append(watched)
        if self._timer is None:
            self._timer = loop.call_at(watched.deadline, self._expire)
        return watched

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now, running = loop.time(), self._running
        while running and (running[0].task.done() or running[0].deadline <= now):
            watched = running.popleft()
            if not watched.task.done():
                watched.expired = True
                watched.task.cancel()
        if running:
            self._timer = loop.call_at(running[0].deadline, self._expire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running.clear()


def message_rows(request: pb.PredictRequest) -> int:
    """Rows a request holds, as sent (rows, or the longest column)."""
    if request.rows:
        return len(request.rows)
    return max((max(len(c.numbers), len(c.strings), len(c.booleans))
                for c in request.columns), default=1)


class _Reading:
    __slots__ = ("drained", "error", "read")

    def __init__(self) -> None:
        self.read = 0
        self.drained = False
        self.error: Exception | None = None


async def serve_stream(requests: AsyncIterator[pb.PredictStreamRequest],
                       context: grpc.aio.ServicerContext, answer: Answer,
                       limit: int, budget: StreamBudget) -> int:
    """Answer every request read, in order; returns how many were read."""
    budget.opened()
    try:
        return await _serve(requests, context, answer, limit, budget)
    finally:
        budget.closed()


async def _serve(requests: AsyncIterator[pb.PredictStreamRequest],
                 context: grpc.aio.ServicerContext, answer: Answer, limit: int,
                 budget: StreamBudget) -> int:
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[asyncio.Task[pb.PredictStreamResponse] | None] = asyncio.Queue()
    room = asyncio.Semaphore(limit)
    state = _Reading()

    async def read() -> None:
        try:
            async for message in requests:
                await room.acquire()
                rows = await budget.take(message_rows(message.request))
                state.read += 1
                task = loop.create_task(answer(message.request))
                task.add_done_callback(functools.partial(_give_back, budget, rows))
                answers.put_nowait(task)
        except asyncio.CancelledError:
            if not state.drained:
                raise
        except Exception as error:  # a malformed message: answer what was read, then fail
            state.error = error
        finally:
            answers.put_nowait(None)

    reader = loop.create_task(read())

    def drain() -> None:
        state.drained = True
        reader.cancel()

    unsubscribe = on_drain(drain)
    try:
        while (task := await answers.get()) is not None:
            answer_message = await task
            try:
                await context.write(answer_message)
            except Exception:
                # A write fails only when the call is over: the caller left or its
                # deadline passed (gRPC may say so a moment later than the write).
                raise asyncio.CancelledError from None
            room.release()
    except BaseException:
        # (Whatever failed after the caller left is mapped to CANCELLED by the RPC edge.)
        reader.cancel()
        while not answers.empty():
            left = answers.get_nowait()
            if left is not None:
                left.cancel()
        raise
    finally:
        unsubscribe()
    if state.error is not None:
        raise state.error
    if state.drained:
        raise Unavailable("server is draining; send the unanswered requests to another "
                          "replica")
    return state.read


def _give_back(budget: StreamBudget, rows: int, _task: object) -> None:
    budget.give(rows)

