"""A model version loaded for serving: checked files, CatBoost model, validator.

Loading is the only way a version can take traffic, and it refuses anything
that does not check out: manifest schema, CatBoost magic (never pickle), sha256,
the model's own feature names and categorical columns against the manifest,
and a probe prediction with the expected output shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from catboost import CatBoost, CatBoostError

from models.artifact import DAY_TOLERANCE, MODEL_FILE, ArtifactError, FeatureType, Manifest
from models.calendar import text_of_day
from models.kinds import Kind, Scored, kind_of
from models.registry import check_files, version_path
from models.validation import Columns, RowValidator, ValidatedRows


class LoadedVersion:
    """One servable version. Immutable after load; safe to share across threads."""

    def __init__(self, manifest: Manifest, model: CatBoost, path: Path) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        self.path = path
        self.output = manifest.output
        self.kind: Kind = kind_of(manifest.output)
        self.coverage = manifest.output.interval_coverage
        # Histogram buckets that suit the version's unit and range: the bin edges of its
        # training predictions.
        self.value_bounds = manifest.reference.prediction.bin_edges
        self.feature_names = frozenset(f.name for f in manifest.features)
        self._model = model
        self._validator = RowValidator(manifest)

    @classmethod
    def load(cls, root: Path, name: str, version: str) -> LoadedVersion:
        path = version_path(root, name, version)
        manifest = check_files(path, root)
        kind = kind_of(manifest.output)
        model = kind.model_class()
        try:
            model.load_model(str(path / MODEL_FILE), format="cbm")
        except CatBoostError as err:
            raise ArtifactError(f"{path / MODEL_FILE}: CatBoost cannot load it ({err})") from None
        _silence(model)
        _check_model_matches(manifest, model, path)
        kind.check(manifest.output, model, str(path))
        loaded = cls(manifest, model, path)
        loaded._probe()
        return loaded

    def validate(
        self, rows: Columns | Sequence[Mapping[str, Any]],
        also_known: frozenset[str] = frozenset(),
    ) -> ValidatedRows:
        return self._validator.validate(rows, also_known)

    def score(self, matrix: np.ndarray) -> Scored:
        """One CatBoost call for the whole batch. CPU-bound: call it off the event loop."""
        try:
            return self.kind.score(self.output, self._model, matrix)
        except ArtifactError as err:
            raise ArtifactError(f"{self.name} {self.version}: {err}") from None

    def _probe(self) -> None:
        """Score one typical row so a model that loads but cannot predict never serves."""
        row: list[object] = []
        for spec in self.manifest.model_features:
            ref = self.manifest.reference.features[spec.name]
            if spec.type is FeatureType.CATEGORICAL:
                freqs = getattr(ref, "frequencies", {}) or {"": 1.0}
                row.append(max(freqs, key=freqs.__getitem__))
            else:
                edges = getattr(ref, "bin_edges", ()) or (0.0,)
                row.append(float(edges[len(edges) // 2]))
        try:
            scored = self.score(np.array([row], dtype=object))
        except (CatBoostError, ValueError, TypeError, ArtifactError) as err:
            raise ArtifactError(f"{self.path}: probe prediction failed ({err})") from None
        if not math.isfinite(float(scored.value[0])):
            raise ArtifactError(f"{self.path}: probe prediction is not finite")


def _silence(model: CatBoost) -> None:
    """Make ``predict`` silent whatever ``verbose`` the model was trained with.

    Loading gives the model its training parameters, ``verbose`` among them, and
    ``predict`` uses that one when its own ``verbose`` is false
    (``verbose or get_param("verbose")``), so no argument can turn it off. A verbose
    predict raises CatBoost's process-wide log level while it runs, and a concurrent
    one (another predict thread, the shadow scorer) then prints ``Object info sizes``
    to stdout, between the JSON log lines. ``set_params`` refuses a fitted model;
    the parameter ``get_param`` reads is set here instead.
    """
    model._init_params["verbose"] = False


def _check_model_matches(manifest: Manifest, model: CatBoost, path: Path) -> None:
    expected = [f.name for f in manifest.model_features]
    actual = list(model.feature_names_ or [])
    if actual != expected:
        raise ArtifactError(
            f"{path}: model.cbm features {actual} do not match the manifest's {expected}"
        )
    expected_cat = [i for i, f in enumerate(manifest.model_features)
                    if f.type is FeatureType.CATEGORICAL]
    actual_cat = sorted(model.get_cat_feature_indices())
    if actual_cat != expected_cat:
        raise ArtifactError(
            f"{path}: model.cbm categorical columns {actual_cat} do not match the "
            f"manifest's {expected_cat}"
        )


def promised_days(median: float) -> int:
    """Days from the order date to the predicted delivery date: round half up."""
    return math.floor(median + 0.5)


def delivery_dates(order_days: Sequence[int | None], median: Sequence[float],
                   upper: Sequence[float] | None) -> tuple[list[str], list[str]]:
    """The documented rule, per row: order date + round-half-up(median) and + ceil(upper)
    days, as YYYY-MM-DD; "" for a row without an order date, and a latest date only
    with an interval. Order dates are days since 1970-01-01 (:mod:`models.calendar`).

    ``upper`` is read with :data:`DAY_TOLERANCE`, as training measured coverage.
    Plain Python on purpose: per row it costs about what numpy's fixed cost per call
    does, and most requests hold one row.
    """
    expected, latest = [], []
    highs: Sequence[float | None] = [None] * len(median) if upper is None else upper
    for day, mid, high in zip(order_days, median, highs, strict=True):
        if day is None:
            expected.append("")
            latest.append("")
        else:
            expected.append(text_of_day(day + promised_days(mid)))
            latest.append("" if high is None
                          else text_of_day(day + math.ceil(high - DAY_TOLERANCE)))
    return expected, latest
