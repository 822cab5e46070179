"""Bearer-token checks (the admin port; ReportOutcome) and TLS credentials for both ports."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import grpc


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerToken(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED): every call
    but those in ``exempt``, or with ``only``, just those methods (full paths,
    ``/package.Service/Method``).

    One instance per token and port: the admin token guards the admin port (all but its
    health checks); the outcome token guards ReportOutcome alone on the public port, where
    predictions stay open.
    """

    def __init__(self, token: str, message: str, only: Collection[str] | None = None,
                 exempt: Collection[str] = ()) -> None:
        self._expected = f"Bearer {token}".encode()
        self._only = frozenset(only) if only is not None else None
        self._exempt = frozenset(exempt)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        # Unary, as ReportOutcome and the admin calls are.
        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method in self._exempt or (
                self._only is not None and details.method not in self._only):
            return await continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                # Constant time: how long a wrong token takes says nothing of the right one.
                if hmac.compare_digest(given, self._expected):
                    return await continuation(details)
        return self._deny


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS from PEM files; with ``client_ca`` every client must present a certificate it signed.

    The handshake is the whole check behind ``outcome_auth = "mtls"``: a caller without such a
    certificate never gets a connection, so every call that arrives comes from one."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )
