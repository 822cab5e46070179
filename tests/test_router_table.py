"""Version choice without weights: exact pins, labels, the default, NOT_FOUND facts."""

from __future__ import annotations

import pytest

from router.table import (
    Decision,
    ModelRoutes,
    RouteReason,
    RoutingTable,
    UnknownModel,
    UnknownVersion,
    choose,
)

TABLE = RoutingTable.from_versions({"delivery_eta": ["1.0.0", "1.1.0"], "other": ["0.1.0"]})


def test_newest_version_is_default_and_stable() -> None:
    assert choose(TABLE, "delivery_eta", None) == Decision("1.1.0", RouteReason.DEFAULT)
    assert choose(TABLE, "delivery_eta", "stable") == Decision("1.1.0", RouteReason.LABEL)


def test_exact_pin_wins() -> None:
    assert choose(TABLE, "delivery_eta", "1.0.0") == Decision("1.0.0", RouteReason.PINNED)


def test_unknown_model_lists_served_models() -> None:
    with pytest.raises(UnknownModel) as caught:
        choose(TABLE, "nope", None)
    assert caught.value.known == ("delivery_eta", "other")
    assert "'nope'" in str(caught.value)


def test_unknown_version_lists_versions_and_labels() -> None:
    with pytest.raises(UnknownVersion) as caught:
        choose(TABLE, "delivery_eta", "9.9.9")
    assert caught.value.known == ("1.0.0", "1.1.0", "stable")


def test_routes_refuse_labels_to_missing_versions() -> None:
    with pytest.raises(ValueError, match="label 'canary'"):
        ModelRoutes("m", ("1.0.0",), "1.0.0", {"canary": "2.0.0"})


def test_table_is_immutable() -> None:
    with pytest.raises(TypeError):
        TABLE.routes("delivery_eta").labels["canary"] = "1.0.0"  # type: ignore[index]
