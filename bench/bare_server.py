"""Bare reference server: grpc.aio + CatBoost and nothing else (no validation, routing,
telemetry, ids or dates). Speaks waybill.v1.PredictionService/Predict so it takes the very
same request bytes as Waybill. --noop: answer an empty response (the grpc.aio floor), or
for a columnar request a prebuilt columnar answer as big as Waybill's (the floor of that
exchange: the same bytes in and out, no work in between).
--window-ms 0: predict per request on the event loop;
--window-ms W: requests arriving within W ms of the first one are scored in one call on a
single predict thread while the loop keeps accepting (the FACTS.md batching pattern)."""

from __future__ import annotations

import argparse
import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib as bl
import grpc
import numpy as np
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

FEATS = [(f["name"], f["type"]) for f in bl.model_features()]
MAX_BATCH_ROWS = 1024


def to_matrix(request: pb.PredictRequest) -> np.ndarray:
    m = np.empty((len(request.rows), len(FEATS)), dtype=object)
    for i, row in enumerate(request.rows):
        f = row.fields
        m[i] = [(f[n].string_value if t == "categorical" else
                 (1.0 if f[n].bool_value else 0.0) if t == "boolean" else f[n].number_value)
                if n in f else ("" if t == "categorical" else math.nan) for n, t in FEATS]
    return m


def to_response(out: np.ndarray) -> pb.PredictResponse:
    q = np.sort(out, axis=1)
    return pb.PredictResponse(model=bl.MODEL_NAME, version=bl.MODEL_VERSION, predictions=[
        pb.Prediction(transit_days=m, interval=pb.Interval(lower=lo, upper=hi, coverage=0.8))
        for lo, m, hi in q.tolist()])


def columnar_answer(n: int) -> pb.PredictResponse:
    """An answer shaped and sized like Waybill's to an n-row columnar request."""
    answer = pb.PredictResponse(model=bl.MODEL_NAME, version=bl.MODEL_VERSION, route_reason=1)
    answer.columns.prediction_id.extend(f"{i:032x}" for i in range(n))
    answer.columns.transit_days.extend(2.0 + i / 7 for i in range(n))
    answer.columns.lower.extend(1.0 + i / 7 for i in range(n))
    answer.columns.upper.extend(4.0 + i / 7 for i in range(n))
    answer.columns.coverage = 0.8
    answer.columns.delivery_date.extend(["2026-11-30"] * n)
    answer.columns.latest_delivery_date.extend(["2026-12-02"] * n)
    return answer


class Service(pb_grpc.PredictionServiceServicer):
    def __init__(self, window_ms: float, noop: bool = False) -> None:
        self.noop = noop
        self.columnar_answers: dict[int, pb.PredictResponse] = {}
        self.model = bl.load_regressor()
        self.window = window_ms / 1000
        self.pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.rows = 0
        self.tasks: set[asyncio.Future[None]] = set()
        self.pool = ThreadPoolExecutor(1, "predict")

    def predict(self, m: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(m, thread_count=1))

    async def Predict(self, request: pb.PredictRequest, context: object) -> pb.PredictResponse:
        if self.noop:
            if not request.columns:
                return pb.PredictResponse()
            n = max(len(c.numbers) + len(c.strings) + len(c.booleans) for c in request.columns)
            if n not in self.columnar_answers:
                self.columnar_answers[n] = columnar_answer(n)
            return self.columnar_answers[n]
        m = to_matrix(request)
        if not self.window:
            return to_response(self.predict(m))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self.pending.append((m, fut))
        self.rows += len(m)
        if len(self.pending) == 1:
            loop.call_later(self.window, self.flush)
        elif self.rows >= MAX_BATCH_ROWS:
            self.flush()
        return to_response(await fut)

    def flush(self) -> None:
        if self.pending:
            batch, self.pending, self.rows = self.pending, [], 0
            task = asyncio.ensure_future(self.score(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def score(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.pool, self.predict,
                                             np.concatenate([m for m, _ in batch]))
        except Exception as err:  # fail every caller of the batch, never hang one
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        start = 0
        for m, fut in batch:
            if not fut.done():
                fut.set_result(out[start:start + len(m)])
            start += len(m)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port-file", type=Path, required=True)
    p.add_argument("--window-ms", type=float, default=0.0)
    p.add_argument("--noop", action="store_true")
    args = p.parse_args()
    server = grpc.aio.server()
    pb_grpc.add_PredictionServiceServicer_to_server(Service(args.window_ms, args.noop), server)
    port = server.add_insecure_port(f"{bl.HOST}:0")
    await server.start()
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(args.port_file)  # the port file appears whole: the ready signal
    await server.wait_for_termination()  # SIGTERM ends the process


if __name__ == "__main__":
    asyncio.run(main())
