"""Load generator: one grpc.aio process sending pre-serialized requests to 127.0.0.1.

    python bench/loadgen.py SPEC.json OUT.json

SPEC: {"target": "127.0.0.1:P", "method": "/pkg.Service/Method", "payloads": "file",
       "metadata": [[k, v], ...], "mode": "closed"|"open"|"stream", "concurrency": N, "rate": R,
       "warmup": s, "duration": s, "timeout": s, "max_inflight": N, "server_pid": P,
       "rows_per_request": k}

closed: N callers, each sends its next request when the previous answer arrives.
open:   requests are due at a fixed rate whatever the answers do; latency is measured from
        the time a request was *due* (so a late generator or a queueing server both show),
        a request that would exceed max_inflight is dropped and counted, and a request
        past its deadline is a timeout.
stream: a bidirectional stream per connection (PredictStream), N messages in flight in
        all; each answer lets the next message go. Latency is from a message's send to
        its answer (answers come in order); an answer holding an error (field 2 of
        PredictStreamResponse, first byte 0x12) counts as STREAM_ERROR.

Only requests *started* inside the measured window (after warm-up) count. Server CPU is
utime+stime of the server process and its live descendants, read from /proc at the start
and end of the window; the generator reads its own CPU the same way, so a saturated
generator shows (gen_cpu_frac near 1.0, or open-loop send lag). The machine's total CPU
(/proc/stat) minus both gives the load of other processes in the window.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from array import array
from collections import Counter, deque
from pathlib import Path
from typing import Any

import benchlib as bl
import grpc

MAX_REQUESTS = 5_000_000  # hard bound besides the time bound
CHANNELS = 4
clock = time.perf_counter_ns


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    payloads = bl.read_payloads(Path(spec["payloads"]))
    if not payloads:
        raise SystemExit("no payloads")
    metadata = tuple((k, v) for k, v in spec.get("metadata", ()))
    timeout = float(spec.get("timeout", 5.0))
    warmup_ns = int(float(spec["warmup"]) * 1e9)
    duration_ns = int(float(spec["duration"]) * 1e9)
    options = [("grpc.max_receive_message_length", 64 << 20),
               ("grpc.max_send_message_length", 64 << 20)]
    latencies = array("q")
    errors: Counter[str] = Counter()
    state = {"drops": 0, "inflight": 0, "late": array("q"), "sent": 0}
    marks: dict[str, float] = {}

    # Several connections, as many clients would open: a server with worker processes
    # on one port (SO_REUSEPORT) balances connections, not calls. A local subchannel
    # pool makes each channel its own connection.
    n_channels = int(spec.get("channels", CHANNELS))
    channels = [grpc.aio.insecure_channel(
        spec["target"], options=[*options, ("grpc.use_local_subchannel_pool", 1)])
        for _ in range(n_channels)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        # No serializers: requests go out as the bytes they are, answers stay bytes.
        calls = [channel.stream_stream(spec["method"]) if spec["mode"] == "stream"
                 else channel.unary_unary(spec["method"]) for channel in channels]
        return await _drive(spec, calls, payloads, metadata, timeout, warmup_ns, duration_ns,
                            latencies, errors, state, marks)
    finally:
        for channel in channels:
            await channel.close()


async def _drive(spec: dict[str, Any], calls: list[Any], payloads: list[bytes],
                 metadata: tuple[tuple[str, str], ...], timeout: float, warmup_ns: int,
                 duration_ns: int, latencies: array[int], errors: Counter[str],
                 state: dict[str, Any], marks: dict[str, float]) -> dict[str, Any]:
    rotation = [0]
    error_latencies: dict[str, array[int]] = {}  # how long each kind of failure took
    start = clock()
    t_meas, t_end = start + warmup_ns, start + warmup_ns + duration_ns

    async def sample() -> None:
        await asyncio.sleep(max(0.0, (t_meas - clock()) / 1e9))
        marks["srv0"] = bl.tree_cpu_seconds(spec["server_pid"])
        marks["busy0"], marks["steal0"] = bl.machine_cpu_seconds()
        marks["gen0"], marks["t0"] = bl.self_cpu_seconds(), clock()
        await asyncio.sleep(max(0.0, (t_end - clock()) / 1e9))
        marks["srv1"] = bl.tree_cpu_seconds(spec["server_pid"])
        marks["busy1"], marks["steal1"] = bl.machine_cpu_seconds()
        marks["gen1"], marks["t1"] = bl.self_cpu_seconds(), clock()

    async def one(payload: bytes, t0: int) -> None:
        code = "OK"
        call = calls[rotation[0] % len(calls)]
        rotation[0] += 1
        try:
            await call(payload, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            code = err.code().name
        if t0 >= t_meas and t0 < t_end:
            if code == "OK":
                latencies.append(clock() - t0)
            else:
                errors[code] += 1
                error_latencies.setdefault(code, array("q")).append(clock() - t0)

    sampler = asyncio.ensure_future(sample())
    if spec["mode"] == "stream":
        await asyncio.gather(*(_stream(calls[k], k, len(calls), spec, payloads, metadata,
                                       timeout, t_meas, t_end, latencies, errors)
                               for k in range(len(calls))))
    elif spec["mode"] == "closed":
        conc = int(spec["concurrency"])

        async def caller(k: int) -> None:
            i = k
            while i < MAX_REQUESTS:
                t0 = clock()
                if t0 >= t_end:
                    return
                await one(payloads[i % len(payloads)], t0)
                i += conc

        await asyncio.gather(*(caller(k) for k in range(conc)))
    else:
        interval = 1e9 / float(spec["rate"])
        max_inflight = int(spec.get("max_inflight", 2000))
        tasks: set[asyncio.Task[None]] = set()

        async def tracked(payload: bytes, due: int) -> None:
            state["inflight"] += 1
            try:
                await one(payload, due)
            finally:
                state["inflight"] -= 1

        n = 0
        while n < MAX_REQUESTS:
            due = start + int(n * interval)
            if due >= t_end:
                break
            now = clock()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                now = clock()
            elif n % 32 == 0:
                await asyncio.sleep(0)  # catching up: still let answers in
            if due >= t_meas:
                state["late"].append(now - due)
            if state["inflight"] >= max_inflight:
                if due >= t_meas:
                    state["drops"] += 1
            else:
                task = asyncio.ensure_future(tracked(payloads[n % len(payloads)], due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout + 2)
            for task in pending:
                task.cancel()
                errors["ABANDONED"] += 1
    await sampler

    window_s = (marks["t1"] - marks["t0"]) / 1e9
    done = len(latencies) + sum(errors.values())
    srv_cpu = marks["srv1"] - marks["srv0"]
    gen_cpu = marks["gen1"] - marks["gen0"]
    rows = int(spec.get("rows_per_request", 1))
    late = sorted(state["late"])
    result: dict[str, Any] = {
        "ok": len(latencies),
        "errors": dict(errors),
        "timeouts": errors.get("DEADLINE_EXCEEDED", 0),
        "drops": state["drops"],
        "window_s": window_s,
        "req_s": len(latencies) / window_s,
        "rows_s": len(latencies) * rows / window_s,
        "server_cpu_s": srv_cpu,
        "server_cpu_frac": srv_cpu / window_s,
        "server_cpu_us_per_req": srv_cpu / done * 1e6 if done else float("nan"),
        "gen_cpu_frac": gen_cpu / window_s,
        # CPU that neither the server nor this generator used: other processes on the
        # machine (another test run...), as a share of one core. Steal: the hypervisor.
        "other_cpu_frac": max(0.0, marks["busy1"] - marks["busy0"] - srv_cpu - gen_cpu)
        / window_s,
        "steal_frac": (marks["steal1"] - marks["steal0"]) / window_s,
        **bl.latency_summary(latencies),
        "error_latency_ms": {
            code: {"p50": bl.percentile(sorted(v), 0.5) / 1e6,
                   "p99": bl.percentile(sorted(v), 0.99) / 1e6}
            for code, v in error_latencies.items()},
    }
    if late:
        result["send_lag_p99_ms"] = bl.percentile(late, 0.99) / 1e6
    return result


ANSWER_ERROR = 0x12  # the first byte of a PredictStreamResponse holding an error


async def _stream(method: Any, k: int, streams: int, spec: dict[str, Any],
                  payloads: list[bytes], metadata: tuple[tuple[str, str], ...], timeout: float,
                  t_meas: int, t_end: int, latencies: array[int],
                  errors: Counter[str]) -> None:
    """One stream: keep its share of the messages in flight until the window ends."""
    in_flight = max(1, int(spec["concurrency"]) // streams)
    call = method(metadata=metadata, timeout=(t_end - clock()) / 1e9 + timeout)
    sent: deque[int] = deque()
    i = k

    def answered(answer: bytes) -> None:
        t0 = sent.popleft()
        if t_meas <= t0 < t_end:
            if answer[:1] == bytes((ANSWER_ERROR,)):
                errors["STREAM_ERROR"] += 1
            else:
                latencies.append(clock() - t0)

    try:
        for _ in range(in_flight):
            sent.append(clock())
            await call.write(payloads[i % len(payloads)])
            i += streams
        while True:
            answer = await call.read()
            if answer is grpc.aio.EOF:
                break
            answered(answer)
            if clock() >= t_end or i >= MAX_REQUESTS:
                break
            sent.append(clock())
            await call.write(payloads[i % len(payloads)])
            i += streams
        await call.done_writing()
        while sent and (answer := await call.read()) is not grpc.aio.EOF:
            answered(answer)
    except grpc.aio.AioRpcError as err:
        counted = sum(1 for t0 in sent if t_meas <= t0 < t_end)
        errors[err.code().name] += counted


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    if not spec["target"].startswith(bl.HOST + ":"):
        raise SystemExit(f"refusing a target that is not {bl.HOST}: {spec['target']}")
    result = asyncio.run(run(spec))
    Path(argv[1]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
