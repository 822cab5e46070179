"""The `waybill` command: serve, train, generate demo data, inspect the registry, check
routing files and generate Prometheus rules from them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from models.registry import DEFAULT_ROOT


def _serve(args: argparse.Namespace) -> int:
    from server.runtime import logs
    from server.runtime.app import run
    from server.runtime.settings import SettingsError, load_settings

    overrides = {
        "host": args.host, "port": args.port, "port_file": args.port_file,
        "registry": args.registry, "models": tuple(args.model) if args.model else None,
        "max_rows": args.max_rows, "default_deadline_s": args.default_deadline,
        "grace_s": args.grace, "log_level": args.log_level, "access_log": args.access_log,
        "routing": args.routing, "routing_poll_s": args.routing_poll,
        "shadow_queue": args.shadow_queue, "batch_delay_us": args.batch_delay_us,
        "batch_max_rows": args.batch_max_rows, "max_inflight": args.max_inflight,
        "max_streams": args.max_streams, "stream_rows": args.stream_rows,
        "max_calls_per_connection": args.max_calls_per_connection,
        "admin_host": args.admin_host, "admin_port": args.admin_port,
        "metrics_port": args.metrics_port, "metrics_enabled": False if args.no_metrics else None,
        "tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca,
        "database": "" if args.no_database else args.database,
        "prediction_retention_s": args.prediction_retention,
        "prediction_max_rows": args.prediction_max_rows,
        "event_max_rows": args.event_max_rows, "purge_interval_s": args.purge_interval,
        "log_flush_interval_s": args.log_flush_interval, "log_queue_max": args.log_queue_max,
        "database_pool_size": args.database_pool_size,
        "database_timeout_s": args.database_timeout,
        "follow_interval_s": args.follow_interval, "outcome_wait_s": args.outcome_wait,
        "drift_window_rows": args.drift_window_rows, "drift_window_s": args.drift_window_s,
        "drift_min_rows": args.drift_min_rows, "alert_interval_s": args.alert_interval,
        "alert_webhook": args.alert_webhook, "accuracy_window_s": args.accuracy_window,
        "alertmanager": tuple(args.alertmanager) if args.alertmanager else None,
        "alertmanager_resend_s": args.alertmanager_resend,
        "workers": args.workers, "drift_enabled": False if args.no_drift else None,
        "outcome_auth": args.outcome_auth,
    }
    if args.no_routing:
        overrides["routing"] = ""  # empty turns routing off, as WAYBILL_ROUTING= does
    try:
        for setting, path in (("admin_token", args.admin_token_file),
                              ("outcome_token", args.outcome_token_file)):
            if path is not None:
                overrides[setting] = _read_token_file(path, setting)
        settings = load_settings(overrides)
    except SettingsError as err:
        print(f"waybill: {err}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.access_log)
    if settings.workers > 1:
        from server.runtime.workers import supervise

        return supervise(settings)
    return run(settings)


def _read_token_file(path: Path, setting: str) -> str:
    """The token in ``path``, less the one line ending that files usually end with.

    Nothing else is trimmed: a token with other surrounding whitespace is refused by the
    settings (as is a blank one), so the server never holds a token other than the one in
    the file, which is what clients send."""
    from server.runtime.settings import SettingsError

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        # Never str(err) of a decode error: it quotes the bytes, i.e. part of the secret.
        reason = (err.strerror or type(err).__name__) if isinstance(err, OSError) else (
            "not UTF-8 text")
        raise SettingsError(f"invalid settings: {setting}: cannot read {path}: {reason}") from None
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _registry_list(args: argparse.Namespace) -> int:
    from models.artifact import ArtifactError, read_manifest
    from models.registry import discover

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = []
    for name, refs in discover(args.registry).items():
        for ref in refs:
            try:
                m = read_manifest(ref.path)
                # The headline figure of the kind: MAE for regression, log loss for classifiers.
                headline = ("log_loss" if m.metrics.log_loss is not None else "mae")
                rows.append((name, ref.version, m.output.kind.value, m.created_at, headline,
                             figure(getattr(m.metrics, headline)),
                             figure(getattr(m.metrics, f"baseline_{headline}")),
                             str(m.size_bytes)))
            except ArtifactError as err:
                rows.append((name, ref.version, "-", "-", "-", "-", "-", f"unreadable: {err}"))
    if args.json:
        keys = ("model", "version", "kind", "created_at", "metric", "value", "baseline",
                "size_bytes")
        print(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=1))
        return 0
    header = ("MODEL", "VERSION", "KIND", "CREATED", "METRIC", "VALUE", "BASELINE", "BYTES")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _registry_import(args: argparse.Namespace) -> int:
    from models import importer
    from models.artifact import ArtifactError

    try:
        return importer.run(args)
    except ArtifactError as err:
        print(f"waybill registry import: {err}", file=sys.stderr)
        return 1


def _registry_verify(args: argparse.Namespace) -> int:
    from models.artifact import ArtifactError
    from models.loaded import LoadedVersion
    from models.registry import discover

    failures = 0
    for name, refs in discover(args.registry).items():
        if args.model and name not in args.model:
            continue
        for ref in refs:
            try:
                loaded = LoadedVersion.load(args.registry, name, ref.version)
                print(f"ok      {name} {ref.version} sha256={loaded.manifest.sha256[:12]}")
            except ArtifactError as err:
                failures += 1
                print(f"FAILED  {name} {ref.version}: {err}")
    return 1 if failures else 0


def _git_show(rev: str, path: Path) -> str | None:
    """The file at a git revision; None when the revision does not have it."""
    import subprocess

    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent,
                         capture_output=True, text=True, check=False)
    if top.returncode != 0:
        raise SystemExit(f"waybill: {path} is not in a git work tree; cannot read {rev!r}")
    rel = path.resolve().relative_to(Path(top.stdout.strip()).resolve())
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                      cwd=path.parent, capture_output=True, check=False).returncode != 0:
        raise SystemExit(f"waybill: --against {rev!r} is neither a file nor a git revision")
    shown = subprocess.run(["git", "show", f"{rev}:{rel.as_posix()}"], cwd=path.parent,
                           capture_output=True, text=True, check=False)
    return shown.stdout if shown.returncode == 0 else None


def _routing_check(args: argparse.Namespace) -> int:
    from models.artifact import ArtifactError
    from models.loaded import LoadedVersion
    from models.registry import check_files, discover, version_path
    from router.config import RoutingConfig, RoutingConfigError, version_fields
    from router.preview import Parsed, check_report
    from server.serving.routing_file import parse_routing_file

    def parse(text: str, source: str) -> Parsed:
        return parse_routing_file(text, source).parsed()

    try:
        new_text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        print(f"waybill: cannot read {args.file}: {err}", file=sys.stderr)
        return 2
    old_text: str | None = None
    old_source = None
    if args.against:
        candidate = Path(args.against)
        if candidate.is_file():
            old_text, old_source = candidate.read_text(encoding="utf-8"), str(candidate)
        else:
            old_text, old_source = _git_show(args.against, args.file), f"{args.against}"
    found = discover(args.registry)
    available = {name: [ref.version for ref in refs] for name, refs in found.items()}
    failed: dict[str, dict[str, str]] = {}
    try:
        config: RoutingConfig | None = parse_routing_file(new_text, str(args.file)).config
    except RoutingConfigError:
        config = None  # check_report explains the problems
    if config is not None:
        for model, version in version_fields(config):
            if version not in available.get(model, ()):
                continue  # reported as missing from the registry
            try:
                if args.load:
                    LoadedVersion.load(args.registry, model, version)
                else:
                    check_files(version_path(args.registry, model, version), args.registry)
            except ArtifactError as err:
                failed.setdefault(model, {})[version] = str(err)
    ok, report = check_report(new_text, str(args.file), old_text, available,
                              old_source=old_source, failed=failed, parse=parse)
    print(report, end="")
    return 0 if ok else 1


def _rules(args: argparse.Namespace) -> int:
    from router.config import RoutingConfigError
    from server.monitoring.prometheus_rules import PrometheusRulesError, render
    from server.serving.routing_file import parse_routing_file

    texts: list[str | None] = []
    for path in (args.routing, args.operations):
        try:
            texts.append(None if path is None else path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            print(f"waybill: cannot read {path}: {err}", file=sys.stderr)
            return 2
    text, operations = texts
    assert text is not None
    try:
        parsed = parse_routing_file(text, str(args.routing))
        rules = render(parsed.config.models, parsed.alerts, source=str(args.routing),
                       operations=operations,
                       operations_source=None if args.operations is None
                       else str(args.operations))
    except (RoutingConfigError, PrometheusRulesError) as err:
        print(f"waybill: {err}", file=sys.stderr)
        return 2
    print(rules, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waybill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the registry's models over gRPC")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--port-file", type=Path, help="write the bound port here when ready")
    serve.add_argument("--registry", type=Path, help=f"registry root (default {DEFAULT_ROOT})")
    serve.add_argument("--model", action="append", help="serve only this model (repeatable)")
    serve.add_argument("--max-rows", type=int, help="rows per request (default 1000)")
    serve.add_argument("--default-deadline", type=float,
                       help="seconds allowed when the caller sets no deadline (default 5)")
    serve.add_argument("--grace", type=float, help="drain time on SIGTERM, seconds (default 10)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--access-log", choices=("all", "sampled"),
                       help="an rpc line for every call, or (default) for failed and slow "
                            "calls and calls whose trace is recorded")
    serve.add_argument("--routing", type=Path,
                       help="routing config (default deploy/routing.toml), hot-reloaded")
    serve.add_argument("--no-routing", action="store_true",
                       help="no routing file: serve every registry version, newest as default")
    serve.add_argument("--routing-poll", type=float,
                       help="seconds between routing file checks (default 1; 0 = no watching)")
    serve.add_argument("--batch-delay-us", type=int,
                       help="micro-batching window in microseconds (default 3000; 0 = off)")
    serve.add_argument("--batch-max-rows", type=int, help="rows per batch at most (default 256)")
    serve.add_argument("--max-inflight", type=int,
                       help="predictions in flight at most, then RESOURCE_EXHAUSTED (default 1024)")
    serve.add_argument("--max-streams", type=int,
                       help="PredictStream calls open at once, then RESOURCE_EXHAUSTED "
                            "(default 64)")
    serve.add_argument("--stream-rows", type=int,
                       help="rows read and not yet answered across all streams; beyond, "
                            "streams wait (default 4096)")
    serve.add_argument("--max-calls-per-connection", type=int,
                       help="concurrent calls on one HTTP/2 connection; gRPC refuses more "
                            "(default 100)")
    serve.add_argument("--shadow-queue", type=int,
                       help="shadow requests waiting at most; more are dropped (default 64)")
    serve.add_argument("--admin-host", help="admin address (default 127.0.0.1)")
    serve.add_argument("--admin-port", type=int, help="admin port (default 50052; 0 = any)")
    serve.add_argument("--admin-token-file", type=Path,
                       help="file holding the admin bearer token (or WAYBILL_ADMIN_TOKEN)")
    serve.add_argument("--outcome-auth", choices=("token", "none", "mtls"),
                       help="who may call ReportOutcome: 'token' (default) needs the outcome "
                            "token, and a host beyond loopback refuses to start without one; "
                            "'none' leaves it open; 'mtls' admits any caller whose client "
                            "certificate --tls-client-ca signed")
    serve.add_argument("--outcome-token-file", type=Path,
                       help="file holding the ReportOutcome bearer token (or "
                            "WAYBILL_OUTCOME_TOKEN)")
    serve.add_argument("--metrics-port", type=int,
                       help="Prometheus /metrics port on --host (default 9464; 0 = any)")
    serve.add_argument("--no-metrics", action="store_true",
                       help="no Prometheus endpoint (OTLP export follows the OTEL_* variables)")
    serve.add_argument("--workers", type=int,
                       help="server processes sharing the port, one per core (default 1)")
    serve.add_argument("--database",
                       help="prediction, outcome and event log: an SQLite file (default "
                            "var/waybill.db), or a postgresql://user@host/db URL shared by "
                            "replicas (or WAYBILL_DATABASE; libpq's PG* variables apply)")
    serve.add_argument("--no-database", action="store_true",
                       help="no prediction/event log: no outcomes, accuracy or saved overrides")
    serve.add_argument("--database-pool-size", type=int,
                       help="PostgreSQL: connections for outcomes, events and reads "
                            "(default 4)")
    serve.add_argument("--database-timeout", type=float, metavar="SECONDS",
                       help="PostgreSQL: how long a call waits for the database before "
                            "UNAVAILABLE (default 3)")
    serve.add_argument("--prediction-retention",
                       help="keep logged predictions this long: 7d, 12h, 30m or seconds "
                            "(default 7d)")
    serve.add_argument("--prediction-max-rows", type=int,
                       help="keep at most this many logged predictions, the newest "
                            "(default 5000000)")
    serve.add_argument("--event-max-rows", type=int,
                       help="keep at most this many events, the newest (default 100000)")
    serve.add_argument("--purge-interval", type=float, metavar="SECONDS",
                       help="apply retention this often (default 60)")
    serve.add_argument("--log-flush-interval", type=float, metavar="SECONDS",
                       help="write queued predictions at least this often (default 0.2)")
    serve.add_argument("--log-queue-max", type=int,
                       help="predictions waiting to be written at most; more are dropped "
                            "and counted (default 200000)")
    serve.add_argument("--follow-interval", type=float, metavar="SECONDS",
                       help="read overrides saved by other workers or replicas this often "
                            "(default 0.5)")
    serve.add_argument("--outcome-wait", type=float, metavar="SECONDS",
                       help="ReportOutcome waits this long for a prediction another worker "
                            "or replica has not written yet, before NOT_FOUND (default 1)")
    serve.add_argument("--no-drift", action="store_true",
                       help="no drift tracking (no drift metrics, GetDrift, drift rules)")
    serve.add_argument("--drift-window-rows", type=int,
                       help="rows per drift window (default 5000; 0 = by time only)")
    serve.add_argument("--drift-window-s", type=float,
                       help="seconds per drift window (default 300; 0 = by rows only)")
    serve.add_argument("--drift-min-rows", type=int,
                       help="fewer rows in a window give no verdict (default 500)")
    serve.add_argument("--alert-interval", type=float,
                       help="seconds between alert evaluations (default 5; 0 = off)")
    serve.add_argument("--alertmanager", action="append", metavar="URL",
                       help="Alertmanager base URL (e.g. http://127.0.0.1:9093): alerts are "
                            "posted to its /api/v2/alerts when they fire and resolve, and "
                            "re-sent while they fire; repeat for an HA pair (or "
                            "WAYBILL_ALERTMANAGER, comma-separated)")
    serve.add_argument("--alertmanager-resend", type=float, metavar="SECONDS",
                       help="re-send firing alerts to Alertmanager this often (default 60; "
                            "keep it well under Alertmanager's resolve_timeout)")
    serve.add_argument("--alert-webhook", metavar="URL",
                       help="POST the webhook JSON Alertmanager sends to its receivers here "
                            "when an alert fires or resolves (for chat bridges and paging "
                            "integrations; Alertmanager itself takes --alertmanager)")
    serve.add_argument("--accuracy-window", type=float,
                       help="seconds of reported outcomes behind accuracy (default 3600)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate for both ports")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for both ports")
    serve.add_argument("--tls-client-ca", type=Path,
                       help="PEM CA: require client certificates it signed (mutual TLS)")
    serve.set_defaults(func=_serve)

    registry = sub.add_parser("registry", help="inspect the model registry")
    reg_sub = registry.add_subparsers(dest="registry_command", required=True)
    listing = reg_sub.add_parser("list", help="list models and versions")
    listing.add_argument("--registry", type=Path, default=DEFAULT_ROOT)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_registry_list)
    verify = reg_sub.add_parser("verify", help="check digests, schemas and a probe prediction")
    verify.add_argument("--registry", type=Path, default=DEFAULT_ROOT)
    verify.add_argument("--model", action="append")
    verify.set_defaults(func=_registry_verify)
    from models import importer

    imports = reg_sub.add_parser(
        "import", help="register a CatBoost model trained elsewhere (.cbm or MLflow directory)")
    importer.add_arguments(imports)
    imports.set_defaults(func=_registry_import)

    routing = sub.add_parser("routing", help="check routing config changes")
    routing_sub = routing.add_subparsers(dest="routing_command", required=True)
    check = routing_sub.add_parser(
        "check", help="validate a routing file against the registry and preview what moves")
    check.add_argument("file", type=Path)
    check.add_argument("--against", help="the previous config: a file or a git revision")
    check.add_argument("--registry", type=Path, default=DEFAULT_ROOT)
    check.add_argument("--load", action="store_true",
                       help="also load every version and run its probe prediction")
    check.set_defaults(func=_routing_check)

    rules = sub.add_parser(
        "rules", help="print a Prometheus rule file generated from a routing file's alert rules")
    rules.add_argument("--routing", type=Path, required=True,
                       help="the routing file whose [[models.<name>.alerts]] rules to turn "
                            "into Prometheus alerts")
    rules.add_argument("--operations", type=Path,
                       help="a Prometheus rule file whose groups are appended as written "
                            "(deploy/prometheus/operations.yml)")
    rules.set_defaults(func=_rules)

    from server.runtime import drift_report

    drift = sub.add_parser("drift", help="print a running server's drift report; --plot PNG")
    drift_report.add_arguments(drift)
    drift.set_defaults(func=drift_report.run)

    from models import datagen, training

    train = sub.add_parser("train", help="train a version and publish it to the registry")
    training.add_arguments(train)
    train.set_defaults(func=training.run)
    gen = sub.add_parser("datagen", help="write synthetic delivery orders to CSV")
    datagen.add_arguments(gen)
    gen.set_defaults(func=datagen.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
