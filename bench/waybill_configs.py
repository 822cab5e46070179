"""The one place that says how each Waybill configuration is started.

Add flags here as the server grows them (batching window, tracing, drift, prediction
log, --workers); every benchmark reads this dict. ``cpus`` is the taskset list the
server is pinned to; a multi-worker configuration needs its own cores (and then the
load generator shares a core with it: say so when reporting it).
"""

from __future__ import annotations

from typing import TypedDict


class WaybillConfig(TypedDict, total=False):
    # after `waybill serve --host 127.0.0.1 --port 0 --port-file F --registry R`;
    # "{workdir}" is replaced by the run's working directory, "{postgres}" by the URL of a
    # fresh database on a throwaway PostgreSQL cluster (benchlib.postgres_url)
    args: list[str]
    cpus: str
    description: str
    otlp: bool  # export traces (default sampling) and metrics to bench/otlp_sink.py
    # False: not in run.py's table unless named by --only (ab.py comparisons; they add
    # minutes to `make bench`, and the PostgreSQL ones need the postgresql package)
    suite: bool


WAYBILL_CONFIGS: dict[str, WaybillConfig] = {
    # Everything optional off.
    "waybill-off": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--no-routing", "--no-metrics",
                 "--no-database", "--no-drift", "--alert-interval", "0",
                 "--log-level", "warning"],
        "cpus": "0",
        "description": "no routing file, no metrics endpoint, no access log, no prediction "
                       "log, no drift, no alerts, no tracing; batching on",
    },
    # Everything on, as production runs it.
    "waybill-on": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--metrics-port", "0",
                 "--database", "{workdir}/waybill.db"],
        "cpus": "0",
        "otlp": True,
        "description": "every default: committed routing file (5% shadow, 7 alert rules), "
                       "metrics endpoint, JSON access log (failed, slow and traced calls), "
                       "prediction log (SQLite), drift, tracing at the default 1% sampling "
                       "exported over OTLP to a sink on core 1, batching",
    },
    # The prediction log alone, on each backend: what the log costs against waybill-off.
    "waybill-off-log": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--no-routing", "--no-metrics",
                 "--database", "{workdir}/waybill.db", "--no-drift", "--alert-interval", "0",
                 "--log-level", "warning"],
        "cpus": "0",
        "suite": False,
        "description": "waybill-off with the prediction log on (SQLite)",
    },
    "waybill-off-pglog": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--no-routing", "--no-metrics",
                 "--database", "{postgres}", "--no-drift", "--alert-interval", "0",
                 "--log-level", "warning"],
        "cpus": "0",
        "suite": False,
        "description": "waybill-off with the prediction log on PostgreSQL (the database's "
                       "processes on core 1)",
    },
    # Everything on, the log in PostgreSQL as replicas run it.
    "waybill-on-pg": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--metrics-port", "0",
                 "--database", "{postgres}"],
        "cpus": "0",
        "suite": False,
        "otlp": True,
        "description": "waybill-on with the prediction, outcome and event log in PostgreSQL "
                       "(a throwaway cluster on core 1, with the load generator and the "
                       "OTLP sink)",
    },
    # Two workers on one port: the server gets both cores, so the load generator shares
    # a core with it; compare with waybill-on only as "what a second core buys".
    "waybill-on-2w": {
        "args": ["--model", "delivery_eta", "--admin-port", "0", "--metrics-port", "0",
                 "--database", "{workdir}/waybill.db", "--workers", "2"],
        "cpus": "0,1",
        "otlp": True,
        "description": "waybill-on with --workers 2 on cores 0,1 (the load generator shares "
                       "core 1)",
    },
}
