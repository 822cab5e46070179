"""waybill.v1.PredictionService: decode, one call, encode. Nothing else lives here."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
from opentelemetry import trace
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from models.kinds import OutcomeRefused
from router.table import resolve
from server.serving.errors import BadRequest, Unavailable
from server.serving.outcomes import OutcomeScorer
from server.serving.predictor import Predictor
from server.serving.state import ServingState
from server.storage.base import OutcomeResult, Store, UnknownPredictions
from server.telemetry.observe import Call, Observer, current_call
from server.transport import convert
from server.transport.rpc import CallRecord, Edge, annotate, handler
from server.transport.streams import Expiry, StreamBudget, serve_stream

MAX_OUTCOMES = 1000
# Requests of one PredictStream read and not yet answered; beyond, it stops reading.
STREAM_IN_FLIGHT = 64
# Streams open at once, and rows read and unanswered across all of them (Settings).
DEFAULT_STREAMS = 64
DEFAULT_STREAM_ROWS = 4_096
# ReportOutcome looks again for predictions another process answered and has not
# written yet after these pauses (doubling), up to its outcome_wait_s in all.
FIRST_LOOK_AGAIN_S = 0.1


class PredictionService(pb_grpc.PredictionServiceServicer):
    NAME = "PredictionService"

    def __init__(
        self, predictor: Predictor, state: ServingState, default_deadline_s: float,
        observer: Observer | None = None, store: Store | None = None, *,
        siblings: bool = False, streams: StreamBudget | None = None,
        outcome_scorer: OutcomeScorer | None = None, outcome_wait_s: float = 1.0,
    ) -> None:
        self._predictor = predictor
        self._store = store
        self._score = outcome_scorer
        # Worker processes and replicas share the log, each writing its own queue: a
        # prediction another one answered a moment ago may not be written yet.
        self._siblings = siblings
        self._outcome_wait_s = outcome_wait_s
        self._state = state
        self._streams = streams or StreamBudget(DEFAULT_STREAMS, DEFAULT_STREAM_ROWS)
        self.edge = Edge(pb.DESCRIPTOR.services_by_name[self.NAME], default_deadline_s,
                         observer)

    @handler("Predict")
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        query = convert.predict_query(request, context.invocation_metadata())
        annotate(model=query.model, rows=query.n_rows)
        outcome = await self._predictor.predict(query)
        annotate(version=outcome.version, route=outcome.reason.value)
        await context.send_initial_metadata(convert.response_headers(outcome))
        return convert.predict_response(outcome)

    @handler("PredictStream", streaming=True)
    async def PredictStream(
        self, requests: AsyncIterator[pb.PredictStreamRequest],
        context: grpc.aio.ServicerContext
    ) -> None:
        metadata = tuple(context.invocation_metadata() or ())
        stream = current_call()
        expiry = Expiry(self.edge.default_deadline_s)  # each message's own deadline
        try:
            read = await serve_stream(
                requests, context, functools.partial(self._answer, metadata=metadata,
                                                     stream=stream, expiry=expiry),
                STREAM_IN_FLIGHT, self._streams)
        finally:
            expiry.close()
        annotate(messages=read)

    async def _answer(self, request: pb.PredictRequest, *, metadata: Sequence[tuple[str, str]],
                      stream: Call | None, expiry: Expiry) -> pb.PredictStreamResponse:
        """One stream request, observed like a Predict: metrics, access line, spans."""
        observer = self.edge.observer
        record = CallRecord(observer, "PredictStream")  # this task's own call scope
        call = record.call
        span = observer.child_span(stream, "waybill.stream.request")
        if span is not None:
            call.span, call.context = span, trace.set_span_in_context(span)
            record.span = (None, span)
        task = asyncio.current_task()
        assert task is not None
        watched = expiry.watch(task)
        call.deadline = watched.deadline
        try:
            query = convert.predict_query(request, metadata)
            call.fields.update(model=query.model, rows=query.n_rows)
            outcome = await self._predictor.predict(query)
            return pb.PredictStreamResponse(response=convert.predict_response(outcome))
        except asyncio.CancelledError:
            if watched.expired and task.uncancel() == 0:  # its deadline, not the stream's end
                expired = TimeoutError("the message's deadline passed before its answer")
                return pb.PredictStreamResponse(error=convert.predict_error(record.fail(expired)))
            if task.cancelling():
                record.code = grpc.StatusCode.CANCELLED  # the stream ended under it
                raise
            # Cancelled from below (the executor is stopping): answer, as for any failure.
            record.code = grpc.StatusCode.UNAVAILABLE
            call.fields["error"] = "server is stopping"
            return pb.PredictStreamResponse(error=pb.PredictError(
                code=record.code.value[0], message="server is stopping"))
        except Exception as error:
            return pb.PredictStreamResponse(error=convert.predict_error(record.fail(error)))
        finally:
            record.close()

    @handler("ListModels")
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        snapshot = self._state.current
        return pb.ListModelsResponse(
            models=[
                convert.model_summary(routes, dict(snapshot.versions[name]))
                for name, routes in sorted(snapshot.table.models.items())
            ]
        )

    @handler("GetModel")
    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelResponse:
        snapshot = self._state.current
        decision = resolve(snapshot.table, request.model, request.version or None)
        loaded = snapshot.version(request.model, decision.version)
        labels = snapshot.table.routes(request.model).labels_of(decision.version)
        return pb.GetModelResponse(model_version=convert.model_version(loaded, labels))

    @handler("ReportOutcome")
    async def ReportOutcome(
        self, request: pb.ReportOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportOutcomeResponse:
        if self._store is None or self._score is None:
            raise Unavailable("outcome feedback needs the prediction log; this server runs "
                              "with --no-database")
        if not request.outcomes:
            raise BadRequest("outcomes", "empty", "at least one outcome is required")
        if len(request.outcomes) > MAX_OUTCOMES:
            raise BadRequest("outcomes", "too_many",
                             f"{len(request.outcomes)} outcomes exceed the limit of "
                             f"{MAX_OUTCOMES} per request")
        outcomes = convert.outcomes(request)
        annotate(rows=len(outcomes))
        report = functools.partial(self._store.report_outcomes, outcomes, self._score)
        try:
            results = await self._report(report)
        except OutcomeRefused as err:
            raise BadRequest(err.field, err.rule, err.description) from None
        recorded = [r for r in results if not r.duplicate]
        self.edge.observer.outcomes_reported((r.model, r.version) for r in recorded)
        annotate(recorded=len(recorded))
        return pb.ReportOutcomeResponse(recorded=len(recorded),
                                        duplicates=len(results) - len(recorded))

    async def _report(self, report: Callable[[], list[OutcomeResult]]) -> list[OutcomeResult]:
        """Record; while some predictions are unknown and siblings may still hold them in
        their queues, look again after growing pauses, up to outcome_wait_s in all (the
        caller's deadline stops it sooner)."""
        waited, pause = 0.0, FIRST_LOOK_AGAIN_S
        while True:
            try:
                return await asyncio.to_thread(report)
            except UnknownPredictions:
                if not self._siblings or waited >= self._outcome_wait_s:
                    raise
            pause = min(pause, self._outcome_wait_s - waited)
            await asyncio.sleep(pause)
            waited += pause
            pause *= 2
