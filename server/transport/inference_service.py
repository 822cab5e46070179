"""inference.GRPCInferenceService, the Open Inference Protocol (KServe V2): decode, one
call, encode. The conversion is :mod:`server.transport.inference_convert`; ModelInfer
asks the same :class:`Predictor` as waybill.v1's Predict."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from inference import open_inference_grpc_pb2 as pb
from inference import open_inference_grpc_pb2_grpc as pb_grpc

from models.loaded import LoadedVersion
from router.table import RoutingError, resolve
from server.serving.predictor import Predictor
from server.serving.state import ServingState
from server.telemetry.observe import Observer
from server.transport import convert, inference_convert
from server.transport.rpc import Edge, annotate, handler

SERVER_NAME = "waybill"
# Optional protocol extensions served: none (no model repository, no statistics, no
# shared memory, no classification).
EXTENSIONS: tuple[str, ...] = ()


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    NAME = "GRPCInferenceService"

    def __init__(self, predictor: Predictor, state: ServingState, default_deadline_s: float,
                 observer: Observer | None = None, *, server_version: str = "0") -> None:
        self._predictor = predictor
        self._state = state
        self._server_version = server_version
        self.edge = Edge(pb.DESCRIPTOR.services_by_name[self.NAME], default_deadline_s,
                         observer)
        # What each model's ModelInfer is checked against; rebuilt when the served
        # versions change.
        self._facts_of: Mapping[str, Mapping[str, LoadedVersion]] | None = None
        self._facts: dict[str, inference_convert.ModelFacts] = {}

    def _model_facts(self, model: str) -> inference_convert.ModelFacts:
        versions = self._state.current.versions
        if versions is not self._facts_of:
            self._facts_of, self._facts = versions, {
                name: inference_convert.model_facts(served.values())
                for name, served in versions.items()}
        return self._facts.get(model, inference_convert.NO_FACTS)

    @handler("ServerLive")
    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @handler("ServerReady")
    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        # Draining, the edge answers UNAVAILABLE before this runs.
        return pb.ServerReadyResponse(ready=bool(self._state.current.versions))

    @handler("ModelReady")
    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        """Ready when the model has the version (or label), or any version when none is
        named; an unknown model or version is not ready (the protocol's answer), not an
        error."""
        snapshot = self._state.current
        try:
            decision = resolve(snapshot.table, request.name, request.version or None)
            snapshot.version(request.name, decision.version)
        except RoutingError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @handler("ServerMetadata")
    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._server_version,
                                         extensions=EXTENSIONS)

    @handler("ModelMetadata")
    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        """The version (or label) named, else the model's default, as GetModel answers;
        NOT_FOUND names what is unknown and lists what exists."""
        snapshot = self._state.current
        decision = resolve(snapshot.table, request.name, request.version or None)
        loaded = snapshot.version(request.name, decision.version)
        return inference_convert.model_metadata(
            loaded, snapshot.table.routes(request.name).versions)

    @handler("ModelInfer")
    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        query, plan = inference_convert.infer_query(
            request, context.invocation_metadata(), self._model_facts(request.model_name))
        annotate(model=query.model, rows=query.n_rows)
        outcome = await self._predictor.predict(query)
        annotate(version=outcome.version, route=outcome.reason.value)
        await context.send_initial_metadata(convert.response_headers(outcome))
        return inference_convert.infer_response(outcome, plan)
