"""Telling people about alert changes: a span event, and optionally Alertmanager and a webhook.

Two destinations, each optional, each with its own format:

- **Alertmanager** (``--alertmanager URL``, repeatable for an HA pair): Alertmanager's API,
  ``POST <base>/api/v2/alerts`` with a JSON *array* of PostableAlerts, the way Prometheus
  feeds it. An alert is posted when it fires and when it resolves (``endsAt`` the resolve
  time), and every firing alert is posted again every ``resend_s`` with ``endsAt`` a few
  intervals ahead, so Alertmanager keeps it active while it fires and lets it resolve on its
  own when the server that fires it dies. Alerts restored as firing after a restart are posted
  at the first evaluation that sees them.
- **Webhook** (``--alert-webhook URL``): the JSON that Alertmanager sends *to its receivers*
  (webhook format version 4), once per firing and resolved, for a chat bridge, a paging
  integration or anything else that already receives Alertmanager notifications. It is not
  what Alertmanager's own API accepts.

Every destination has one background thread and a bounded queue: a slow or dead receiver
costs dropped or failed posts (logged, and counted in ``waybill_alert_notifications_total``),
never a stalled evaluation, and a dead Alertmanager does not hold up its HA partner. The log
line about the change itself and the alert metrics are the engine's
(server/serving/alerting.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace

from models.calendar import utc_now, utc_text
from server.monitoring.alerts import Change, Instance, State, verdict_text
from server.monitoring.rules import AlertRule, Metric
from server.telemetry.observe import Observer

log = logging.getLogger("waybill.notify")
QUEUE_MAX = 256
_STOP = object()
ALERTS_PATH = "/api/v2/alerts"
# Prometheus re-sends firing alerts every minute (its --rules.alert.resend-delay) with endsAt
# 4 resend intervals ahead; Waybill does the same. Alertmanager resolves an alert at its
# endsAt, or, when a post carries none, resolve_timeout (default 5 min) after the last post.
# The interval must stay well inside both, so that one or two lost posts (an Alertmanager
# restarting, a network blip) never resolve an alert that still fires: 1 min against endsAt
# 4 min ahead and a 5 min resolve_timeout leaves three posts to lose. Too long an interval
# (or an evaluation interval beyond it: re-sends happen at evaluations) and a firing alert
# flaps resolved between posts.
RESEND_S = 60.0
ENDS_AFTER_RESENDS = 4
NO_END = "0001-01-01T00:00:00Z"  # Go's zero time, as Alertmanager's webhook writes it


def _labels(instance: Instance, extra_labels: dict[str, str] | None) -> dict[str, str]:
    """Labels are the alert's identity in Alertmanager (its fingerprint): only what names the
    alert and the process, never the value. ``extra_labels`` name the process (instance,
    worker): each one evaluates its own share of traffic, so one's "resolved" must not close
    another's "firing"."""
    rule = instance.rule
    return {"alertname": rule.name, "severity": rule.severity.value,
            "model": instance.model, "version": instance.version,
            "metric": rule.metric.value, "service": "waybill", **(extra_labels or {})}


def _annotations(instance: Instance, state: str) -> dict[str, str]:
    rule = instance.rule
    if rule.metric == Metric.JUDGE:
        return {
            "summary": rule.summary or f"canary {instance.model} {instance.version} judged "
                                       f"{instance.decided.value.replace('_', ' ')}",
            "description": (f"judge: {verdict_text(instance)}; state {state}; "
                            f"action {rule.action.value}"),
        }
    value = "no data" if instance.value is None else f"{instance.value:.4g}"
    return {
        "summary": rule.summary or f"{rule.metric.value} {rule.op} {rule.threshold:g} "
                                   f"on {instance.model} {instance.version}",
        "description": (f"{rule.metric.value} = {value} over {instance.samples} samples "
                        f"({rule.op} {rule.threshold:g}); state {state}; "
                        f"action {rule.action.value}"),
    }


def alertmanager_payload(change: Change, external_url: str = "",
                         extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """One alert as the webhook JSON Alertmanager sends to its receivers (``version`` "4"):
    the ``--alert-webhook`` body. Alertmanager's own API takes :func:`postable_alert`."""
    instance, rule = change.instance, change.instance.rule
    status = "resolved" if change.state.value in ("resolved", "inactive") else "firing"
    labels = _labels(instance, extra_labels)
    annotations = _annotations(instance, change.state.value)
    fingerprint = hashlib.sha256(
        json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    alert = {"status": status, "labels": labels, "annotations": annotations,
             "startsAt": instance.started_at or utc_now(),
             "endsAt": utc_now() if status == "resolved" else NO_END,
             "generatorURL": external_url, "fingerprint": fingerprint}
    return {"version": "4", "groupKey": f"{{}}:{{alertname=\"{rule.name}\"}}",
            "truncatedAlerts": 0, "status": status, "receiver": "waybill",
            "groupLabels": {"alertname": rule.name}, "commonLabels": labels,
            "commonAnnotations": annotations, "externalURL": external_url,
            "alerts": [alert]}


def postable_alert(instance: Instance, state: str, ends_at: str, generator_url: str = "",
                   extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """One alert as Alertmanager's API takes it (a PostableAlert; post a list of them).

    ``ends_at`` is when Alertmanager should consider it resolved: the resolve time for a
    resolved alert, a few re-send intervals ahead for a firing one."""
    now = utc_now()
    return {"labels": _labels(instance, extra_labels),
            "annotations": _annotations(instance, state),
            # Never after endsAt, which Alertmanager refuses (a clock stepped backwards).
            "startsAt": min(instance.started_at or now, ends_at),
            "endsAt": ends_at, "generatorURL": generator_url}


def _target(url: str) -> str:
    """scheme://host:port of a URL, for logs and metric labels (never a path or query)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class _Poster:
    """One destination: a bounded queue and the one thread that POSTs its JSON bodies."""

    def __init__(self, receiver: str, url: str, timeout_s: float) -> None:
        self.receiver = receiver  # "alertmanager" or "webhook"
        self.url = url
        self.target = _target(url)
        self._timeout = timeout_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_MAX)
        self._thread = threading.Thread(target=self._loop, name=f"waybill-{receiver}",
                                        daemon=True)
        self._thread.start()

    def offer(self, body: object) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.dropped += 1
            log.warning("alert notification dropped: queue full", extra={"fields": {
                "receiver": self.receiver, "target": self.target}})

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            request = urllib.request.Request(self.url, data=json.dumps(item).encode(),
                                             method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    response.read()
                self.sent += 1
            except (urllib.error.URLError, OSError, ValueError) as err:
                self.failed += 1
                detail = str(err)
                if isinstance(err, urllib.error.HTTPError):
                    # Alertmanager says what it refused in the body (e.g. a 400's reason).
                    with contextlib.suppress(OSError):
                        detail += ": " + err.read(300).decode(errors="replace").strip()
                log.warning("alert notification failed", extra={"fields": {
                    "receiver": self.receiver, "target": self.target, "error": detail}})

    def close(self, timeout_s: float) -> None:
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)


class Notifier:
    """Span events for every change; posts to Alertmanager(s) and the webhook when set.

    The engine calls :meth:`notify` for each change and :meth:`firing` after each evaluation
    with every instance that fires. Why the engine hands over the firing set rather than the
    notifier keeping its own from the changes it sees: the engine already holds every
    instance, including the ones restored as firing after a restart, which exist only once
    an evaluation has read their rule from the routing file (the event log knows the rule's
    name, not its severity or summary). A second copy here would have to be seeded, kept in
    step with edited and removed rules, and could disagree with the engine's.
    """

    def __init__(self, tracer: trace.Tracer | None, webhook_url: str | None = None,
                 external_url: str = "", timeout_s: float = 5.0,
                 labels: dict[str, str] | None = None,
                 alertmanagers: Sequence[str] = (), resend_s: float = RESEND_S,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 per_process: Callable[[AlertRule], bool] = lambda rule: True) -> None:
        self._tracer = tracer
        self._labels = dict(labels or {})
        # Whether a rule's alerts are this process's own (its evidence: drift, errors,
        # latency), labelled with ``labels``; the others (accuracy over outcomes every
        # replica shares) carry no process labels, so whichever replica posts them,
        # Alertmanager sees one alert and pages once.
        self._per_process = per_process
        self._external_url = external_url
        self._resend = resend_s
        self._clock = clock
        self._wall = wall
        self._webhook = (_Poster("webhook", webhook_url, timeout_s)
                         if webhook_url else None)
        self._alertmanagers = [_Poster("alertmanager", url.rstrip("/") + ALERTS_PATH,
                                       timeout_s) for url in alertmanagers]
        # (model, rule, version) of the firing alerts Alertmanager has been told about; an
        # instance firing without having been posted (restored after a restart) is posted
        # at the next evaluation, not a resend interval later.
        self._posted: set[tuple[str, str, str]] = set()
        self._next_resend = clock() + resend_s

    @property
    def sent(self) -> int:
        return sum(p.sent for p in self._posters())

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self._posters())

    @property
    def dropped(self) -> int:
        return sum(p.dropped for p in self._posters())

    def _posters(self) -> list[_Poster]:
        return [*self._alertmanagers, *([self._webhook] if self._webhook else [])]

    def register_metrics(self, observer: Observer) -> None:
        observer.observe_counter(
            "waybill.alert.notifications", "{post}",
            "Alert posts to Alertmanager and the webhook: sent, failed, or dropped (queue full)",
            lambda: [(n, {"receiver": p.receiver, "target": p.target, "result": result})
                     for p in self._posters()
                     for result, n in (("sent", p.sent), ("failed", p.failed),
                                       ("dropped", p.dropped))])

    def notify(self, change: Change) -> None:
        instance, rule = change.instance, change.instance.rule
        if self._tracer is not None:
            # A short span of its own: the evaluation is not part of any request's trace.
            with self._tracer.start_as_current_span("waybill.alert") as span:
                span.add_event(f"alert.{change.state.value}", {
                    "waybill.alert.rule": rule.name, "waybill.model": instance.model,
                    "waybill.version": instance.version,
                    "waybill.alert.severity": rule.severity.value,
                    "waybill.alert.value": -1.0 if instance.value is None else instance.value,
                    "waybill.alert.samples": instance.samples})
        if change.state not in (State.FIRING, State.RESOLVED):
            return  # pending, or a pending that cleared: it never fired, nobody is told
        if self._webhook is not None:
            self._webhook.offer(alertmanager_payload(change, self._external_url,
                                                     self._extra(rule)))
        if not self._alertmanagers:
            return
        key = (instance.model, rule.name, instance.version)
        if change.state == State.FIRING:
            self._posted.add(key)
            self._post([instance])
        else:
            self._posted.discard(key)
            now = utc_text(self._wall())
            self._post([instance], state="resolved", ends_at=now)

    def firing(self, instances: Iterable[Instance]) -> None:
        """After each evaluation: every alert that fires now. Re-posted to Alertmanager when
        the resend interval has passed, and at once when one was never posted (restored)."""
        if not self._alertmanagers:
            return
        now = self._clock()
        firing = [i for i in instances if i.state == State.FIRING]
        keys = {(i.model, i.rule.name, i.version) for i in firing}
        if now < self._next_resend and keys <= self._posted:
            return
        self._posted = keys
        self._next_resend = now + self._resend
        if firing:
            self._post(firing)

    def _post(self, instances: list[Instance], state: str = "firing",
              ends_at: str | None = None) -> None:
        if ends_at is None:
            ends_at = utc_text(self._wall() + ENDS_AFTER_RESENDS * self._resend)
        body = [postable_alert(i, state, ends_at, self._external_url, self._extra(i.rule))
                for i in instances]
        for poster in self._alertmanagers:
            poster.offer(body)

    def _extra(self, rule: AlertRule) -> dict[str, str]:
        return self._labels if self._per_process(rule) else {}

    def close(self, timeout_s: float = 2.0) -> None:
        for poster in self._posters():
            poster.close(timeout_s)
