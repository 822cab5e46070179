"""A small, hand-written manifest for unit tests that need a schema but no model."""

from __future__ import annotations

from models.artifact import (
    CategoricalReference,
    FeatureSpec,
    FeatureType,
    Manifest,
    Metrics,
    NumericReference,
    OutputSpec,
    ReferenceSpec,
)


def _numeric_ref() -> NumericReference:
    return NumericReference(count=100, bin_edges=(0.0, 1.0, 2.0), frequencies=(0.1, 0.4, 0.4, 0.1))


def manifest(**overrides: object) -> Manifest:
    features = (
        FeatureSpec(name="order_date", type=FeatureType.DATE),
        FeatureSpec(name="distance_km", type=FeatureType.NUMERIC, min=0, max=5000),
        FeatureSpec(name="day_of_week", type=FeatureType.INTEGER, min=0, max=6),
        FeatureSpec(name="after_cutoff", type=FeatureType.BOOLEAN),
        FeatureSpec(name="service_level", type=FeatureType.CATEGORICAL,
                    categories=("express", "ground", "overnight")),
        FeatureSpec(name="zip_code", type=FeatureType.CATEGORICAL, categories=("94107",),
                    allow_unknown=True),
        FeatureSpec(name="weight_kg", type=FeatureType.NUMERIC, min=0, max=70, required=False),
    )
    refs = {
        f.name: (CategoricalReference(count=100, frequencies={c: 1 / len(f.categories)
                                                               for c in f.categories})
                 if f.type is FeatureType.CATEGORICAL else _numeric_ref())
        for f in features if f.model_input
    }
    values: dict[str, object] = {
        "name": "delivery_eta",
        "version": "1.0.0",
        "created_at": "2026-11-26T00:00:00Z",
        "code_revision": "test",
        "sha256": "0" * 64,
        "size_bytes": 1,
        "features": features,
        "output": OutputSpec(),
        "reference": ReferenceSpec(features=refs, prediction=_numeric_ref()),
        "metrics": Metrics(mae=1, rmse=1, interval_coverage=0.8, within_one_day=0.5,
                           baseline_mae=2, train_rows=10, validation_rows=5,
                           validation_start="2026-01-01"),
    }
    values.update(overrides)
    return Manifest.model_validate(values)


def good_row() -> dict[str, object]:
    return {
        "order_date": "2026-11-26",
        "distance_km": 512.5,
        "day_of_week": 3.0,
        "after_cutoff": False,
        "service_level": "ground",
        "zip_code": "94107",
        "weight_kg": 2.0,
    }
