"""Version choice from a routing config: pins, labels, sticky and weighted choice, overrides,
shadow sampling, and the stickiness guarantees of router.sticky."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.config import parse_routing
from router.sticky import Rendezvous, unit_hash
from router.table import (
    Decision,
    OverrideRefused,
    RouteReason,
    RoutingTable,
    UnknownModel,
    UnknownVersion,
    choose,
    reapply_overrides,
    resolve,
    shadow_for,
    with_override,
    without_override,
)

KEYS = [f"customer-{i}" for i in range(100_000)]
SOME_KEYS = KEYS[:20_000]


def table_of(
    stable: int = 90, canary: int = 10, *, shadow: str = "", extra_routes: str = "",
    canary_version: str = "1.2.0", order: str = "stable-first",
) -> RoutingTable:
    routes = [f'{{ version = "1.1.0", weight = {stable}, label = "stable" }}',
              f'{{ version = "{canary_version}", weight = {canary}, label = "canary" }}']
    if order != "stable-first":
        routes.reverse()
    text = (
        'version = 1\n[models.delivery_eta]\nstable = "1.1.0"\n'
        f"routes = [{', '.join(routes)}{extra_routes}]\n{shadow}\n"
    )
    return RoutingTable.from_config(parse_routing(text))


def assignments(table: RoutingTable, keys: list[str]) -> list[str]:
    return [choose(table, "delivery_eta", None, key).version for key in keys]


# ---- pins and labels -----------------------------------------------------------------------


def test_exact_pin_and_label_pin() -> None:
    table = table_of()
    assert choose(table, "delivery_eta", "1.2.0") == Decision("1.2.0", RouteReason.PINNED)
    assert choose(table, "delivery_eta", "canary", "k", 0.5) == Decision(
        "1.2.0", RouteReason.LABEL)
    assert choose(table, "delivery_eta", "stable") == Decision("1.1.0", RouteReason.LABEL)


def test_pin_beats_routing_key_and_weight_zero() -> None:
    table = table_of(100, 0)
    assert choose(table, "delivery_eta", "1.2.0", "k") == Decision("1.2.0", RouteReason.PINNED)
    assert choose(table, "delivery_eta", "canary") == Decision("1.2.0", RouteReason.LABEL)


def test_unknown_pin_lists_versions_and_labels() -> None:
    with pytest.raises(UnknownVersion) as caught:
        choose(table_of(), "delivery_eta", "9.9.9")
    assert caught.value.known == ("1.1.0", "1.2.0", "canary", "stable")


def test_unknown_model() -> None:
    with pytest.raises(UnknownModel) as caught:
        choose(table_of(), "nope", None, "k")
    assert caught.value.known == ("delivery_eta",)


def test_shadow_version_can_be_pinned() -> None:
    table = table_of(shadow='shadow = { version = "1.0.0", fraction = 0.1 }')
    assert table.routes("delivery_eta").versions == ("1.0.0", "1.1.0", "1.2.0")
    assert choose(table, "delivery_eta", "1.0.0") == Decision("1.0.0", RouteReason.PINNED)


# ---- reasons without a pin -----------------------------------------------------------------


def test_sticky_with_key_weighted_without() -> None:
    table = table_of()
    assert choose(table, "delivery_eta", None, "customer-1").reason is RouteReason.STICKY
    assert choose(table, "delivery_eta", None, None, 0.99) == Decision(
        "1.2.0", RouteReason.WEIGHTED)
    assert choose(table, "delivery_eta", None, "", 0.0) == Decision(
        "1.1.0", RouteReason.WEIGHTED)


def test_single_version_with_traffic_is_default() -> None:
    for table in (table_of(100, 0), RoutingTable.from_config(parse_routing(
            'version = 1\n[models.delivery_eta]\nstable = "1.1.0"\n'
            'routes = [{ version = "1.1.0", weight = 100 }]\n'))):
        assert choose(table, "delivery_eta", None, "k") == Decision("1.1.0", RouteReason.DEFAULT)
        assert choose(table, "delivery_eta", None) == Decision("1.1.0", RouteReason.DEFAULT)


def test_weighted_choice_needs_u_in_range() -> None:
    table = table_of()
    with pytest.raises(ValueError, match=r"needs u in \[0, 1\), got None"):
        choose(table, "delivery_eta", None)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="needs u in"):
            choose(table, "delivery_eta", None, None, bad)


def test_resolve_describes_without_choosing() -> None:
    table = table_of()
    assert resolve(table, "delivery_eta", None) == Decision("1.1.0", RouteReason.DEFAULT)
    assert resolve(table, "delivery_eta", "canary") == Decision("1.2.0", RouteReason.LABEL)


# ---- weighted random -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "extra"),
    [((90, 10), ""), ((75, 25), ""), ((50, 30), ', { version = "1.0.0", weight = 20 }'),
     ((60, 0), ', { version = "1.0.0", weight = 40 }')],
)
def test_u_grid_reproduces_the_weights(weights: tuple[int, int], extra: str) -> None:
    table = table_of(*weights, extra_routes=extra)
    counts = Counter(choose(table, "delivery_eta", None, None, i / 1000).version
                     for i in range(1000))
    expected = {v: w * 10 for v, w in table.routes("delivery_eta").weights}
    assert counts == expected
    assert "1.2.0" in counts or weights[1] == 0


def test_weight_zero_is_never_chosen() -> None:
    table = table_of(60, 0, extra_routes=', { version = "1.0.0", weight = 40 }')
    grid = {choose(table, "delivery_eta", None, None, i / 997).version for i in range(997)}
    sticky = set(assignments(table, SOME_KEYS))
    assert grid == sticky == {"1.1.0", "1.0.0"}


# ---- stickiness ----------------------------------------------------------------------------


def test_same_key_same_version_across_rebuilt_tables() -> None:
    first = assignments(table_of(), SOME_KEYS)
    assert first == assignments(table_of(), SOME_KEYS)
    # Route order, labels and the shadow do not move keys; only weights do.
    other = table_of(order="canary-first", shadow='shadow = { version = "1.0.0", fraction = 1 }')
    assert first == assignments(other, SOME_KEYS)


def test_sticky_split_follows_the_weights() -> None:
    counts = Counter(assignments(table_of(), KEYS))
    assert counts["1.2.0"] / len(KEYS) == pytest.approx(0.10, abs=0.005)


def test_known_answers_pin_the_hash_scheme() -> None:
    # Changing the hash (or using Python's salted hash()) would silently move every
    # caller in production; these values are fixed forever.
    assert unit_hash("delivery_eta", "1.1.0", "customer-42") == pytest.approx(
        0.3107069059101618, abs=1e-15)
    assert unit_hash("delivery_eta", "1.2.0", "customer-42") == pytest.approx(
        0.4194328632850859, abs=1e-15)
    table = table_of()
    canary = [i for i in range(100)
              if choose(table, "delivery_eta", None, f"customer-{i}").version == "1.2.0"]
    assert canary == [14, 36, 50, 55, 72]


def test_raising_the_canary_moves_keys_only_onto_it() -> None:
    before = assignments(table_of(90, 10), KEYS)
    after = assignments(table_of(75, 25), KEYS)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert set(moved) == {("1.1.0", "1.2.0")}
    assert len(moved) / len(KEYS) == pytest.approx(0.15, abs=0.005)


def test_lowering_the_canary_moves_only_canary_keys_back() -> None:
    before = assignments(table_of(75, 25), KEYS)
    after = assignments(table_of(95, 5), KEYS)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert set(moved) == {("1.2.0", "1.1.0")}
    assert len(moved) / len(KEYS) == pytest.approx(0.20, abs=0.005)


def test_three_versions_scaled_in_proportion_move_only_onto_the_canary() -> None:
    # stable:old stays 2:1 (60:30 -> 50:25) while the canary goes 10 -> 25.
    old = Rendezvous("m", [("stable", 60), ("canary", 10), ("old", 30)])
    new = Rendezvous("m", [("stable", 50), ("canary", 25), ("old", 25)])
    moved = Counter((old.choose(k), new.choose(k)) for k in SOME_KEYS
                    if old.choose(k) != new.choose(k))
    assert set(moved) == {("stable", "canary"), ("old", "canary")}


def test_three_versions_out_of_proportion_move_a_few_keys_between_the_others() -> None:
    # The documented limit: stable:old goes 8:1 -> 6.5:1, so some keys cross
    # between them. The canary still only gains.
    old = Rendezvous("delivery_eta", [("stable", 80), ("canary", 10), ("old", 10)])
    new = Rendezvous("delivery_eta", [("stable", 65), ("canary", 25), ("old", 10)])
    moved = Counter((old.choose(k), new.choose(k)) for k in KEYS)
    total = len(KEYS)
    assert moved[("canary", "stable")] == moved[("canary", "old")] == 0
    assert moved[("stable", "old")] / total == pytest.approx(0.013, abs=0.003)
    assert moved[("old", "stable")] == 0
    changed = sum(n for (a, b), n in moved.items() if a != b) / total
    assert changed == pytest.approx(0.164, abs=0.005)  # vs the least possible 0.15


weights_strategy = st.lists(st.integers(0, 100), min_size=1, max_size=6).filter(
    lambda ws: sum(ws) > 0)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(weights=weights_strategy, keys=st.lists(st.text(min_size=1, max_size=20), max_size=30))
def test_chosen_version_always_has_weight(weights: list[int], keys: list[str]) -> None:
    chooser = Rendezvous("m", [(f"{i}.0.0", w) for i, w in enumerate(weights)])
    for key in keys:
        chosen = chooser.choose(key)
        assert weights[int(chosen.split(".")[0])] > 0


@settings(derandomize=True, max_examples=200, deadline=None)
@given(weights=weights_strategy, data=st.data())
def test_one_weight_changing_moves_keys_only_to_or_from_it(
    weights: list[int], data: st.DataObject
) -> None:
    changed = data.draw(st.integers(0, len(weights) - 1))
    new_weight = data.draw(st.integers(0, 100))
    new_weights = [new_weight if i == changed else w for i, w in enumerate(weights)]
    if sum(new_weights) == 0:
        return
    versions = [f"{i}.0.0" for i in range(len(weights))]
    old = Rendezvous("m", list(zip(versions, weights, strict=True)))
    new = Rendezvous("m", list(zip(versions, new_weights, strict=True)))
    target = versions[changed]
    for key in KEYS[:300]:
        before, after = old.choose(key), new.choose(key)
        if before == after:
            continue
        if new_weight > weights[changed]:
            assert after == target
        else:
            assert before == target


def test_routing_table_rejects_inconsistent_routes() -> None:
    config = parse_routing('version = 1\n[models.delivery_eta]\nstable = "1.1.0"\n'
                           'routes = [{ version = "1.1.0", weight = 100 }]\n')
    with pytest.raises(ValueError, match="not loaded"):
        RoutingTable.from_config(config, {"delivery_eta": ["1.0.0"]})
    with pytest.raises(ValueError, match="no version has a weight"):
        Rendezvous("m", [("1.0.0", 0)])


# ---- overrides -----------------------------------------------------------------------------


def test_override_sends_unpinned_traffic_to_stable() -> None:
    table = with_override(table_of(), "delivery_eta", "error rate", "2026-01-01T00:00:00Z")
    routes = table.routes("delivery_eta")
    assert routes.override is not None and routes.override.rolled_back == ("1.2.0",)
    assert routes.effective_weight("1.1.0") == 100 and routes.effective_weight("1.2.0") == 0
    assert routes.routes[1].weight == 10  # the configured weight is kept for display
    assert {choose(table, "delivery_eta", None, k) for k in SOME_KEYS[:2000]} == {
        Decision("1.1.0", RouteReason.OVERRIDE)}
    assert choose(table, "delivery_eta", None, None, 0.999) == Decision(
        "1.1.0", RouteReason.OVERRIDE)


def test_override_and_pins() -> None:
    table = with_override(table_of(), "delivery_eta", "drift", "2026-01-01T00:00:00Z")
    assert choose(table, "delivery_eta", "canary") == Decision("1.1.0", RouteReason.OVERRIDE)
    assert choose(table, "delivery_eta", "stable") == Decision("1.1.0", RouteReason.LABEL)
    assert choose(table, "delivery_eta", "1.2.0") == Decision("1.2.0", RouteReason.PINNED)


def test_override_is_idempotent_and_reversible() -> None:
    base = table_of()
    once = with_override(base, "delivery_eta", "first", "t1", actor="drift_rule")
    twice = with_override(once, "delivery_eta", "second", "t2")
    assert twice is once
    override = twice.routes("delivery_eta").override
    assert override is not None and (override.reason, override.actor) == ("first", "drift_rule")
    cleared = without_override(twice, "delivery_eta")
    assert cleared.routes("delivery_eta") == base.routes("delivery_eta")
    assert assignments(cleared, SOME_KEYS) == assignments(base, SOME_KEYS)
    assert without_override(cleared, "delivery_eta") is cleared
    assert base.routes("delivery_eta").override is None  # the original is untouched


def test_override_with_no_canary_changes_nothing() -> None:
    only_stable = table_of(stable=100, canary=0)
    assert with_override(only_stable, "delivery_eta", "r", "t") is only_stable


def test_override_never_targets_a_version_that_is_not_loaded() -> None:
    with pytest.raises(OverrideRefused, match=r"1\.1\.0: it is not loaded"):
        with_override(table_of(), "delivery_eta", "r", "t", loaded={"1.2.0"})
    assert with_override(table_of(), "delivery_eta", "r", "t", loaded={"1.1.0", "1.2.0"})


def test_override_survives_reloads_until_a_new_canary() -> None:
    previous = with_override(table_of(), "delivery_eta", "drift", "t1", actor="rule")
    unrelated = table_of(shadow='shadow = { version = "1.0.0", fraction = 0.2 }')
    kept = reapply_overrides(previous, unrelated)
    override = kept.routes("delivery_eta").override
    assert override is not None and (override.reason, override.at) == ("drift", "t1")
    assert kept.routes("delivery_eta").shadow is not None
    new_canary = table_of(canary_version="1.3.0")
    assert reapply_overrides(previous, new_canary).routes("delivery_eta").override is None
    canary_off = table_of(100, 0)
    assert reapply_overrides(previous, canary_off).routes("delivery_eta").override is None


# ---- shadow --------------------------------------------------------------------------------


def test_shadow_sampling() -> None:
    table = table_of(shadow='shadow = { version = "1.0.0", fraction = 0.05 }')
    sampled = [shadow_for(table, "delivery_eta", i / 1000) for i in range(1000)]
    assert sampled.count("1.0.0") == 50 and sampled.count(None) == 950
    assert shadow_for(table, "delivery_eta", 0.0, served="1.0.0") is None
    assert shadow_for(table_of(), "delivery_eta", 0.0) is None


# ---- tables built from a config and the loaded registry --------------------------------------


def test_from_config_with_loaded_versions() -> None:
    config = parse_routing('version = 1\n[models.delivery_eta]\nstable = "1.1.0"\n'
                           'routes = [{ version = "1.1.0", weight = 100 }]\n')
    table = RoutingTable.from_config(
        config, {"delivery_eta": ["1.1.0", "1.0.0"], "other": ["0.2.0", "0.10.0"]})
    assert table.routes("delivery_eta").versions == ("1.0.0", "1.1.0")
    assert choose(table, "delivery_eta", "1.0.0") == Decision("1.0.0", RouteReason.PINNED)
    assert choose(table, "other", None) == Decision("0.10.0", RouteReason.DEFAULT)
    assert choose(table, "other", "stable") == Decision("0.10.0", RouteReason.LABEL)


def test_table_is_immutable() -> None:
    table = table_of()
    with pytest.raises(TypeError):
        table.models["x"] = table.routes("delivery_eta")  # type: ignore[index]
    with pytest.raises(AttributeError):
        table.routes("delivery_eta").default = "1.2.0"  # type: ignore[misc]
