"""The asyncio Waybill client (``grpc.aio``); same behaviour as ``WaybillClient``."""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from waybill.v1 import prediction_pb2, prediction_pb2_grpc

from ._channel import RetryPolicy, check_timeout, open_channel
from ._convert import (
    Metadata,
    Outcome,
    OutcomeReport,
    PredictResult,
    build_predict_request,
    build_report_outcome_request,
    call_metadata,
    normalize_metadata,
    outcome_metadata,
    outcome_report,
    predict_result,
    stream_answer,
    stream_request,
)
from .errors import WaybillError, from_rpc_error

__all__ = ["AsyncWaybillClient"]

_R = TypeVar("_R")
_T = TypeVar("_T")


class AsyncWaybillClient:
    """Asyncio client for ``waybill.v1.PredictionService``.

    Same deadlines, retries (the retry policy of the channel it creates), metadata
    (``outcome_token`` included) and errors as ``waybill_client.WaybillClient``. Create it
    inside the running event loop; ``channel`` must be a ``grpc.aio.Channel``. Use it as
    ``async with`` or ``await client.close()``.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        channel: grpc.aio.Channel | None = None,
        metadata: Iterable[tuple[str, str | bytes]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        outcome_token: str | None = None,
    ) -> None:
        self._target = target
        self._timeout = check_timeout(timeout)
        self._policy = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        self._metadata: Metadata = normalize_metadata(metadata)
        self._outcome_metadata = outcome_metadata(self._metadata, outcome_token)
        self._channel, self._owns_channel = open_channel(
            target, channel, credentials, options, self._policy,
            grpc.aio.secure_channel, grpc.aio.insecure_channel,
        )
        self._stub = prediction_pb2_grpc.PredictionServiceStub(self._channel)
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"AsyncWaybillClient({self._target!r}, timeout={self._timeout}, {state})"

    # ------------------------------------------------------------------ calls

    async def predict(
        self,
        model: str,
        rows: Sequence[Mapping[str, object]],
        *,
        version: str | None = None,
        routing_key: str | None = None,
        timeout: float | None = None,
        columns: bool | None = None,
    ) -> PredictResult:
        """Score ``rows`` with ``model``; see ``WaybillClient.predict``."""
        request = build_predict_request(model, rows, columns)
        metadata = call_metadata(self._metadata, version=version, routing_key=routing_key)
        response: prediction_pb2.PredictResponse = await self._invoke(
            self._stub.Predict, request, metadata, timeout
        )
        return predict_result(response)

    def predict_stream(
        self,
        model: str,
        requests: Iterable[Sequence[Mapping[str, object]]]
        | AsyncIterable[Sequence[Mapping[str, object]]],
        *,
        version: str | None = None,
        routing_key: str | None = None,
        timeout: float | None = None,
        columns: bool | None = None,
    ) -> AsyncIterator[PredictResult | WaybillError]:
        """Many requests over one ``PredictStream`` call (``async for``); see
        ``WaybillClient.predict_stream``. ``requests`` may also be an async iterable."""
        if self._closed:
            raise RuntimeError("AsyncWaybillClient is closed")
        budget = None if timeout is None else check_timeout(timeout)
        metadata = call_metadata(self._metadata, version=version, routing_key=routing_key)
        unsendable: list[Exception] = []

        async def sent() -> AsyncIterator[prediction_pb2.PredictStreamRequest]:
            async for rows in _each(requests):
                request = stream_request(model, rows, unsendable, columns)
                if request is None:
                    return
                yield request

        call = self._stub.PredictStream(sent(), timeout=budget, metadata=metadata)
        return _answers(call, unsendable)

    async def list_models(
        self, *, timeout: float | None = None
    ) -> tuple[prediction_pb2.ModelSummary, ...]:
        """Every served model with its versions and labels."""
        response: prediction_pb2.ListModelsResponse = await self._invoke(
            self._stub.ListModels,
            prediction_pb2.ListModelsRequest(),
            call_metadata(self._metadata),
            timeout,
        )
        return tuple(response.models)

    async def get_model(
        self, model: str, version: str | None = None, *, timeout: float | None = None
    ) -> prediction_pb2.ModelVersion:
        """Describe one version (exact or label; ``None`` is the default version)."""
        response: prediction_pb2.GetModelResponse = await self._invoke(
            self._stub.GetModel,
            prediction_pb2.GetModelRequest(model=model, version=version or ""),
            call_metadata(self._metadata),
            timeout,
        )
        return response.model_version

    async def report_outcomes(
        self,
        outcomes: Iterable[tuple[str, object] | Outcome],
        *,
        timeout: float | None = None,
    ) -> OutcomeReport:
        """Report actuals of predicted rows; see ``WaybillClient.report_outcomes``."""
        request = build_report_outcome_request(outcomes)
        response: prediction_pb2.ReportOutcomeResponse = await self._invoke(
            self._stub.ReportOutcome, request, call_metadata(self._outcome_metadata), timeout
        )
        return outcome_report(response)

    async def _invoke(
        self,
        method: Callable[..., Awaitable[_R]],
        request: Any,
        metadata: Metadata,
        timeout: float | None,
    ) -> _R:
        if self._closed:
            raise RuntimeError("AsyncWaybillClient is closed")
        budget = self._timeout if timeout is None else check_timeout(timeout)
        try:
            # Retries happen inside the call (the channel's retry policy), within budget.
            return await method(request, timeout=budget, metadata=metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close the channel if the client created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> AsyncWaybillClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _each(items: Iterable[_T] | AsyncIterable[_T]) -> AsyncIterator[_T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def _answers(call: Any, unsendable: list[Exception],
                   ) -> AsyncIterator[PredictResult | WaybillError]:
    try:
        async for answer in call:
            yield stream_answer(answer)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc
    finally:
        call.cancel()  # a no-op once the call has ended
    if unsendable:
        raise unsendable[0]
