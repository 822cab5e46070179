"""Ask a Waybill server's grpc.health.v1 service whether it is SERVING.

Exit status 0 when the service answers SERVING, 1 otherwise (any other status,
NOT_FOUND for an unknown service name, a refused connection or a time-out), which
is what Docker's HEALTHCHECK and Kubernetes exec probes expect. One line on stdout
says what was seen.

    python healthcheck.py                                   # service "" on 127.0.0.1:$WAYBILL_PORT
    python healthcheck.py --service waybill.v1.PredictionService
    python healthcheck.py --address 10.0.0.7:50051 --timeout 1

Plaintext by default, like Kubernetes' native gRPC probes. When the server runs with
TLS (WAYBILL_TLS_CERT), pass --tls-ca with the CA (or the self-signed certificate)
and, if the certificate does not name 127.0.0.1, --server-name.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str, timeout: float,
          tls_ca: str | None = None, server_name: str | None = None) -> tuple[bool, str]:
    options: list[tuple[str, str | int]] = [("grpc.enable_retries", 0)]
    if tls_ca:
        with open(tls_ca, "rb") as handle:
            credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            name = code.name if code is not None else "ERROR"
            return False, f"{address} service={service!r}: {name} {err.details() or ''}".rstrip()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, (
        f"{address} service={service!r}: {status}")


def main(argv: list[str] | None = None) -> int:
    port = os.environ.get("WAYBILL_PORT", "50051")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=f"127.0.0.1:{port}",
                        help="host:port (default 127.0.0.1:$WAYBILL_PORT or 50051)")
    parser.add_argument("--service", default="",
                        help='health service name (default "": the whole server)')
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--tls-ca", help="PEM file: use TLS and trust this CA")
    parser.add_argument("--server-name", help="TLS name to expect instead of the address host")
    args = parser.parse_args(argv)
    ok, message = check(args.address, args.service, args.timeout, args.tls_ca, args.server_name)
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
