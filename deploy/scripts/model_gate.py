"""Model validation gate: may a candidate version be registered?

Compares the candidate's manifest (model.json) with the manifest of the stable
version that deploy/routing.toml names for the same model. The figures compared
follow the model's kind (output.kind; a manifest without one is the demo's
MultiQuantile delivery model, kind quantiles):

  * regression kinds (quantiles, regression): the candidate's validation MAE must be
    strictly lower than the stable version's and, when both versions answer an
    interval (every quantile model; a point regressor with output.interval), the
    candidate's interval must cover at least --min-coverage (default 0.75) of the
    validation rows;
  * classifiers (classification): the candidate's validation log loss must be
    strictly lower than the stable version's.

A candidate of another kind than the stable version fails (output.kind), and so
does one whose manifest lacks a figure the comparison needs (metrics.<name>).

    python deploy/scripts/model_gate.py models/delivery_eta/1.2.0/model.json
    python deploy/scripts/model_gate.py CANDIDATE --routing deploy/routing.toml --registry models

Exit status: 0 pass, 1 fail, 2 cannot decide (unreadable manifest, the model has no
stable version in the routing file, the stable manifest lacks a figure, ...). With
--allow-new-model, a model that the routing file does not route yet (its first
version) passes: there is nothing to beat. Standard library only, so CI can run it
before anything is installed. It reads the numbers the training pipeline (or
`waybill registry import`) recorded; `waybill registry verify` is what checks the
artifact itself (digest, schema, probe).

Both figures are measured on each version's own holdout. When the two holdouts
differ (another data set or another validation window) the comparison is reported
as such; a like-for-like comparison needs the stable version re-scored on the
candidate's holdout.
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
QUANTILES, REGRESSION, CLASSIFICATION = "quantiles", "regression", "classification"
KINDS = (QUANTILES, REGRESSION, CLASSIFICATION)


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
    for key in ("name", "version"):
        if key not in manifest:
            raise GateError(f"{path}: manifest has no {key!r}")
    return manifest


def metric(manifest: dict[str, Any], key: str, source: Path) -> float:
    """A figure of the stable manifest; the gate cannot decide without it."""
    value, problem = figure(manifest, key)
    if value is None:
        raise GateError(f"{source}: metrics.{key} {problem}")
    return value


def figure(manifest: dict[str, Any], key: str) -> tuple[float | None, str | None]:
    """``(value, None)``, or ``(None, why not)`` when metrics.<key> is missing or not a
    finite number."""
    metrics = manifest.get("metrics")
    value = metrics.get(key) if isinstance(metrics, dict) else None
    if value is None:
        return None, "is missing"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"= {value!r} is not a finite number"
    return float(value), None


def kind_of(manifest: dict[str, Any], source: Path) -> str:
    """output.kind; a manifest from before kinds is the demo's quantile model."""
    output = manifest.get("output", {})
    if not isinstance(output, dict):
        raise GateError(f"{source}: output is not a JSON object")
    kind = output.get("kind", QUANTILES)
    if kind not in KINDS:
        raise GateError(f"{source}: output.kind = {kind!r} is not one of {', '.join(KINDS)}")
    return str(kind)


def has_interval(manifest: dict[str, Any], kind: str) -> bool:
    """Whether the version answers an interval: every quantile model, and a point
    regressor whose output has a (conformal) interval."""
    if kind == QUANTILES:
        return True
    return kind == REGRESSION and isinstance(manifest.get("output", {}).get("interval"), dict)


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
    metrics = manifest.get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    training = manifest.get("training")
    data = training.get("data") if isinstance(training, dict) else None
    data = data if isinstance(data, dict) else {}
    return (data.get("sha256"), metrics.get("validation_start"), metrics.get("validation_rows"))


def gate(candidate_path: Path, stable_path: Path, min_coverage: float) -> tuple[int, list[str]]:
    candidate = read_manifest(candidate_path)
    stable = read_manifest(stable_path)
    name, version = candidate["name"], candidate["version"]
    if stable["name"] != name:
        raise GateError(f"stable manifest {stable_path} is model {stable['name']!r}, not {name!r}")
    if stable["version"] == version:
        raise GateError(f"{name} {version} is the stable version itself")
    kind = kind_of(candidate, candidate_path)
    stable_kind = kind_of(stable, stable_path)

    lines = [f"model gate: {name} {version} (candidate) vs {stable['version']} (stable)"]
    if kind != stable_kind:
        lines.append(f"  FAIL  output.kind {kind} is not the stable version's {stable_kind}: "
                     "the gate compares versions of one kind only")
        lines.append("  result: FAIL")
        return FAIL, lines
    checks: list[tuple[bool, str]] = []
    notes: list[str] = []
    if kind == CLASSIFICATION:
        compared = "log losses"
        checks.append(lower_is_better(candidate, stable, stable_path, "log_loss",
                                      "validation log loss"))
    else:
        compared = "MAEs"
        checks.append(lower_is_better(candidate, stable, stable_path, "mae", "validation MAE"))
        cand_interval, stable_interval = (has_interval(candidate, kind),
                                          has_interval(stable, kind))
        if cand_interval and stable_interval:
            checks.append(coverage_check(candidate, min_coverage))
        elif cand_interval or stable_interval:
            which = "candidate" if stable_interval else "stable version"
            notes.append(f"  note  no interval coverage check: the {which} has no interval")
    if holdout(candidate) != holdout(stable):
        notes.append(
            f"  note  the two {compared} come from different holdouts "
            f"(data sha256, validation start, rows: candidate {holdout(candidate)}, "
            f"stable {holdout(stable)})"
        )
    failures = sum(not ok for ok, _ in checks)
    lines += [text for _, text in checks] + notes
    lines.append("  result: " + ("PASS" if failures == 0 else "FAIL"))
    return (PASS if failures == 0 else FAIL), lines


def lower_is_better(candidate: dict[str, Any], stable: dict[str, Any], stable_path: Path,
                    key: str, label: str) -> tuple[bool, str]:
    """Whether the candidate's figure is strictly below the stable version's."""
    stable_value = metric(stable, key, stable_path)
    value, problem = figure(candidate, key)
    if value is None:
        return False, f"  FAIL  metrics.{key} of the candidate {problem}"
    if value < stable_value:
        return True, f"  ok    {label} {value:.4f} < stable {stable_value:.4f}"
    return False, f"  FAIL  {label} {value:.4f} is not below stable {stable_value:.4f}"


def coverage_check(candidate: dict[str, Any], min_coverage: float) -> tuple[bool, str]:
    """Whether the candidate's interval covers at least min_coverage of its holdout."""
    value, problem = figure(candidate, "interval_coverage")
    if value is None:
        return False, f"  FAIL  metrics.interval_coverage of the candidate {problem}"
    if value >= min_coverage:
        return True, f"  ok    interval coverage {value:.4f} >= {min_coverage:.2f}"
    return False, f"  FAIL  interval coverage {value:.4f} < {min_coverage:.2f}"


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
                        help="least interval coverage on the holdout, for versions with an "
                             "interval (default 0.75)")
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
