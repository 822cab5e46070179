"""Server settings: embedded defaults, overridden by WAYBILL_* environment variables,
overridden by command-line flags. Validated once at start; a bad value stops the
process with a message naming the setting and the value."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.registry import DEFAULT_ROOT

ENV_PREFIX = "WAYBILL_"
# Settings that take a list: comma-separated in the environment.
_LISTS = ("models", "alertmanager")
# The committed routing config beside the code (deploy/routing.toml).
DEFAULT_ROUTING = Path(__file__).resolve().parents[2] / "deploy" / "routing.toml"
# A duration as an operator writes it: "7d", "12h", "30m", "90s" (or plain seconds).
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_USERINFO = re.compile(r"//[^/@\s'\"]*@")


# Where each token comes from, for messages (the token itself is never shown).
TOKEN_SOURCES = {
    "admin_token": "WAYBILL_ADMIN_TOKEN or --admin-token-file",
    "outcome_token": "WAYBILL_OUTCOME_TOKEN or --outcome-token-file",
}


class SettingsError(Exception):
    pass


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 50051
    # Written once the server is ready: JSON {"port": N, "admin_port": M, "metrics_port": K}
    # (metrics_port is null when the endpoint is off); useful with port 0.
    port_file: Path | None = None
    registry: Path = DEFAULT_ROOT
    # Models to serve; empty means every model found in the registry.
    models: tuple[str, ...] = ()
    max_rows: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    max_message_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    max_metadata_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024
    # Applied when the caller sets no deadline, so no request can hang forever.
    default_deadline_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    # How long in-flight calls may finish after SIGTERM/SIGINT.
    grace_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    predict_threads: Annotated[int, Field(ge=1, le=64)] = 2
    # Micro-batching: concurrent requests for a version wait up to batch_delay_us for
    # others (0 = no batching) and share one CatBoost call of at most batch_max_rows.
    batch_delay_us: Annotated[int, Field(ge=0, le=100_000)] = 3_000
    batch_max_rows: Annotated[int, Field(ge=1, le=100_000)] = 256
    # Predictions in flight at most; beyond, RESOURCE_EXHAUSTED at once (so is a prediction
    # that the ones in flight would keep past its deadline: server/serving/admission.py).
    max_inflight: Annotated[int, Field(ge=1, le=1_000_000)] = 1_024
    # Memory bounds for streams: PredictStream calls open at once (more: RESOURCE_EXHAUSTED),
    # rows read and not yet answered across all of them (beyond, streams stop reading), and
    # concurrent calls per HTTP/2 connection (more are refused by gRPC, UNAVAILABLE).
    max_streams: Annotated[int, Field(ge=1, le=100_000)] = 64
    stream_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 4_096
    max_calls_per_connection: Annotated[int, Field(ge=1, le=100_000)] = 100
    log_level: Annotated[str, Field(pattern=r"^(debug|info|warning|error)$")] = "info"
    # The per-call "rpc" line: "all" calls, or "sampled": failed and slow calls and those
    # whose trace is recorded (the prediction log, metrics and traces cover the rest).
    access_log: Literal["all", "sampled"] = "sampled"
    # Routing config; None serves every registry version with the newest as default.
    routing: Path | None = DEFAULT_ROUTING
    # How often the routing file is checked for changes; 0 turns watching off.
    routing_poll_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    shadow_queue: Annotated[int, Field(ge=1, le=100_000)] = 64
    # Prometheus /metrics on host:metrics_port (0 = any free port); metrics_enabled=false
    # turns the endpoint off (OTLP export, set by OTEL_* variables, is independent).
    metrics_enabled: bool = True
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    # Server processes sharing the port (SO_REUSEPORT), one per core; see server/runtime/workers.py.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # Set by the supervisor for its workers, not by users.
    worker_index: Annotated[int, Field(ge=0)] = 0
    reuse_port: bool = False
    metrics_host: str | None = None  # default: host
    # The prediction, outcome and event log: the path of an SQLite file (relative paths
    # are from the working directory), or a postgresql:// URL for replicas that share one
    # database (server/storage/). "" turns it off: no outcome feedback, no accuracy, no
    # durable overrides.
    database: str | None = "var/waybill.db"
    # PostgreSQL: connections for outcomes, events and reads; how long a call waits for
    # the database before UNAVAILABLE.
    database_pool_size: Annotated[int, Field(ge=1, le=64)] = 4
    database_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    # The prediction log keeps a prediction (and its outcome) this long, and at most the
    # newest prediction_max_rows; the rest is purged at start and every purge_interval_s,
    # a chunk per transaction. Events beyond the newest event_max_rows go too.
    prediction_retention_s: Annotated[float, Field(gt=0)] = 7 * 86400.0
    prediction_max_rows: Annotated[int, Field(ge=1)] = 5_000_000
    event_max_rows: Annotated[int, Field(ge=1)] = 100_000
    purge_interval_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    # Predictions wait at most log_flush_interval_s in memory before they are written in
    # one batch; at most log_queue_max wait (more are dropped and counted).
    log_flush_interval_s: Annotated[float, Field(gt=0, le=10)] = 0.2
    log_queue_max: Annotated[int, Field(ge=1, le=10_000_000)] = 200_000
    # Overrides saved by other processes sharing the database (workers, replicas) are
    # followed this often.
    follow_interval_s: Annotated[float, Field(gt=0, le=10)] = 0.5
    # ReportOutcome looks this long for a prediction another process (worker or replica)
    # answered but has not written yet, before NOT_FOUND.
    outcome_wait_s: Annotated[float, Field(ge=0, le=30)] = 1.0
    # Outcomes reported in the last accuracy_window_s make the accuracy metrics and report.
    accuracy_window_s: Annotated[float, Field(gt=0)] = 3600.0
    # Drift: tumbling windows of drift_window_rows rows or drift_window_s seconds,
    # whichever ends first; a window under drift_min_rows gives no verdict.
    drift_enabled: bool = True
    drift_window_rows: Annotated[int, Field(ge=0)] = 5_000
    drift_window_s: Annotated[float, Field(ge=0)] = 300.0
    drift_min_rows: Annotated[int, Field(ge=1)] = 500
    # Alert rules (from the routing file) are evaluated this often; 0 turns them off.
    alert_interval_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    # Optional: POST the JSON Alertmanager sends to its receivers (webhook format 4) here
    # on firing and resolved: for chat bridges and paging integrations, not Alertmanager.
    alert_webhook: str | None = None
    # Alertmanagers (base URLs, e.g. http://alertmanager:9093; several for an HA pair, each
    # gets every post): alerts go to <base>/api/v2/alerts on firing and resolved, and firing
    # ones again every alertmanager_resend_s (at most as often as alerts are evaluated).
    alertmanager: tuple[str, ...] = ()
    alertmanager_resend_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    admin_host: str = "127.0.0.1"
    admin_port: Annotated[int, Field(ge=0, le=65535)] = 50052
    admin_token: SecretStr | None = None
    # ReportOutcome moves accuracy and so the rules that roll a canary back: "token" needs
    # outcome_token as a bearer token (open on a loopback host when none is set), "none"
    # leaves it open, "mtls" admits any caller whose client certificate tls_client_ca signed.
    outcome_auth: Literal["token", "none", "mtls"] = "token"
    outcome_token: SecretStr | None = None
    # TLS for both ports from PEM files; with tls_client_ca, clients need certificates.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    @field_validator("routing", "database", "alert_webhook", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", b"") else value

    @field_validator("admin_token", "outcome_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # A token that was given must be one a client can send: an empty one used to turn
        # auth off, and one with surrounding whitespace or a control character could never
        # match what arrives in the authorization header. Refused, never trimmed or echoed.
        if value is None:
            return None
        token = value.get_secret_value()
        source = TOKEN_SOURCES[str(info.field_name)]
        if not token.strip():
            raise ValueError(f"is empty or blank ({source}); set a real token")
        if token != token.strip():
            raise ValueError(f"has surrounding whitespace ({source}); remove it")
        if not (token.isascii() and token.isprintable()):
            raise ValueError(f"must be printable ASCII to travel in a gRPC header ({source})")
        return value

    @field_validator("alertmanager")
    @classmethod
    def _alertmanager_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bases: list[str] = []
        for url in value:
            base = _alertmanager_base(url.strip())
            if base not in bases:
                bases.append(base)
        return tuple(bases)

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("must be the path of an SQLite file or a postgresql:// URL")
        return value

    @field_validator("prediction_retention_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        match = _DURATION.fullmatch(value.strip())
        if match is not None:
            return float(match[1]) * _UNIT_S[match[2]]
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be seconds or a duration such as 7d, 12h or 30m") from None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        from server.transport.auth import is_loopback

        if self.admin_token is None and not is_loopback(self.admin_host):
            raise ValueError(
                f"admin_host {self.admin_host!r} is beyond loopback: set an admin token "
                f"({TOKEN_SOURCES['admin_token']})"
            )
        if self.outcome_auth == "token":
            if self.outcome_token is None and not is_loopback(self.host):
                raise ValueError(
                    f"host {self.host!r} is beyond loopback, where anyone could report "
                    f"outcomes: set an outcome token ({TOKEN_SOURCES['outcome_token']}), or "
                    "leave ReportOutcome open explicitly with --outcome-auth none "
                    "(WAYBILL_OUTCOME_AUTH=none)"
                )
        elif self.outcome_token is not None:
            raise ValueError(
                f"an outcome token is set but outcome_auth is {self.outcome_auth!r}, which "
                "ignores it: drop the token or use --outcome-auth token"
            )
        if self.outcome_auth == "mtls" and self.tls_client_ca is None:
            raise ValueError(
                "outcome_auth 'mtls' admits callers by their client certificate: it needs "
                "tls_client_ca (--tls-client-ca), with tls_cert and tls_key"
            )
        if self.drift_enabled and self.drift_window_rows == 0 and self.drift_window_s == 0:
            raise ValueError("drift windows need drift_window_rows or drift_window_s")
        if self.alert_webhook is not None and not self.alert_webhook.startswith(
                ("http://", "https://")):
            raise ValueError("alert_webhook must be an http:// or https:// URL")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self


def _alertmanager_base(url: str) -> str:
    """An Alertmanager's base URL as given, less a trailing slash; refused with a reason
    when it is not an http(s) URL of a host, or names the API path itself."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        raise ValueError(f"{url!r} is not a URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} must be an http:// or https:// URL of a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not supported")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the base URL, without a query or fragment")
    base = url.rstrip("/")
    if base.endswith(("/api/v2/alerts", "/api/v2", "/api/v1/alerts")):
        raise ValueError(f"{url!r}: give Alertmanager's base URL (such as "
                         "http://alertmanager:9093); /api/v2/alerts is added")
    return base


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = (tuple(m for m in raw.split(",") if m.strip())
                        if name in _LISTS else raw)
    return values


def load_settings(
    overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < environment < explicit overrides (CLI flags that were given)."""
    values = _from_env(os.environ if environ is None else environ)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in e['loc'])}={_shown(e)}: " if e["loc"] else "")
            + e["msg"]
            for e in err.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


def _shown(error: Any) -> str:
    # Never echo a secret back: tokens, or the credentials of a URL.
    if "token" in str(error["loc"]):
        return "***"
    return _USERINFO.sub("//***@", repr(error.get("input")))
