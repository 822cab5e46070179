"""Server CPU per request by component, in process: the cost table of bench/RESULTS.md.

    .venv/bin/python bench/costs.py [--repeat 7]

Builds everything-on serving (``waybill-on``: the committed routing file with its 5%
shadow, SQLite prediction log, drift, metrics, tracing at 1% exported over OTLP to a
closed port on 127.0.0.1) as ``WaybillServer`` composes it, without binding a port, and
times each step the request path takes with the very objects it uses, for a 1-row
request (Struct rows, as most callers send) and a 64-row request (columns), pinned to
core 0. Each figure is the best of ``--repeat`` rounds of timeit (the stable figure on a
noisy VM: interference only ever adds). Then the whole predictor in process (everything
between the decoded request and the answer message, batching included, one request at a
time on an event loop), so the table shows what the steps leave out. gRPC itself (HTTP/2,
the completion queue, grpc.aio's task per call) is the ``noop-aio`` server's CPU per
request in bench/RESULTS.md, measured under load: it is not reproducible in process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import benchlib as bl
from waybill.v1 import prediction_pb2 as pb

from router.table import choose, shadow_for
from server.runtime.app import WaybillServer
from server.runtime.settings import Settings
from server.serving.ids import new_prediction_ids
from server.serving.predictor import Predictor, agreeing, answer
from server.telemetry.observe import Call, begin_call
from server.transport import convert
from server.transport.rpc import CallRecord

SIZES = (1, 64)


def best_us(fn: Callable[[], Any], repeat: int, budget_s: float = 0.25) -> float:
    """Best-of-``repeat`` time of one call in µs, each round about ``budget_s`` long."""
    fn()
    once = max(timeit.timeit(fn, number=3) / 3, 1e-7)
    number = max(1, min(20_000, int(budget_s / once)))
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind((bl.HOST, 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    bl.pin_self({0})
    os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{bl.HOST}:{closed_port()}",
                      OTEL_EXPORTER_OTLP_PROTOCOL="grpc")

    rows = bl.load_rows()
    with tempfile.TemporaryDirectory(prefix="waybill-costs-") as tmp:
        settings = Settings(registry=bl.ROOT / "models", database=str(Path(tmp) / "waybill.db"),
                            models=(bl.MODEL_NAME,), port=0, admin_port=0, metrics_port=0)
        server = WaybillServer(settings)
        try:
            snapshot = server.state.current
            version = snapshot.version(bl.MODEL_NAME, bl.MODEL_VERSION)
            table = snapshot.table
            observer = server.observer
            assert server.drift is not None and server.store is not None
            tracker = server.drift.tracker(version)
            store = server.store
            predictor = Predictor(server.state, server._executor, settings.max_rows,
                                  server.shadow, batch_max_rows=settings.batch_max_rows,
                                  batch_delay_s=settings.batch_delay_us / 1e6,
                                  observer=observer, drift=server.drift, store=store)
            rpc = observer.rpc_method("waybill.v1.PredictionService", "Predict")
            also_known = snapshot.field_names[bl.MODEL_NAME]
            metadata = bl.PIN_METADATA
            env = SimpleNamespace(
                version=version, table=table, observer=observer, tracker=tracker, store=store,
                predictor=predictor, rpc=rpc, also_known=also_known, metadata=metadata,
                repeat=args.repeat, snapshot=snapshot)
            table_rows: list[tuple[str, list[float]]] = []
            e2e: list[float] = []
            for size in SIZES:
                costs, query = _steps(size, rows, env)
                for name, cost in costs:
                    found = next((r for n, r in table_rows if n == name), None)
                    if found is None:
                        table_rows.append((name, [cost]))
                    else:
                        found.append(cost)
                e2e.append(_whole(predictor, query, args.repeat, store.flush))
        finally:
            server._executor.shutdown(wait=True)
            server._close_store()
            server.close_telemetry()
    _print(table_rows, e2e)
    return 0


def _steps(size: int, rows: list[dict[str, Any]], env: SimpleNamespace,
           ) -> tuple[list[tuple[str, float]], Any]:
    """(component, µs) for one request of ``size`` rows, and its query."""
    version, table, observer, tracker = env.version, env.table, env.observer, env.tracker
    store, predictor, rpc, also_known = env.store, env.predictor, env.rpc, env.also_known
    metadata, snapshot = env.metadata, env.snapshot
    chunk = rows[:size]
    payload = (bl.waybill_request_bytes(chunk) if size == 1
               else bl.waybill_columns_request_bytes(chunk))
    request = pb.PredictRequest.FromString(payload)
    query = convert.predict_query(request, metadata)
    columns = query.read()
    validated = version.validate(columns, also_known)
    scored = version.score(validated.matrix)
    values = scored.value.tolist()
    days: list[int | None] = ([None] * size if validated.dates is None
                              else list(validated.dates))
    ids = new_prediction_ids(size)
    reason = choose(table, bl.MODEL_NAME, bl.MODEL_VERSION, None, 0.5).reason
    outcome = answer(bl.MODEL_NAME, version, reason, query.columnar, ids, scored,
                     values, days)
    shadow_version = next(v for n, v in snapshot.versions[bl.MODEL_NAME].items()
                          if n != bl.MODEL_VERSION)
    routes = table.routes(bl.MODEL_NAME)

    def route() -> None:
        agreeing("version", "x-model-version", "", query.headers)
        agreeing("routing_key", routes.sticky_key, "", query.headers)
        choose(table, bl.MODEL_NAME, bl.MODEL_VERSION, None, 0.5)
        shadow_for(table, bl.MODEL_NAME, 0.5, served=bl.MODEL_VERSION)

    def shadow() -> None:  # what 5% of requests cost on the executor
        v = shadow_version.validate(columns, also_known)
        shadow_version.score(v.matrix)

    def log_enqueue() -> None:
        predictor._log(version, days, outcome, scored, values)

    def log_write() -> None:  # the writer thread's cost for this request's rows
        predictor._log(version, days, outcome, scored, values)
        store.flush()

    def edge() -> None:  # the handler's own bookkeeping, tracing aside
        record = CallRecord(observer, "Predict", rpc)
        record.call.fields.update(model=bl.MODEL_NAME, rows=size)
        record.close()

    def tracing() -> None:  # the 99% the sampler drops, then 1% that record
        call = begin_call({})
        observer.end_span(observer.start_span(rpc, metadata, call), call, "OK",
                          0, None)

    def metrics() -> None:
        call = Call({})
        call.model, call.version = bl.MODEL_NAME, bl.MODEL_VERSION
        observer.predicted(call, size, values, version.value_bounds,
                           outcome.delivery)
        observer.finish(rpc, call, "OK", 0, 0.001)

    steps: list[tuple[str, Callable[[], Any], float]] = [
        ("decode (protobuf parse)", lambda: pb.PredictRequest.FromString(payload),
         1.0),
        ("edge (call record, access log decision, RPC metrics)", edge, 1.0),
        ("tracing (sampling decision; 1% recorded)", tracing, 1.0),
        ("conversion (request -> columns)",
         lambda: convert.predict_query(request, metadata).read(), 1.0),
        ("validation", lambda: version.validate(columns, also_known), 1.0),
        ("routing (headers, choice, shadow draw)", route, 1.0),
        ("scoring (CatBoost, one call)", lambda: version.score(validated.matrix),
         1.0),
        ("drift", lambda: tracker.add(validated.matrix, scored.value), 1.0),
        ("ids", lambda: new_prediction_ids(size), 1.0),
        ("answer (values, interval, dates)",
         lambda: answer(bl.MODEL_NAME, version, outcome.reason, query.columnar,
                        ids, scored, scored.value.tolist(), days), 1.0),
        ("prediction log: enqueue (event loop)", log_enqueue, 1.0),
        ("prediction log: write (writer thread, a flush per request)", log_write, 1.0),
        ("metrics (rows, values, durations)", metrics, 1.0),
        ("encode (answer message, serialize)",
         lambda: convert.predict_response(outcome).SerializeToString(), 1.0),
        ("shadow (5% of requests: validate + score)", shadow, 0.05),
    ]
    costs = []
    for name, fn, share in steps:
        costs.append((name, best_us(fn, env.repeat) * share))
        store.flush()  # what a step queued for the writer is written before the next
    return costs, query


def _whole(predictor: Any, query: Any, repeat: int,
           predictor_store_flush: Callable[[], None]) -> float:
    """``Predictor.predict`` end to end, one request at a time: CPU µs of the whole process
    (the executor's and the log writer's threads too), best round."""
    from server.telemetry.observe import begin_call

    async def rounds() -> float:
        best = float("inf")
        for _ in range(repeat):
            n = 300
            start = time.process_time()
            for _ in range(n):
                begin_call({"method": "Predict"})
                await predictor.predict(query)
            predictor_store_flush()
            best = min(best, (time.process_time() - start) / n * 1e6)
        return best

    return asyncio.run(rounds())


def _print(rows: list[tuple[str, list[float]]], e2e: list[float]) -> None:
    head = [f"{s} row" if s == 1 else f"{s} rows" for s in SIZES]
    print("| component | " + " | ".join(f"µs, {h}" for h in head) + " | µs a row at 64 |")
    print("|---|" + "---:|" * (len(SIZES) + 1))
    total = [0.0] * len(SIZES)
    for name, costs in rows:
        total = [t + c for t, c in zip(total, costs, strict=True)]
        print(f"| {name} | " + " | ".join(f"{c:,.1f}" for c in costs)
              + f" | {costs[-1] / SIZES[-1]:.2f} |")
    print("| **sum of the steps** | " + " | ".join(f"**{t:,.1f}**" for t in total)
          + f" | {total[-1] / SIZES[-1]:.2f} |")
    print("| whole predictor in process (one request at a time, CPU of all threads) | "
          + " | ".join(f"{c:,.1f}" for c in e2e) + f" | {e2e[-1] / SIZES[-1]:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
