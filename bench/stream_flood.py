"""A flood of streams: many PredictStream calls sending 64-row messages as fast as they can,
never reading an answer, while a probe Predict with a 2 s deadline runs every half second.

    .venv/bin/python bench/stream_flood.py [--streams 200] [--seconds 10] [--ref REF]
        [--config waybill-on]

Prints the server's resident memory over the run (start, peak) and how many probes
succeeded; ``--ref`` runs another commit's code (git archive) for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl
import grpc

STREAM_METHOD = "/waybill.v1.PredictionService/PredictStream"


def rss_mb(pid: int) -> float:
    total = 0
    for p in bl.descendants(pid):  # the server and its live children
        try:
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        total += pages * 4096
    return total / 1e6


async def flood(target: str, streams: int, seconds: float, message: bytes) -> None:
    """The flood alone (run in a process of its own, so the probe is not starved by it)."""
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool",
                                                            1)]) for _ in range(8)]
    stop = time.monotonic() + seconds
    stats = {"sent": 0}
    codes: dict[str, int] = {}

    async def one(k: int) -> None:
        call = channels[k % len(channels)].stream_stream(STREAM_METHOD)(timeout=seconds + 30)
        try:
            while time.monotonic() < stop:
                await call.write(message)
                stats["sent"] += 1
            call.cancel()
        except asyncio.InvalidStateError:  # the server ended the call: its status says why
            code = (await call.code()).name
            codes[code] = codes.get(code, 0) + 1
        except grpc.aio.AioRpcError as err:
            codes[err.code().name] = codes.get(err.code().name, 0) + 1

    await asyncio.gather(*(one(k) for k in range(streams)))
    print(json.dumps({"sent": stats["sent"], "ended": codes}))
    for channel in channels:
        await channel.close()


def probe_while(target: str, pid: int, flooding: subprocess.Popen[str], probe: bytes,
                ) -> tuple[list[float], list[tuple[float, str]]]:
    """A Predict with a 2 s deadline every half second while the flood runs, and the
    server's resident memory at each."""
    memory: list[float] = []
    probes: list[tuple[float, str]] = []
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(bl.PREDICT_METHOD)
        while flooding.poll() is None:
            memory.append(rss_mb(pid))
            t0 = time.monotonic()
            try:
                call(probe, timeout=2.0)
                probes.append((time.monotonic() - t0, "OK"))
            except grpc.RpcError as err:
                probes.append((time.monotonic() - t0, err.code().name))
            time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
    return memory, probes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="waybill-on")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ref", default=None)
    parser.add_argument("--flags", default="", help="more `waybill serve` flags")
    parser.add_argument("--flood-only", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = bl.load_rows()
    message = bl.stream_message(bl.waybill_request_bytes(rows[:64]))
    if args.flood_only:
        asyncio.run(flood(args.flood_only, args.streams, args.seconds, message))
        return 0
    src = bl.waybill_source(args.ref)
    work = bl.RUN_DIR / "stream-flood"
    work.mkdir(parents=True, exist_ok=True)
    probe = bl.waybill_request_bytes(rows[:1])
    config = bl.with_flags(args.config, args.flags)
    proc, port = bl.start_waybill(config, work / "server", src)
    target = f"{bl.HOST}:{port}"
    try:
        start_rss = rss_mb(proc.pid)
        flooding = subprocess.Popen(
            ["taskset", "-c", bl.CLIENT_CPU, bl.VENV_PY, __file__, "--flood-only", target,
             "--streams", str(args.streams), "--seconds", str(args.seconds)],
            stdout=subprocess.PIPE, text=True)
        memory, probes = probe_while(target, proc.pid, flooding, probe)
        flood_result = json.loads(flooding.communicate()[0])
    finally:
        proc.stop()
    ok = [t for t, code in probes if code == "OK"]
    print(f"{args.streams} streams, {args.seconds:.0f} s: server RSS {start_rss:.0f} MB at "
          f"start, peak {max(memory, default=start_rss):.0f} MB; probes {len(ok)}/{len(probes)}"
          f" OK (slowest {max(ok, default=float('nan')) * 1000:.0f} ms), failures "
          f"{[code for _, code in probes if code != 'OK']}; messages sent "
          f"{flood_result['sent']:,}, streams ended by the server {flood_result['ended']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
