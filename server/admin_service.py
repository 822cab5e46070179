"""waybill.v1.AdminService: decode, one call, encode."""

from __future__ import annotations

import grpc
from waybill.v1 import admin_pb2 as pb
from waybill.v1 import admin_pb2_grpc as pb_grpc

from router.table import ModelRoutes
from server import routing
from server.errors import BadRequest, Unavailable
from server.observe import Observer
from server.routing import RoutingReloader
from server.rpc import annotate, handler
from server.shadow import DIFF_BOUNDS, ShadowScorer
from server.state import ServingState


def model_routing(routes: ModelRoutes) -> pb.ModelRouting:
    message = pb.ModelRouting(
        model=routes.name,
        stable=routes.stable,
        sticky_key=routes.sticky_key,
        routes=[
            pb.Route(version=r.version, label=r.label or "", weight=r.weight,
                     effective_weight=routes.effective_weight(r.version))
            for r in routes.routes
        ],
    )
    if routes.shadow is not None:
        message.shadow.CopyFrom(pb.Shadow(version=routes.shadow.version,
                                          fraction=routes.shadow.fraction))
    if routes.override is not None:
        o = routes.override
        message.override.CopyFrom(pb.Override(reason=o.reason, created_at=o.at, actor=o.actor,
                                              rolled_back=o.rolled_back))
    return message


class AdminService(pb_grpc.AdminServiceServicer):  # type: ignore[misc]
    service = pb.DESCRIPTOR.services_by_name["AdminService"].full_name  # read by server.rpc

    def __init__(self, state: ServingState, reloader: RoutingReloader | None,
                 shadow: ShadowScorer, default_deadline_s: float,
                 observer: Observer | None = None) -> None:
        self._state = state
        self._reloader = reloader
        self._shadow = shadow
        self.default_deadline_s = default_deadline_s  # read by server.rpc.handler
        self.observer = observer  # read by server.rpc.handler

    @handler("GetRouting")
    async def GetRouting(
        self, request: pb.GetRoutingRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRoutingResponse:
        snapshot = self._state.current
        response = pb.GetRoutingResponse(
            source=snapshot.source, content_hash=snapshot.content_hash,
            loaded_at=snapshot.loaded_at, generation=snapshot.generation,
            models=[model_routing(r) for _, r in sorted(snapshot.table.models.items())],
        )
        failure = self._reloader.last_failure if self._reloader else None
        if failure is not None:
            response.last_failure.CopyFrom(pb.ReloadFailure(
                at=failure.at, reason=failure.message, content_hash=failure.content_hash))
        return response

    @handler("ReloadConfig")
    async def ReloadConfig(
        self, request: pb.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadConfigResponse:
        if self._reloader is None:
            raise Unavailable("this server runs without a routing file (--no-routing)")
        outcome = await self._reloader.reload(self._state, "admin")
        annotate(changed=outcome.changed, generation=outcome.snapshot.generation)
        return pb.ReloadConfigResponse(changed=outcome.changed,
                                       content_hash=outcome.snapshot.content_hash,
                                       generation=outcome.snapshot.generation)

    @handler("Rollback")
    async def Rollback(
        self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackResponse:
        if not request.reason:
            raise BadRequest("reason", "required", "say why; it is recorded with the override")
        annotate(model=request.model)
        changed, routes = routing.rollback(self._state, request.model, request.reason, "admin")
        return pb.RollbackResponse(changed=changed, routing=model_routing(routes))

    @handler("ClearOverride")
    async def ClearOverride(
        self, request: pb.ClearOverrideRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClearOverrideResponse:
        annotate(model=request.model)
        changed, routes = routing.clear_override(self._state, request.model, "admin")
        return pb.ClearOverrideResponse(changed=changed, routing=model_routing(routes))

    @handler("GetShadowStats")
    async def GetShadowStats(
        self, request: pb.GetShadowStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetShadowStatsResponse:
        stats = []
        for (model, version), t in sorted(self._shadow.stats().items()):
            if request.model and model != request.model:
                continue
            n = t.compared_rows
            stats.append(pb.ShadowStats(
                model=model, shadow_version=version, sampled=t.sampled, compared_rows=n,
                dropped=t.dropped, failed=t.failed,
                mean_difference=t.sum_diff / n if n else 0.0,
                mean_absolute_difference=t.sum_abs_diff / n if n else 0.0,
                outside_served_interval=t.outside / n if n else 0.0,
                upper_bounds=DIFF_BOUNDS, counts=t.counts,
            ))
        return pb.GetShadowStatsResponse(stats=stats)
