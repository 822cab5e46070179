"""One PredictStream call: read requests, score them concurrently, answer in order.

A reader task reads requests and starts one answer task for each, with at most ``limit``
read and not yet answered (beyond that it stops reading, and HTTP/2 flow control holds
the caller back). The call's own task writes the answers in request order.

- A drain (SIGTERM) cuts the reader, even one waiting for a request that never comes;
  what was read is still answered, then the call ends UNAVAILABLE.
- A malformed message ends reading the same way; the call then ends with its error.
- The caller going away (or the call's deadline) cancels the reader and every answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from waybill.v1 import prediction_pb2 as pb

from server.serving.errors import Unavailable
from server.transport.rpc import on_drain

Answer = Callable[[pb.PredictRequest], Coroutine[Any, Any, pb.PredictStreamResponse]]


class _Reading:
    __slots__ = ("drained", "error", "read")

    def __init__(self) -> None:
        self.read = 0
        self.drained = False
        self.error: Exception | None = None


async def serve_stream(requests: AsyncIterator[pb.PredictStreamRequest],
                       context: grpc.aio.ServicerContext, answer: Answer,
                       limit: int) -> int:
    """Answer every request read, in order; returns how many were read."""
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[asyncio.Task[pb.PredictStreamResponse] | None] = asyncio.Queue()
    room = asyncio.Semaphore(limit)
    state = _Reading()

    async def read() -> None:
        try:
            async for message in requests:
                await room.acquire()
                state.read += 1
                answers.put_nowait(loop.create_task(answer(message.request)))
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
            await context.write(await task)
            room.release()
    except BaseException as error:
        reader.cancel()
        while not answers.empty():
            left = answers.get_nowait()
            if left is not None:
                left.cancel()
        if not isinstance(error, asyncio.CancelledError) and _gone(context):
            # A write to a caller that has left fails before gRPC cancels the handler.
            raise asyncio.CancelledError from None
        raise
    finally:
        unsubscribe()
    if state.error is not None:
        raise state.error
    if state.drained:
        raise Unavailable("server is draining; send the unanswered requests to another "
                          "replica")
    return state.read


def _gone(context: grpc.aio.ServicerContext) -> bool:
    cancelled = getattr(context, "cancelled", None)
    return bool(cancelled()) if callable(cancelled) else False
