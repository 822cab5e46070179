"""Telling people about alert changes: a span event, and optionally a webhook.

The webhook body is Alertmanager's webhook format (version 4), so anything that
already receives Alertmanager notifications (a chat bridge, PagerDuty's
integration, a paging router) can receive Waybill's in-process alerts as well.
Posts happen on one background thread with a bounded queue: a slow or dead
receiver costs dropped notifications (counted and logged), never a stalled
evaluation. The log line and the metrics are the engine's (server/serving/alerting.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import Any

from opentelemetry import trace

from models.calendar import utc_now
from server.monitoring.alerts import Change

log = logging.getLogger("waybill.notify")
QUEUE_MAX = 256
_STOP = object()


def alertmanager_payload(change: Change, external_url: str = "",
                         extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """One alert as Alertmanager's webhook JSON (``version`` "4").

    ``extra_labels`` name the process (host, worker): each one evaluates its own share of
    traffic, so one's "resolved" must not close another's "firing".
    """
    instance, rule = change.instance, change.instance.rule
    status = "resolved" if change.state.value in ("resolved", "inactive") else "firing"
    labels = {"alertname": rule.name, "severity": rule.severity.value,
              "model": instance.model, "version": instance.version,
              "metric": rule.metric.value, "service": "waybill", **(extra_labels or {})}
    value = "no data" if instance.value is None else f"{instance.value:.4g}"
    annotations = {
        "summary": rule.summary or f"{rule.metric.value} {rule.op} {rule.threshold:g} "
                                   f"on {instance.model} {instance.version}",
        "description": (f"{rule.metric.value} = {value} over {instance.samples} samples "
                        f"({rule.op} {rule.threshold:g}); state {change.state.value}; "
                        f"action {rule.action.value}"),
    }
    fingerprint = hashlib.sha256(
        json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    alert = {"status": status, "labels": labels, "annotations": annotations,
             "startsAt": instance.started_at or utc_now(),
             "endsAt": utc_now() if status == "resolved" else "0001-01-01T00:00:00Z",
             "generatorURL": external_url, "fingerprint": fingerprint}
    return {"version": "4", "groupKey": f"{{}}:{{alertname=\"{rule.name}\"}}",
            "truncatedAlerts": 0, "status": status, "receiver": "waybill",
            "groupLabels": {"alertname": rule.name}, "commonLabels": labels,
            "commonAnnotations": annotations, "externalURL": external_url,
            "alerts": [alert]}


class Notifier:
    def __init__(self, tracer: trace.Tracer | None, webhook_url: str | None = None,
                 external_url: str = "", timeout_s: float = 5.0,
                 labels: dict[str, str] | None = None) -> None:
        self._tracer = tracer
        self._labels = dict(labels or {})
        self._url = webhook_url
        self._external_url = external_url
        self._timeout = timeout_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        if webhook_url:
            self._thread = threading.Thread(target=self._post_loop, name="waybill-webhook",
                                            daemon=True)
            self._thread.start()

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
        if self._thread is None or change.state.value == "pending":
            return  # Alertmanager receivers know firing and resolved only
        if change.state.value == "inactive":
            return  # a pending alert that cleared never fired: nobody was told
        try:
            self._queue.put_nowait(alertmanager_payload(change, self._external_url,
                                                        self._labels))
        except queue.Full:
            self.dropped += 1
            log.warning("webhook queue full: notification dropped",
                        extra={"fields": {"rule": rule.name}})

    def _post_loop(self) -> None:
        assert self._url is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            body = json.dumps(item).encode()
            request = urllib.request.Request(self._url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    response.read()
                self.sent += 1
            except (urllib.error.URLError, OSError, ValueError) as err:
                self.failed += 1
                log.warning("webhook failed", extra={"fields": {"error": str(err)}})

    def close(self, timeout_s: float = 2.0) -> None:
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:
                return
            self._thread.join(timeout_s)
