"""Build the committed demo versions reproducibly: ``python -m models.build_demo``.

Generates the synthetic orders with a fixed seed (:mod:`models.datagen`, scenario
``none``, 2024-01-01 .. 2026-06-30), writes them to a temporary CSV, and trains
``delivery_eta`` 1.0.0 and 1.1.0 from their specs in ``models/specs/`` through
the same CSV path a user's data takes. Existing demo versions are refused unless
``--force``, which removes exactly those version directories - and only after
both models trained, so a failed build leaves the registry as it was.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from models import datagen, registry
from models.artifact import MODEL_FILE, ArtifactError, sha256_file
from models.dataset import DatasetError, load_csv, load_spec
from models.training import (
    TrainResult,
    WorseThanBaseline,
    check_beats_baseline,
    code_revision,
    publish_version,
    summary_table,
    train,
)

SPEC_DIR = Path(__file__).resolve().parent / "specs"
DEMO_VERSIONS: tuple[tuple[str, Path], ...] = (
    ("1.0.0", SPEC_DIR / "delivery_eta-1.0.0.toml"),
    ("1.1.0", SPEC_DIR / "delivery_eta-1.1.0.toml"),
)
DEMO_ROWS = datagen.DEFAULT_ROWS
DEMO_SEED = datagen.DEFAULT_SEED
DATA_FILE = "delivery_orders.csv"


def build(
    root: Path = registry.DEFAULT_ROOT,
    *,
    force: bool = False,
    rows: int = DEMO_ROWS,
    keep_data: Path | None = None,
) -> list[Path]:
    """Generate, train and publish every demo version; return their directories."""
    specs = [(version, load_spec(path)) for version, path in DEMO_VERSIONS]
    targets = [registry.version_path(root, spec.name, version) for version, spec in specs]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise ArtifactError(
            f"demo versions already exist: {', '.join(map(str, existing))}; "
            "pass --force to rebuild them"
        )

    # Read the revision before --force removes tracked files (that would read as dirty).
    revision = code_revision()
    frame = datagen.generate(rows, DEMO_SEED, datagen.DEFAULT_START, datagen.DEFAULT_END)
    results: list[tuple[str, TrainResult]] = []
    with tempfile.TemporaryDirectory(prefix="waybill-demo-") as tmp:
        csv = keep_data or Path(tmp) / DATA_FILE
        datagen.write_csv(frame, csv)
        digest = sha256_file(csv)
        print(f"generated {len(frame)} orders (seed {DEMO_SEED}) -> {csv}", file=sys.stderr)
        for version, spec in specs:
            print(f"training {spec.name} {version} ...", file=sys.stderr)
            typed = load_csv(spec, csv)
            result = train(
                spec, typed, data_source=DATA_FILE, data_sha256=digest, progress=sys.stderr
            )
            check_beats_baseline(result)  # before anything is replaced or published
            results.append((version, result))

    published = []
    for (version, result), target in zip(results, targets, strict=True):
        if target.exists():  # only reachable with --force
            shutil.rmtree(target)
        path = publish_version(result, root=root, version=version, revision=revision)
        size_kb = (path / MODEL_FILE).stat().st_size / 1024
        print(summary_table(result, f"{result.spec.name} {version} -> {path} ({size_kb:.0f} KB)"))
        print()
        published.append(path)
    return published


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        default=registry.DEFAULT_ROOT,
        help=f"registry root (default {registry.DEFAULT_ROOT})",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the demo versions if they exist"
    )
    parser.add_argument("--keep-data", type=Path, help="also keep the generated CSV here")


def run(args: argparse.Namespace) -> int:
    try:
        build(args.registry, force=args.force, keep_data=args.keep_data)
    except (ArtifactError, DatasetError, WorseThanBaseline) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.build_demo", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
