"""Start a canary in the routing config: add a version at a small weight.

    python deploy/scripts/canary.py deploy/routing.toml --model delivery_eta --version 1.2.0
    python deploy/scripts/canary.py deploy/routing.toml --model delivery_eta --version 1.2.0 \
        --weight 5 --label canary
    python deploy/scripts/canary.py deploy/routing.toml --model delivery_eta \
        --newest-in models --print-version

With --newest-in REGISTRY the version is the newest one of the model in that registry
(a <model>/<version>/model.json), provided it is newer than stable and not routed
yet; exit status 3 when there is none. --print-version prints it and edits nothing.

The new route takes --weight percent (default 5) from the stable version's weight
and gets the label (default "canary"). Only the model's `routes = [...]` array is
rewritten (comments inside that array are not kept); everything else in the file,
comments included, stays byte for byte. Refuses (exit 1) when the version is
already routed, the label is taken, or the stable version has too little weight to
give. Standard library only. Validate the result with
`waybill routing check deploy/routing.toml --against origin/main`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

NOTHING_NEW = 3
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


class CanaryError(Exception):
    pass


def _semver_key(version: str) -> tuple[int, int, int, int, str]:
    found = SEMVER.match(version)
    if found is None:
        raise CanaryError(f"{version!r} is not a semantic version")
    major, minor, patch, pre = found.groups()
    # A release sorts after its pre-releases (1.2.0-rc1 < 1.2.0).
    return int(major), int(minor), int(patch), 0 if pre else 1, pre or ""


def newest_unrouted(text: str, model: str, registry: Path) -> str | None:
    """The newest registry version of model newer than stable and not routed, if any."""
    table = tomllib.loads(text).get("models", {}).get(model)
    if not isinstance(table, dict) or not isinstance(table.get("stable"), str):
        raise CanaryError(f"model {model!r} has no stable version in the routing file")
    routed = {r.get("version") for r in table.get("routes", [])}
    shadow = table.get("shadow")
    if isinstance(shadow, dict):
        routed.add(shadow.get("version"))
    stable = _semver_key(table["stable"])
    found = [
        p.parent.name for p in (registry / model).glob("*/model.json")
        if SEMVER.match(p.parent.name)
    ]
    newer = [v for v in found if v not in routed and _semver_key(v) > stable]
    return max(newer, key=_semver_key) if newer else None


def _section_bounds(text: str, model: str) -> tuple[int, int]:
    header = re.compile(r"^\[models\." + re.escape(model) + r"\][ \t]*(#.*)?$", re.MULTILINE)
    found = header.search(text)
    if found is None:
        raise CanaryError(f"no [models.{model}] table in the file")
    following = re.compile(r"^[ \t]*\[", re.MULTILINE).search(text, found.end())
    return found.end(), following.start() if following else len(text)


def _array_end(text: str, start: int) -> int:
    """Index just past the ']' closing the array whose '[' is at start."""
    depth, i, quote = 0, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise CanaryError("unterminated routes array")


def _render(routes: list[dict[str, Any]]) -> str:
    lines = ["routes = ["]
    for route in routes:
        fields = [f'version = "{route["version"]}"', f'weight = {route["weight"]}']
        if "label" in route:
            fields.append(f'label = "{route["label"]}"')
        lines.append("  { " + ", ".join(fields) + " },")
    lines.append("]")
    return "\n".join(lines)


def add_canary(text: str, model: str, version: str, weight: int, label: str) -> str:
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CanaryError(f"not valid TOML: {err}") from None
    table = config.get("models", {}).get(model)
    if not isinstance(table, dict):
        raise CanaryError(f"model {model!r} is not in the routing file")
    routes = table.get("routes")
    stable = table.get("stable")
    if not isinstance(routes, list) or not routes or not isinstance(stable, str):
        raise CanaryError(f"models.{model} needs `stable` and a non-empty `routes` array")
    if not 1 <= weight <= 99:
        raise CanaryError(f"weight {weight} must be from 1 to 99")
    if any(r.get("version") == version for r in routes):
        raise CanaryError(f"{version} is already routed for {model}")
    if any(r.get("label") == label for r in routes):
        raise CanaryError(f"label {label!r} is already used for {model}: finish that canary first")
    stable_route = next((r for r in routes if r.get("version") == stable), None)
    if stable_route is None or stable_route.get("weight", 0) - weight < 1:
        have = None if stable_route is None else stable_route.get("weight")
        raise CanaryError(f"stable {stable} has weight {have}: cannot give {weight} to a canary")

    new_routes = [dict(r) for r in routes]
    for route in new_routes:
        if route["version"] == stable:
            route["weight"] -= weight
    new_routes.append({"version": version, "weight": weight, "label": label})

    begin, end = _section_bounds(text, model)
    found = re.compile(r"^routes[ \t]*=[ \t]*\[", re.MULTILINE).search(text, begin, end)
    if found is None:
        raise CanaryError(f"models.{model}.routes is not an inline `routes = [...]` array")
    close = _array_end(text, found.end() - 1)
    updated = text[: found.start()] + _render(new_routes) + text[close:]

    check = tomllib.loads(updated)["models"][model]
    if check["routes"] != new_routes or check["stable"] != stable:
        raise CanaryError("internal error: the rewritten file does not parse to the new routes")
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routing", type=Path, help="routing config to edit in place")
    parser.add_argument("--model", required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the version to add")
    which.add_argument("--newest-in", type=Path, metavar="REGISTRY",
                       help="add the newest unrouted version found in this registry")
    parser.add_argument("--print-version", action="store_true",
                        help="with --newest-in: print the version, edit nothing")
    parser.add_argument("--weight", type=int, default=5, help="canary percent (default 5)")
    parser.add_argument("--label", default="canary", help='label (default "canary")')
    args = parser.parse_args(argv)
    try:
        text = args.routing.read_text(encoding="utf-8")
        version = args.version
        if args.newest_in is not None:
            version = newest_unrouted(text, args.model, args.newest_in)
            if version is None:
                print(f"canary: no {args.model} version in {args.newest_in} is newer than "
                      "stable and unrouted", file=sys.stderr)
                return NOTHING_NEW
            if args.print_version:
                print(version)
                return 0
        updated = add_canary(text, args.model, version, args.weight, args.label)
    except (OSError, CanaryError, tomllib.TOMLDecodeError) as err:
        print(f"canary: {err}", file=sys.stderr)
        return 1
    args.routing.write_text(updated, encoding="utf-8")
    print(f"canary: {args.model} {version} at {args.weight}% ({args.label}) in {args.routing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
