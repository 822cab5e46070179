"""Does a bidirectional streaming Predict beat unary calls? Transport first, then Waybill.

Echo (the default): both sides do nothing but gRPC. The server (grpc.aio, pinned to
core 0) answers every message with an empty one, over a unary method and over a
bidirectional stream; the client (core 1) sends the same Predict request bytes as the
main suite. Unary: 32 concurrent callers. Streaming: 4 streams with 8 messages in flight
on each (32 in all). A Predict does its own work on top of either, so this bounds what
streaming can save per message.

``--waybill CONFIG`` (a name from waybill_configs.py, e.g. waybill-on): the same two
loads against a real Waybill server, Predict against PredictStream, single-row requests
cycling through the suite's rows. Prints messages/s and server CPU per message for both,
and the ratio.

    .venv/bin/python bench/stream_vs_unary.py [--duration 5] [--waybill waybill-on]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import benchlib as bl
import grpc
from waybill.v1 import prediction_pb2 as pb

SERVICE = "bench.Echo"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
CALLERS = 32
STREAMS, IN_FLIGHT = 4, 8


async def serve(port_file: Path) -> None:
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    async def stream(requests: object, context: grpc.aio.ServicerContext) -> object:
        async for _ in requests:  # type: ignore[attr-defined]
            yield b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
    }),))
    port = server.add_insecure_port(f"{bl.HOST}:0")
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


async def unary_load(target: str, seconds: float, payloads: list[bytes],
                     method: str) -> int:
    done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        deadline = time.monotonic() + seconds

        async def caller(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < deadline:
                await call(payloads[i % len(payloads)])
                done += 1
                i += CALLERS

        await asyncio.gather(*(caller(k) for k in range(CALLERS)))
    return done


async def stream_load(target: str, seconds: float, payloads: list[bytes],
                      method_name: str) -> int:
    done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.stream_stream(method_name)
        deadline = time.monotonic() + seconds

        async def one_stream(k: int) -> None:
            nonlocal done
            call = method()
            i = k
            for _ in range(IN_FLIGHT):  # keep IN_FLIGHT messages outstanding
                await call.write(payloads[i % len(payloads)])
                i += STREAMS
            while time.monotonic() < deadline:
                await call.read()
                done += 1
                await call.write(payloads[i % len(payloads)])
                i += STREAMS
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                done += 1

        await asyncio.gather(*(one_stream(k) for k in range(STREAMS)))
    return done


def measure(kind: str, target: str, pid: int, seconds: float,
            payloads: tuple[list[bytes], list[bytes]],
            methods: tuple[str, str]) -> tuple[float, float]:
    """(messages/s, server CPU us per message); payloads and methods: (unary, stream)."""
    def load(duration: float) -> int:
        if kind == "unary":
            return asyncio.run(unary_load(target, duration, payloads[0], methods[0]))
        return asyncio.run(stream_load(target, duration, payloads[1], methods[1]))

    load(0.5)  # warm-up
    cpu0, t0 = bl.tree_cpu_seconds(pid), time.monotonic()
    done = load(seconds)
    cpu1, t1 = bl.tree_cpu_seconds(pid), time.monotonic()
    return done / (t1 - t0), (cpu1 - cpu0) / done * 1e6


def start_echo(work: Path) -> bl.Proc:
    port_file = work / "port"
    port_file.unlink(missing_ok=True)
    return bl.Proc("echo", [bl.VENV_PY, Path(__file__), "--serve", port_file], bl.SERVER_CPU,
                   work / "server.log", cwd=bl.BENCH).start()


def wait_echo(server: bl.Proc, port_file: Path) -> int:
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if not server.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the echo server did not start:\n{server.tail()}")
        time.sleep(0.05)
    return int(port_file.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--waybill", metavar="CONFIG",
                        help="measure Predict against PredictStream on this Waybill config")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    bl.pin_self({int(bl.CLIENT_CPU)})
    work = bl.RUN_DIR / "stream_vs_unary"
    work.mkdir(parents=True, exist_ok=True)
    if args.waybill:
        server, port = bl.start_waybill(args.waybill, work)
        unary = [bl.waybill_request_bytes([row]) for row in bl.load_rows()]
        streamed = [pb.PredictStreamRequest(request=pb.PredictRequest.FromString(p))
                    .SerializeToString() for p in unary]
        payloads = (unary, streamed)
        methods = (bl.PREDICT_METHOD, bl.PREDICT_METHOD + "Stream")
    else:
        server, port = start_echo(work), 0
        echo = [bl.waybill_request_bytes(bl.load_rows(1))]
        payloads = (echo, echo)
        methods = (UNARY, STREAM)
    try:
        if not args.waybill:
            port = wait_echo(server, work / "port")
        target = f"{bl.HOST}:{port}"
        results = {kind: measure(kind, target, server.pid, args.duration, payloads, methods)
                   for kind in ("unary", "stream", "unary", "stream")}  # the second pair wins
    finally:
        server.stop()
    (u_rate, u_cpu), (s_rate, s_cpu) = results["unary"], results["stream"]
    print(f"unary  ({CALLERS} callers):              {u_rate:8,.0f} msg/s  "
          f"server {u_cpu:6.1f} us CPU/msg")
    print(f"stream ({STREAMS} streams x {IN_FLIGHT} in flight):   {s_rate:8,.0f} msg/s  "
          f"server {s_cpu:6.1f} us CPU/msg")
    print(f"stream / unary: {s_rate / u_rate:.2f}x messages/s, "
          f"{s_cpu / u_cpu:.2f}x server CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
