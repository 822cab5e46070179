"""The one place that says how each Waybill configuration is started.

Add flags here as the server grows them (batching window, tracing, drift, prediction
log, --workers); every benchmark reads this dict. ``cpus`` is the taskset list the
server is pinned to; a multi-worker configuration needs its own cores (and then the
load generator shares a core with it: say so when reporting it).
"""

from __future__ import annotations

from typing import TypedDict


class WaybillConfig(TypedDict):
    args: list[str]  # after `waybill serve --host 127.0.0.1 --port 0 --port-file F --registry R`
    cpus: str
    description: str


WAYBILL_CONFIGS: dict[str, WaybillConfig] = {
    # Everything optional off: no tracing, no drift, no prediction log.
    "waybill-off": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--no-routing", "--no-metrics",
                 "--log-level", "warning"],
        "cpus": "0",
        "description": "no routing file, no metrics endpoint, no access log; batching on "
                       "(tracing is off unless OTEL_* is set)",
    },
    # Everything on, as production runs it.
    "waybill-on": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--metrics-port", "0"],
        "cpus": "0",
        "description": "routing file with 5% shadow, metrics, JSON access log, batching "
                       "(no OTLP collector here, so no tracing; drift and the prediction "
                       "log do not exist yet)",
    },
    # Example for later (the target "2 workers >= 1.7x one"):
    # "waybill-on-2w": {"args": ["--model", "delivery_eta", "--workers", "2"], "cpus": "0,1",
    #                   "description": "two worker processes (shares core 1 with the generator)"},
}
