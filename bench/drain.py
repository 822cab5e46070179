"""SIGTERM under load: what callers see while a server drains.

    .venv/bin/python bench/drain.py [--callers 32] [--times 10] [--ref REF]

Each time: start a server, let ``--callers`` closed-loop callers (1-row Predict, 2 s
deadline) run for a second, send SIGTERM, and keep calling until the port refuses
connections. Prints, per run and in all, every status seen after SIGTERM; a drain that
loses nothing shows OK and UNAVAILABLE only, never CANCELLED.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections import Counter

import benchlib as bl
import grpc


async def callers(target: str, n: int, payload: bytes, proc: bl.Proc) -> Counter[str]:
    channel = grpc.aio.insecure_channel(target)
    call = channel.unary_unary(bl.PREDICT_METHOD)
    after: Counter[str] = Counter()
    term_at: list[float] = []

    async def one() -> None:
        while True:
            started = time.monotonic()
            try:
                await call(payload, timeout=2.0)
                code = "OK"
            except grpc.aio.AioRpcError as err:
                code = err.code().name
            if term_at and started >= term_at[0]:
                after[code] += 1
            if not proc.alive() or (term_at and time.monotonic() - term_at[0] > 15):
                return
            if code == "UNAVAILABLE" and term_at:
                await asyncio.sleep(0.01)  # a real client backs off before trying again

    async def terminate() -> None:
        await asyncio.sleep(1.0)
        term_at.append(time.monotonic())
        os.kill(proc.pid, signal.SIGTERM)  # taskset execs the server: the same pid

    await asyncio.gather(terminate(), *(one() for _ in range(n)))
    await channel.close()
    return after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="waybill-on")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--ref", default=None)
    args = parser.parse_args()
    src = bl.waybill_source(args.ref)
    work = bl.RUN_DIR / "drain"
    work.mkdir(parents=True, exist_ok=True)
    payload = bl.waybill_request_bytes(bl.load_rows()[:1])
    total: Counter[str] = Counter()
    for i in range(args.times):
        proc, port = bl.start_waybill(args.config, work / "server", src)
        try:
            seen = asyncio.run(callers(f"{bl.HOST}:{port}", args.callers, payload, proc))
        finally:
            proc.stop()
        total.update(seen)
        print(f"run {i + 1}: after SIGTERM {dict(seen)}")
    print(f"all {args.times} runs, {args.callers} callers: after SIGTERM {dict(total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
