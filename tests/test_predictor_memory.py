"""A version the routing no longer serves is freed: its batcher (which holds it) and its
drift tracker go with the snapshot that dropped it, so reloads do not leak models."""

from __future__ import annotations

import asyncio
import gc
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from models.loaded import LoadedVersion
from models.validation import rows_to_columns
from router.table import RoutingTable
from server.monitoring.drift import DriftSettings
from server.monitoring.trackers import DriftBook
from server.serving.predictor import Predictor, PredictQuery
from server.serving.state import ServingState, Snapshot

ROOT = Path(__file__).resolve().parent.parent
MODEL = "delivery_eta"


def snapshot_of(*versions: LoadedVersion) -> Snapshot:
    table = RoutingTable.from_versions({MODEL: [v.version for v in versions]})
    return Snapshot.build(table, {(MODEL, v.version): v for v in versions})


def test_an_unserved_version_is_freed_after_the_next_snapshot(
        rows: list[dict[str, object]]) -> None:
    """Freed by reference counting alone, with the cyclic collector off: the server
    freezes what it loaded at start (gc.freeze in WaybillServer.start), so a version in a
    reference cycle would never be freed."""
    gc.disable()
    try:
        _unserved_version_is_freed(rows)
    finally:
        gc.enable()


def _unserved_version_is_freed(rows: list[dict[str, object]]) -> None:
    old = LoadedVersion.load(ROOT / "models", MODEL, "1.0.0")
    new = LoadedVersion.load(ROOT / "models", MODEL, "1.1.0")
    state = ServingState(snapshot_of(old))
    drift = DriftBook(DriftSettings())
    with ThreadPoolExecutor(1) as executor:
        predictor = Predictor(state, executor, 100, batch_delay_s=0.0, drift=drift)
        first = rows_to_columns([{k: v for k, v in rows[0].items() if k in old.feature_names}])
        asyncio.run(predictor.predict(PredictQuery(MODEL, 1, lambda: first)))
        tracker = weakref.ref(drift.tracker(old))
        gone = weakref.ref(old)
        state.update(lambda _cur: snapshot_of(new))
        del old
        second = rows_to_columns([rows[0]])
        asyncio.run(predictor.predict(PredictQuery(MODEL, 1, lambda: second)))
        assert gone() is None, gc.get_referrers(gone())
        assert tracker() is None
