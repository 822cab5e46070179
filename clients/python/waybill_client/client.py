"""The blocking Waybill client."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
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

__all__ = ["WaybillClient"]

_R = TypeVar("_R")


class WaybillClient:
    """Blocking client for ``waybill.v1.PredictionService``.

    Every call gets a deadline (``timeout`` seconds unless the call passes its own) that bounds
    all of its attempts together. UNAVAILABLE is retried by gRPC itself, through the retry
    policy of the channel's service config: up to ``retries`` times (at most 4: gRPC makes at
    most 5 attempts), pausing about ``min(max_backoff, backoff * 2**n)`` seconds (jittered
    +-20%) before retry *n*; a pause that outlasts the deadline ends the call with
    ``DeadlineExceeded``. Every other status raises at once (see ``waybill_client.errors``).
    ``metadata`` is sent with every call, e.g. authorization. ``outcome_token``, the server's
    outcome token, goes as ``authorization: Bearer <token>`` on ``report_outcomes`` calls
    only (replacing an authorization in ``metadata`` there).

    The client creates and owns a channel to ``target`` (TLS when ``credentials`` is given)
    that carries the retry policy, or uses ``channel`` as given, in which case ``close()``
    leaves it open and the channel's own options decide retries (``retry_options()`` gives
    the client's; ``retries``, ``backoff`` and ``max_backoff`` are refused with ``channel``).
    Thread-safe; use it as a context manager or call ``close()``.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        channel: grpc.Channel | None = None,
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
            grpc.secure_channel, grpc.insecure_channel,
        )
        self._stub = prediction_pb2_grpc.PredictionServiceStub(self._channel)
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"WaybillClient({self._target!r}, timeout={self._timeout}, {state})"

    # ------------------------------------------------------------------ calls

    def predict(
        self,
        model: str,
        rows: Sequence[Mapping[str, object]],
        *,
        version: str | None = None,
        routing_key: str | None = None,
        timeout: float | None = None,
        columns: bool | None = None,
    ) -> PredictResult:
        """Score ``rows`` (one ``dict`` of feature values per order) with ``model``.

        ``version`` pins an exact version or a label (sent as ``x-model-version``);
        ``routing_key`` makes the weighted choice sticky (sent as ``x-routing-key``).
        Raises ``TypeError``/``ValueError`` for rows that cannot be sent, and a
        ``WaybillError`` subclass for a non-OK status.

        A request of 8 rows or more goes as columns, which the server reads much faster,
        when every feature holds one type (else as rows, so that a bad value is named per
        row); the result is the same either way, but the server names a bad value of a
        columnar request ``columns.<feature>[<row>]``. ``columns=False`` always sends rows
        (e.g. to a server older than columnar requests), ``columns=True`` sends columns
        whenever the rows transpose cleanly, however few.
        """
        request = build_predict_request(model, rows, columns)
        metadata = call_metadata(self._metadata, version=version, routing_key=routing_key)
        response: prediction_pb2.PredictResponse = self._invoke(
            self._stub.Predict, request, metadata, timeout
        )
        return predict_result(response)

    def predict_stream(
        self,
        model: str,
        requests: Iterable[Sequence[Mapping[str, object]]],
        *,
        version: str | None = None,
        routing_key: str | None = None,
        timeout: float | None = None,
        columns: bool | None = None,
    ) -> Iterator[PredictResult | WaybillError]:
        """Score many requests over one ``PredictStream`` call, for high-volume callers.

        Each item of ``requests`` is the rows of one request (as for ``predict``); items are
        sent as the server reads them (at most 64 unanswered), and the answers come back in
        the same order: a ``PredictResult``, or the ``WaybillError`` a ``predict`` of the
        same rows would have raised (returned, not raised: the stream goes on). ``version``,
        ``routing_key`` and ``columns`` (see ``predict``) apply to every request.
        ``timeout`` bounds the whole stream; ``None`` (the default here) means no deadline,
        since a stream lasts as long as its requests do (the server still gives each request
        5 s, and ends a stream after about 5 minutes when the connection reaches its maximum
        age: reopen it).

        Rows that cannot be sent raise their ``TypeError``/``ValueError`` (naming
        ``rows[<i>].<key>``) after the answers of the items before them. A stream cut short
        (its deadline, or ``Unavailable`` from a draining server) raises after the answers
        it got; a stream is not retried (the retry policy covers the unary calls only), so
        resend the unanswered rest. Stopping the iteration
        early cancels the call.
        """
        if self._closed:
            raise RuntimeError("WaybillClient is closed")
        budget = None if timeout is None else check_timeout(timeout)
        metadata = call_metadata(self._metadata, version=version, routing_key=routing_key)
        unsendable: list[Exception] = []

        def sent() -> Iterator[prediction_pb2.PredictStreamRequest]:
            for rows in requests:
                request = stream_request(model, rows, unsendable, columns)
                if request is None:
                    return
                yield request

        call = self._stub.PredictStream(sent(), timeout=budget, metadata=metadata)
        return self._answers(call, unsendable)

    @staticmethod
    def _answers(call: Any, unsendable: list[Exception]) -> Iterator[PredictResult | WaybillError]:
        try:
            for answer in call:
                yield stream_answer(answer)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()  # a no-op once the call has ended
        if unsendable:
            raise unsendable[0]

    def list_models(
        self, *, timeout: float | None = None
    ) -> tuple[prediction_pb2.ModelSummary, ...]:
        """Every served model with its versions and labels."""
        response: prediction_pb2.ListModelsResponse = self._invoke(
            self._stub.ListModels,
            prediction_pb2.ListModelsRequest(),
            call_metadata(self._metadata),
            timeout,
        )
        return tuple(response.models)

    def get_model(
        self, model: str, version: str | None = None, *, timeout: float | None = None
    ) -> prediction_pb2.ModelVersion:
        """Describe one version (exact or label; ``None`` is the default version)."""
        response: prediction_pb2.GetModelResponse = self._invoke(
            self._stub.GetModel,
            prediction_pb2.GetModelRequest(model=model, version=version or ""),
            call_metadata(self._metadata),
            timeout,
        )
        return response.model_version

    def report_outcomes(
        self,
        outcomes: Iterable[tuple[str, object] | Outcome],
        *,
        timeout: float | None = None,
    ) -> OutcomeReport:
        """Report what actually happened to predicted rows, for live accuracy per version.

        ``outcomes`` is an iterable of ``Outcome`` items or ``(prediction_id, actual)`` pairs,
        ``prediction_id`` as ``predict`` returned it. ``Outcome(pid, value=...)`` reports a
        number in the model's unit (regression kinds; either sign), ``Outcome(pid,
        label=...)`` a classifier's actual class. A pair's ``actual`` is a delivery model's
        transit time in days (``int`` or ``float``) or delivery date (``datetime.date`` or
        ``"YYYY-MM-DD"``; the server counts the days from the prediction's order date). At
        most ``MAX_OUTCOMES`` (1000) per call.

        A batch is all or nothing. Raises ``TypeError``/``ValueError`` for items that cannot
        be sent (naming ``outcomes[<i>]``), ``InvalidArgument`` for outcomes the server
        refuses (``violations`` name ``outcomes[<i>].<field>``; also an empty or oversized
        batch), ``NotFound`` for prediction ids the server does not hold (unknown, or past
        retention) and ``AlreadyExists`` for ids already reported with a different actual.

        Idempotent: reporting the same actual again is a no-op, counted in
        ``OutcomeReport.duplicates``, so the client's retries on UNAVAILABLE are safe; after a
        retry, outcomes the lost attempt recorded come back as duplicates instead of recorded.
        """
        request = build_report_outcome_request(outcomes)
        response: prediction_pb2.ReportOutcomeResponse = self._invoke(
            self._stub.ReportOutcome, request, call_metadata(self._outcome_metadata), timeout
        )
        return outcome_report(response)

    def _invoke(
        self,
        method: Callable[..., _R],
        request: Any,
        metadata: Metadata,
        timeout: float | None,
    ) -> _R:
        if self._closed:
            raise RuntimeError("WaybillClient is closed")
        budget = self._timeout if timeout is None else check_timeout(timeout)
        try:
            # Retries happen inside the call (the channel's retry policy), within budget.
            return method(request, timeout=budget, metadata=metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the channel if the client created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> WaybillClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
