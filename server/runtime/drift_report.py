"""`waybill drift`: a running server's drift report as text, and optionally as a PNG.

The report comes from the admin GetDrift call, so it shows exactly what the server's
alert rules and metrics see. The plot draws, per feature of the chosen window, the
training reference share of each bin beside the live share, most shifted features
first; the matplotlib Agg backend writes the file without a display.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc
from waybill.v1 import admin_pb2, admin_pb2_grpc

PLOT_FEATURES = 12  # at most this many panels, the most shifted first
PLOT_BINS = 20  # per panel, the bins that contribute most to the PSI


def _time(seconds: float) -> str:
    if not seconds:
        return "now"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _optional(message: admin_pb2.FeatureDrift, name: str) -> float | None:
    return getattr(message, name) if message.HasField(name) else None


def pick_window(drift: admin_pb2.VersionDrift, which: str) -> admin_pb2.DriftWindow:
    """``latest`` = the newest completed window (else the open one); ``current`` = open."""
    if which == "latest" and drift.completed:
        newest: admin_pb2.DriftWindow = drift.completed[0]
        return newest
    return drift.current


def no_verdict(window: admin_pb2.DriftWindow) -> str | None:
    """Why the window gives no drift verdict, or None when it does (status "ok")."""
    if window.status == "ok":
        return None
    if window.status == "not_enough_data":
        return (f"no verdict: too few rows ({window.rows}, under the server's "
                "--drift-min-rows)")
    if window.status == "open":
        return f"no verdict: the window is still open ({window.rows} rows so far)"
    return f"no verdict: window status {window.status!r}"


def render(drift: admin_pb2.VersionDrift, window: admin_pb2.DriftWindow) -> str:
    """The window as text. A drift verdict (YES/no) only for a window whose status is "ok";
    otherwise the column shows "-" and the last line says why there is none."""
    why_not = no_verdict(window)
    lines = [
        f"{drift.model} {drift.version}: window {_time(window.started_at)} .. "
        f"{_time(window.ended_at)}, {window.rows} rows, {window.status}"
        + (f"; max PSI {window.max_psi:.3f} ({window.max_psi_feature})"
           if window.max_psi_feature else ""),
        f"  {'feature':<18} {'kind':<11} {'PSI':>7} {'KS':>6} {'p':>8} {'chi2 p':>8} "
        f"{'unseen':>7} {'missing':>7}  drift  most shifted bins",
    ]
    for f in sorted([*window.features, window.prediction], key=lambda f: -f.psi):
        name = f.name or "(prediction)"
        shifted = ", ".join(f"{b.label} {b.reference:.1%}->{b.current:.1%}"
                            for b in f.top_bins)
        drifted = "-" if why_not else "YES" if f.drifted else "no"
        lines.append(
            f"  {name:<18} {f.kind:<11} {f.psi:>7.3f} {_number(_optional(f, 'ks_statistic')):>6} "
            f"{_number(_optional(f, 'ks_pvalue'), 4):>8} "
            f"{_number(_optional(f, 'chi2_pvalue'), 4):>8} "
            f"{_number(_optional(f, 'unseen_rate')):>7} {f.missing_rate:>7.3f}  {drifted:<5}  "
            f"{shifted}")
    if why_not:
        lines.append(f"  {why_not}; the statistics are shown for information")
    return "\n".join(lines)


def plot(drift: admin_pb2.VersionDrift, window: admin_pb2.DriftWindow, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    from matplotlib import pyplot as plt

    features = sorted([*window.features, window.prediction], key=lambda f: -f.psi)
    features = features[:PLOT_FEATURES]
    columns = 3
    rows = math.ceil(len(features) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows),
                                squeeze=False)
    for ax, feature in zip(axes.flat, features, strict=False):
        bins = list(feature.bins)
        if len(bins) > PLOT_BINS:
            bins = sorted(bins, key=lambda b: -abs(b.contribution))[:PLOT_BINS]
        positions = range(len(bins))
        ax.bar([p - 0.2 for p in positions], [b.reference for b in bins], 0.4,
               label="training", color="#8da0cb")
        ax.bar([p + 0.2 for p in positions], [b.current for b in bins], 0.4,
               label="live", color="#fc8d62")
        ax.set_xticks(list(positions), [b.label for b in bins], rotation=60, ha="right",
                      fontsize=7)
        ax.set_title(f"{feature.name or 'prediction'}  PSI {feature.psi:.3f}"
                     + ("  DRIFT" if feature.drifted and window.status == "ok" else ""),
                     fontsize=9)
        ax.set_ylabel("share", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(features):]:
        ax.axis("off")
    figure.suptitle(f"{drift.model} {drift.version}: {window.rows} rows "
                    f"({no_verdict(window) or window.status}), {_time(window.started_at)} .. "
                    f"{_time(window.ended_at)}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", default="127.0.0.1:50052",
                        help="the server's admin address (default 127.0.0.1:50052)")
    parser.add_argument("--token-file", type=Path, help="admin bearer token file")
    parser.add_argument("--model", default="", help="one model (default: all)")
    parser.add_argument("--version", default="", help="one version (default: all served)")
    parser.add_argument("--window", choices=("latest", "current"), default="latest",
                        help="the newest completed window (default) or the open one")
    parser.add_argument("--plot", type=Path,
                        help="write a PNG of reference against live distributions (needs "
                             "one version: set --model and --version when several are served)")


def run(args: argparse.Namespace) -> int:
    metadata: tuple[tuple[str, str], ...] = ()
    if args.token_file is not None:
        metadata = (("authorization", f"Bearer {args.token_file.read_text().strip()}"),)
    with grpc.insecure_channel(args.admin) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            reply = stub.GetDrift(admin_pb2.GetDriftRequest(model=args.model,
                                                            version=args.version),
                                  metadata=metadata, timeout=30)
        except grpc.RpcError as err:
            print(f"waybill drift: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    if not reply.versions:
        print("waybill drift: no served version matches", file=sys.stderr)
        return 1
    for drift in reply.versions:
        print(render(drift, pick_window(drift, args.window)))
    if args.plot is not None:
        if len(reply.versions) != 1:
            print("waybill drift: --plot draws one version; name it with --model and "
                  "--version", file=sys.stderr)
            return 2
        drift = reply.versions[0]
        plot(drift, pick_window(drift, args.window), args.plot)
        print(f"wrote {args.plot}")
    return 0
