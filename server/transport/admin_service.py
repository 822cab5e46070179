"""waybill.v1.AdminService: decode, one call, encode."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable

import grpc
from waybill.v1 import admin_pb2 as pb
from waybill.v1 import admin_pb2_grpc as pb_grpc

from router.table import ModelRoutes, resolve
from server.monitoring.alerts import Instance, evidence, p_value
from server.monitoring.drift import BinShare, DriftReport, FeatureDrift, WindowReport
from server.monitoring.shadow_stats import DIFF_BOUNDS, ShadowStats
from server.monitoring.trackers import DriftBook
from server.serving.alerting import AlertEngine
from server.serving.errors import BadRequest, Unavailable
from server.serving.journal import EVENT_KINDS, Journal
from server.serving.overrides import clear_override, rollback
from server.serving.reloads import RoutingReloader
from server.serving.state import ServingState
from server.storage.base import Accuracy, Event, Store
from server.telemetry.observe import Observer
from server.transport.rpc import Edge, annotate, handler

MAX_EVENTS = 1000


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


def _bin_shares(bins: Iterable[BinShare]) -> list[pb.BinShare]:
    return [pb.BinShare(label=b.label, reference=b.reference, current=b.current,
                        contribution=b.contribution) for b in bins]


def feature_drift(feature: FeatureDrift) -> pb.FeatureDrift:
    message = pb.FeatureDrift(
        name=feature.name, kind=feature.kind, rows=feature.rows, psi=feature.psi,
        missing_rate=feature.missing_rate, reference_missing_rate=feature.reference_missing_rate,
        drifted=feature.drifted,
        bins=_bin_shares(feature.bins), top_bins=_bin_shares(feature.top_bins),
    )
    for name in ("ks_statistic", "ks_pvalue", "chi2_statistic", "chi2_pvalue", "unseen_rate"):
        value = getattr(feature, name)
        if value is not None:
            setattr(message, name, value)
    return message


def drift_window(window: WindowReport) -> pb.DriftWindow:
    return pb.DriftWindow(
        started_at=window.started_at, ended_at=window.ended_at or 0.0, rows=window.rows,
        status=window.status, features=[feature_drift(f) for f in window.features],
        prediction=feature_drift(window.prediction), max_psi=window.max_psi or 0.0,
        max_psi_feature=window.max_psi_feature or "")


def version_drift(report: DriftReport, windows: int) -> pb.VersionDrift:
    completed = report.completed[:windows] if windows else report.completed
    return pb.VersionDrift(model=report.model, version=report.version,
                           current=drift_window(report.current),
                           completed=[drift_window(w) for w in completed])


def version_accuracy(accuracy: Accuracy, kind: str) -> pb.VersionAccuracy:
    """``kind`` is the version's, or "" when it is no longer served here."""
    message = pb.VersionAccuracy(model=accuracy.model, version=accuracy.version,
                                 outcomes=accuracy.outcomes, mae=accuracy.mae or 0.0,
                                 bias=accuracy.bias or 0.0, coverage=accuracy.coverage or 0.0,
                                 kind=kind, has_interval=accuracy.coverage is not None,
                                 on_time=accuracy.on_time, log_loss=accuracy.log_loss,
                                 accuracy=accuracy.accuracy, brier=accuracy.brier)
    return message


def judge_verdict(instance: Instance) -> pb.JudgeVerdict:
    """A judge rule's instance as its verdict (the instance must have one)."""
    rule, judged = instance.rule, instance.judged
    assert judged is not None
    v = judged.verdict
    message = pb.JudgeVerdict(
        rule=rule.name, version=instance.version, stable_version=judged.stable,
        outcome=instance.decided.value, current=v.outcome.value, low=v.low,
        evidence=evidence(instance), p_value=p_value(instance), e_worse=v.e_worse,
        e_not_worse=v.e_not_worse, samples_canary=v.samples_canary,
        samples_stable=v.samples_stable, periods=judged.periods, alpha=rule.alpha,
        min_effect=rule.min_effect, period_seconds=rule.period_s,
        min_samples=rule.min_samples)
    if v.effect is not None:
        message.effect = v.effect
    if math.isfinite(v.high):
        message.high = v.high
    return message


def alert(instance: Instance) -> pb.Alert:
    rule = instance.rule
    message = pb.Alert(rule=rule.name, model=instance.model, version=instance.version,
                       state=instance.state.value, metric=rule.metric.value, op=rule.op,
                       threshold=rule.threshold, samples=instance.samples,
                       min_samples=rule.min_samples, severity=rule.severity.value,
                       action=rule.action.value, since=instance.started_at
                       if instance.state.value != "inactive" else "")
    if instance.value is not None:
        message.value = instance.value
    if instance.judged is not None:
        message.judge.CopyFrom(judge_verdict(instance))
    return message


def event(item: Event) -> pb.Event:
    message = pb.Event(id=item.id, at=item.at, kind=item.kind, model=item.model,
                       version=item.version, rule=item.rule, state=item.state,
                       reason=item.reason, actor=item.actor,
                       detail_json=json.dumps(item.detail, sort_keys=True))
    if item.value is not None:
        message.value = item.value
    return message


class AdminService(pb_grpc.AdminServiceServicer):
    NAME = "AdminService"

    def __init__(self, state: ServingState, reloader: RoutingReloader | None,
                 shadow: ShadowStats, default_deadline_s: float,
                 observer: Observer | None = None, *, journal: Journal | None = None,
                 drift: DriftBook | None = None, store: Store | None = None,
                 alerts: AlertEngine | None = None, accuracy_window_s: float = 3600.0) -> None:
        self._state = state
        self._reloader = reloader
        self._shadow = shadow
        self._journal = journal or Journal(None)
        self._drift = drift
        self._store = store
        self._alerts = alerts
        self._accuracy_window_s = accuracy_window_s
        self.edge = Edge(pb.DESCRIPTOR.services_by_name[self.NAME], default_deadline_s,
                         observer)

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
        changed, routes = rollback(self._state, request.model, request.reason, "admin")
        if changed:
            await self._journal.rolled_back(request.model, routes)
        return pb.RollbackResponse(changed=changed, routing=model_routing(routes))

    @handler("ClearOverride")
    async def ClearOverride(
        self, request: pb.ClearOverrideRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClearOverrideResponse:
        annotate(model=request.model)
        changed, routes = clear_override(self._state, request.model, "admin")
        if changed:
            await self._journal.cleared(request.model, routes, "admin")
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

    @handler("GetDrift")
    async def GetDrift(
        self, request: pb.GetDriftRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDriftResponse:
        if self._drift is None:
            raise Unavailable("drift tracking is off")
        snapshot = self._state.current
        if request.model:
            snapshot.table.routes(request.model)  # NOT_FOUND naming the served models
        trackers = []
        for model, versions in sorted(snapshot.versions.items()):
            if request.model and model != request.model:
                continue
            # A version or a label (by what it names, even while rolled back).
            wanted = snapshot.table.routes(model).labels.get(request.version, request.version)
            if wanted and wanted not in versions:
                resolve(snapshot.table, model, wanted)  # NOT_FOUND listing what exists
            for version, loaded in versions.items():
                if not wanted or version == wanted:
                    trackers.append(self._drift.tracker(loaded))
        # Statistics are computed here, on demand, never on the request path.
        reports = await asyncio.to_thread(lambda: [t.report() for t in trackers])
        return pb.GetDriftResponse(versions=[version_drift(r, request.windows)
                                             for r in reports])

    @handler("GetAccuracy")
    async def GetAccuracy(
        self, request: pb.GetAccuracyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAccuracyResponse:
        if self._store is None:
            raise Unavailable("accuracy needs the prediction log; this server runs with "
                              "--no-database")
        if not request.model:
            raise BadRequest("model", "required", "is required (see ListModels)")
        self._state.current.table.routes(request.model)  # NOT_FOUND naming the served models
        window = request.window_seconds or self._accuracy_window_s
        if not 0 < window <= 366 * 86400:
            raise BadRequest("window_seconds", "out_of_range", "must be from 0 to one year")
        found = await asyncio.to_thread(self._store.accuracy, request.model, window)
        served = self._state.current.versions.get(request.model, {})

        def kind(version: str) -> str:
            loaded = served.get(version)
            return "" if loaded is None else loaded.output.kind.value

        judged = [judge_verdict(i) for i in (self._alerts.instances() if self._alerts else [])
                  if i.model == request.model and i.judged is not None]
        return pb.GetAccuracyResponse(
            window_seconds=window, versions=[version_accuracy(a, kind(a.version)) for a in found],
            judged=judged)

    @handler("ListAlerts")
    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertsResponse:
        instances = self._alerts.instances() if self._alerts is not None else []
        return pb.ListAlertsResponse(alerts=[alert(i) for i in instances
                                             if not request.model or i.model == request.model])

    @handler("ListEvents")
    async def ListEvents(
        self, request: pb.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEventsResponse:
        if self._store is None:
            raise Unavailable("the event log needs the database; this server runs with "
                              "--no-database")
        limit = request.limit or 100
        if limit > MAX_EVENTS:
            raise BadRequest("limit", "too_large", f"at most {MAX_EVENTS}")
        for i, kind in enumerate(request.kinds):
            if kind not in EVENT_KINDS:
                raise BadRequest(f"kinds[{i}]", "unknown",
                                 f"is not an event kind; the kinds are {', '.join(EVENT_KINDS)}")
        found = await asyncio.to_thread(
            self._store.events, model=request.model or None, after_id=request.after_id,
            limit=limit, kinds=tuple(request.kinds))
        return pb.ListEventsResponse(events=[event(e) for e in found])
