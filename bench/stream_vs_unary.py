"""Would a bidirectional streaming Predict beat unary calls? Measure the transport first.

Both sides do nothing but gRPC: the server (grpc.aio, pinned to core 0) answers every
message with an empty one, over a unary method and over a bidirectional stream; the
client (core 1) sends the same Predict request bytes as the main suite. Unary: 32
concurrent callers. Streaming: 4 streams with 8 messages in flight on each (32 in all).
A Predict does its own work on top of either, so if the do-nothing stream is not much
cheaper per message than the do-nothing unary call, streaming cannot make Predict much
faster. Prints messages/s and server CPU per message for both, and the ratio.

    .venv/bin/python bench/stream_vs_unary.py [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import benchlib as bl
import grpc

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


async def unary_load(target: str, seconds: float, payload: bytes) -> int:
    done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(UNARY)
        deadline = time.monotonic() + seconds

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await call(payload)
                done += 1

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return done


async def stream_load(target: str, seconds: float, payload: bytes) -> int:
    done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.stream_stream(STREAM)
        deadline = time.monotonic() + seconds

        async def one_stream() -> None:
            nonlocal done
            call = method()
            for _ in range(IN_FLIGHT):  # keep IN_FLIGHT messages outstanding
                await call.write(payload)
            while time.monotonic() < deadline:
                await call.read()
                done += 1
                await call.write(payload)
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                done += 1

        await asyncio.gather(*(one_stream() for _ in range(STREAMS)))
    return done


def measure(kind: str, target: str, pid: int, seconds: float, payload: bytes) -> tuple[float,
                                                                                        float]:
    load = unary_load if kind == "unary" else stream_load
    asyncio.run(load(target, 0.5, payload))  # warm-up
    cpu0, t0 = bl.tree_cpu_seconds(pid), time.monotonic()
    done = asyncio.run(load(target, seconds, payload))
    cpu1, t1 = bl.tree_cpu_seconds(pid), time.monotonic()
    return done / (t1 - t0), (cpu1 - cpu0) / done * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    bl.pin_self({int(bl.CLIENT_CPU)})
    work = bl.RUN_DIR / "stream_vs_unary"
    work.mkdir(parents=True, exist_ok=True)
    port_file = work / "port"
    port_file.unlink(missing_ok=True)
    server = bl.Proc("echo", [bl.VENV_PY, Path(__file__), "--serve", port_file], bl.SERVER_CPU,
                     work / "server.log", cwd=bl.BENCH).start()
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if not server.alive() or time.monotonic() > deadline:
                print(f"the echo server did not start:\n{server.tail()}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        target = f"{bl.HOST}:{port_file.read_text()}"
        payload = bl.waybill_request_bytes(bl.load_rows(1))
        results = {kind: measure(kind, target, server.pid, args.duration, payload)
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
