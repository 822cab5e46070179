"""Fuzzed requests against one server: which statuses come back, and are they all counted.

    .venv/bin/python bench/fuzz.py [--requests 5000] [--seed 7] [--ref REF]

Requests are valid PredictRequests mutated at random (bytes flipped, cut short, spliced,
repeated, random bytes, a Struct nested past the decoder's limit, huge strings), sent to
Predict over one channel. Prints the statuses seen and the server's own count of calls by
status (rpc.server.call.duration), which must agree: nothing UNKNOWN or INTERNAL, nothing
uncounted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import urllib.request
from collections import Counter

import benchlib as bl

sys.path.insert(0, str(bl.ROOT))  # the tests' hand-written protobuf helpers
import grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.test_hardening import field, nested_struct_request


def mutate(rng: random.Random, valid: list[bytes]) -> bytes:
    base = bytearray(rng.choice(valid))
    kind = rng.randrange(7)
    if kind == 0:  # flip some bytes
        for _ in range(rng.randint(1, 8)):
            base[rng.randrange(len(base))] = rng.randrange(256)
    elif kind == 1:  # cut short
        del base[rng.randrange(1, len(base)):]
    elif kind == 2:  # splice two requests
        other = rng.choice(valid)
        base = base[:rng.randrange(len(base))] + other[rng.randrange(len(other)):]
    elif kind == 3:  # random bytes
        base = bytearray(rng.randbytes(rng.randint(1, 512)))
    elif kind == 4:  # a field repeated
        start = rng.randrange(len(base))
        base = base[:start] + base[start:start + 40] * rng.randint(2, 50) + base[start:]
    elif kind == 5:  # a Struct nested deep
        base = bytearray(nested_struct_request(rng.randint(20, 200)))
    else:  # a huge model name
        name = b"m" * rng.randint(1_000, 100_000)
        base = bytearray(field(1, name)) + base
    return bytes(base)


def server_counts(metrics_url: str) -> Counter[str]:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "rpc_server_call_duration_seconds_count"
                    and sample.labels.get("rpc_method") == "Predict"):
                code = grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == int(
                    sample.labels["rpc_grpc_status_code"]))).name
                counts[code] += int(sample.value)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ref", default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = bl.load_rows()
    valid = [bl.waybill_request_bytes(rows[i:i + n]) for i, n in
             ((rng.randrange(len(rows) - 70), rng.choice((1, 2, 8, 64))) for _ in range(200))]
    work = bl.RUN_DIR / "fuzz"
    work.mkdir(parents=True, exist_ok=True)
    proc, port = bl.start_waybill("waybill-on", work / "server", bl.waybill_source(args.ref))
    seen: Counter[str] = Counter()
    try:
        ports = json.loads((work / "server" / "waybill-on.port").read_text())
        metrics_port = ports["metrics_port"]
        url = f"http://{bl.HOST}:{metrics_port}/metrics"
        with grpc.insecure_channel(f"{bl.HOST}:{port}") as channel:
            call = channel.unary_unary(bl.PREDICT_METHOD)
            for _ in range(args.requests):
                try:
                    call(mutate(rng, valid), timeout=5)
                    seen["OK"] += 1
                except grpc.RpcError as err:
                    seen[err.code().name] += 1
        counted = server_counts(url)
    finally:
        proc.stop()
    print(f"{args.requests:,} fuzzed requests: seen by the caller {dict(seen)}; counted by "
          f"the server {dict(counted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
