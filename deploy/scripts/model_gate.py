"""Model validation gate: may a candidate version be registered?

Compares the candidate's manifest (model.json) with the manifest of the stable
version that deploy/routing.toml names for the same model, and passes only when

  * the candidate's validation MAE is strictly lower than the stable version's, and
  * the candidate's 80% interval covers at least --min-coverage (default 0.75) of
    the validation rows.

    python deploy/scripts/model_gate.py models/delivery_eta/1.2.0/model.json
    python deploy/scripts/model_gate.py CANDIDATE --routing deploy/routing.toml --registry models

Exit status: 0 pass, 1 fail, 2 cannot decide (unreadable manifest, the model has no
stable version in the routing file, ...). With --allow-new-model, a model that the
routing file does not route yet (its first version) passes: there is nothing to beat.
Standard library only, so CI can run it before anything is installed. It reads the
numbers the training pipeline recorded; `waybill registry verify` is what checks the
artifact itself (digest, schema, probe).

Both MAEs are measured on each version's own time-based holdout. When the two
holdouts differ (another data set or another validation window) the comparison is
reported as such; a like-for-like comparison needs the stable version re-scored
on the candidate's holdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

PASS, FAIL, UNDECIDED = 0, 1, 2


class GateError(Exception):
    """The gate cannot decide (exit 2)."""


class NoStable(GateError):
    """The routing file has no stable version for the model."""


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GateError(f"{path}: cannot read manifest ({err})") from None
    if not isinstance(manifest, dict):
        raise GateError(f"{path}: not a manifest (expected a JSON object)")
    for key in ("name", "version", "metrics"):
        if key not in manifest:
            raise GateError(f"{path}: manifest has no {key!r}")
    return manifest


def metric(manifest: dict[str, Any], key: str, source: Path) -> float:
    value = manifest["metrics"].get(key) if isinstance(manifest["metrics"], dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GateError(f"{source}: metrics.{key} = {value!r} is not a finite number")
    return float(value)


def stable_version(routing: Path, model: str) -> str:
    try:
        config = tomllib.loads(routing.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise GateError(f"{routing}: cannot read routing config ({err})") from None
    table = config.get("models", {}).get(model)
    if not isinstance(table, dict) or not isinstance(table.get("stable"), str):
        raise NoStable(f"{routing}: model {model!r} has no stable version to compare with")
    return str(table["stable"])


def holdout(manifest: dict[str, Any]) -> tuple[object, object, object]:
    metrics = manifest.get("metrics", {})
    data = manifest.get("training", {}).get("data", {})
    return (data.get("sha256"), metrics.get("validation_start"), metrics.get("validation_rows"))


def gate(candidate_path: Path, stable_path: Path, min_coverage: float) -> tuple[int, list[str]]:
    candidate = read_manifest(candidate_path)
    stable = read_manifest(stable_path)
    name, version = candidate["name"], candidate["version"]
    if stable["name"] != name:
        raise GateError(f"stable manifest {stable_path} is model {stable['name']!r}, not {name!r}")
    if stable["version"] == version:
        raise GateError(f"{name} {version} is the stable version itself")
    cand_mae = metric(candidate, "mae", candidate_path)
    cand_cov = metric(candidate, "interval_coverage", candidate_path)
    stable_mae = metric(stable, "mae", stable_path)

    lines = [f"model gate: {name} {version} (candidate) vs {stable['version']} (stable)"]
    failures = 0
    if cand_mae < stable_mae:
        lines.append(f"  ok    validation MAE {cand_mae:.4f} < stable {stable_mae:.4f}")
    else:
        failures += 1
        lines.append(f"  FAIL  validation MAE {cand_mae:.4f} is not below stable {stable_mae:.4f}")
    if cand_cov >= min_coverage:
        lines.append(f"  ok    interval coverage {cand_cov:.4f} >= {min_coverage:.2f}")
    else:
        failures += 1
        lines.append(f"  FAIL  interval coverage {cand_cov:.4f} < {min_coverage:.2f}")
    if holdout(candidate) != holdout(stable):
        lines.append(
            "  note  the two MAEs come from different holdouts "
            f"(data sha256, validation start, rows: candidate {holdout(candidate)}, "
            f"stable {holdout(stable)})"
        )
    lines.append("  result: " + ("PASS" if failures == 0 else "FAIL"))
    return (PASS if failures == 0 else FAIL), lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path, help="the candidate's model.json")
    parser.add_argument("--routing", type=Path, default=Path("deploy/routing.toml"),
                        help="routing config naming the stable version "
                             "(default deploy/routing.toml)")
    parser.add_argument("--registry", type=Path,
                        help="registry root (default: the candidate's <root>/<name>/<version>/)")
    parser.add_argument("--stable-manifest", type=Path,
                        help="compare with this model.json instead of the routing file's stable")
    parser.add_argument("--min-coverage", type=float, default=0.75,
                        help="least interval coverage on the holdout (default 0.75)")
    parser.add_argument("--allow-new-model", action="store_true",
                        help="pass a model the routing file does not route yet")
    args = parser.parse_args(argv)
    try:
        stable_path = args.stable_manifest
        if stable_path is None:
            candidate = read_manifest(args.candidate)
            registry = args.registry or args.candidate.resolve().parent.parent.parent
            try:
                stable = stable_version(args.routing, str(candidate["name"]))
            except NoStable as err:
                if not args.allow_new_model:
                    raise
                print(f"model gate: {candidate['name']} {candidate['version']}: {err}; "
                      "a new model has nothing to beat\n  result: PASS")
                return PASS
            stable_path = registry / str(candidate["name"]) / stable / "model.json"
        status, lines = gate(args.candidate, stable_path, args.min_coverage)
    except GateError as err:
        print(f"model gate: cannot decide: {err}", file=sys.stderr)
        return UNDECIDED
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
