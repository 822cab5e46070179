"""Shared fixtures: a tiny registry trained by the real pipeline, and a real server on it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from models import datagen, dataset, training
from tests import pgcluster
from tests.harness import ServerProcess
from tests.pgcluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
# On 2 busy cores generating an input can be slow; that is not a failure of what a property
# checks, so the slowness health check and per-example deadlines are off (same examples,
# same seeds: derandomize keeps runs deterministic).
settings.register_profile("waybill", suppress_health_check=[HealthCheck.too_slow],
                          deadline=None, derandomize=True)
settings.load_profile("waybill")
SPECS = ROOT / "models" / "specs"
# Small and quick: enough rows and trees for the two versions to differ and to
# beat the naive baseline, while the whole registry trains in a few seconds.
TINY_ROWS = 12_000
TINY_ITERATIONS = 60


def tiny_spec(version: str, **training_overrides: object) -> dataset.DatasetSpec:
    spec = dataset.load_spec(SPECS / f"delivery_eta-{version}.toml")
    params = {"iterations": TINY_ITERATIONS, **training_overrides}
    return spec.model_copy(update={"training": spec.training.model_copy(update=params)})


@pytest.fixture(scope="session")
def orders() -> object:
    return datagen.generate(TINY_ROWS, seed=11, start=date(2024, 1, 1), end=date(2025, 12, 31))


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, orders: object) -> Path:
    root = tmp_path_factory.mktemp("registry")
    for version in ("1.0.0", "1.1.0"):
        spec = tiny_spec(version)
        frame = dataset.coerce_frame(spec, orders)  # type: ignore[arg-type]
        result = training.train(spec, frame, progress=None)
        training.publish_version(result, root=root, version=version, revision="test")
    return root


@pytest.fixture(scope="session")
def rows(orders: object) -> list[dict[str, object]]:
    """Request rows carrying every feature of 1.1.0 (a superset of 1.0.0's)."""
    spec = tiny_spec("1.1.0")
    names = [f.name for f in spec.features]
    frame = orders.tail(200)  # type: ignore[attr-defined]
    out = []
    for record in frame[names].to_dict("records"):
        row: dict[str, object] = {}
        for key, value in record.items():
            if isinstance(value, float) and math.isnan(value):
                continue  # optional and missing: leave the key out
            row[key] = value.item() if hasattr(value, "item") else value
        out.append(row)
    return out


@pytest.fixture(scope="module")
def server(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("server")
    with ServerProcess(workdir, "--registry", str(registry), "--max-rows", "200") as proc:
        yield proc


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the session (tests/pgcluster.py); a test takes
    a fresh database of it with ``postgres.database()``. Skips, saying why, only where
    PostgreSQL is not installed and could not be."""
    reason = pgcluster.unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
