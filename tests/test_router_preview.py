"""The traffic-impact preview for routing config pull requests, and the check report."""

from __future__ import annotations

import pytest

from router.config import parse_routing
from router.preview import Movement, ShadowSetting, check_report, preview, render

REGISTRY = {"delivery_eta": ["1.0.0", "1.1.0", "1.2.0"]}


def text_of(
    stable: int = 90, canary: int = 10, fraction: float = 0.05, *, stable_version: str = "1.1.0",
    sticky_key: str = "x-routing-key", canary_label: str = "canary",
) -> str:
    other = "1.2.0" if stable_version == "1.1.0" else "1.1.0"
    return f"""version = 1

[models.delivery_eta]
stable = "{stable_version}"
sticky_key = "{sticky_key}"
routes = [
  {{ version = "{stable_version}", weight = {stable}, label = "stable" }},
  {{ version = "{other}", weight = {canary}, label = "{canary_label}" }},
]
shadow = {{ version = "1.0.0", fraction = {fraction} }}
"""


def test_raising_the_canary_from_10_to_25() -> None:
    result = preview(parse_routing(text_of(90, 10)), parse_routing(text_of(75, 25, 0.10)))
    entry = result.model("delivery_eta")
    assert entry.status == "changed"
    assert [(s.version, s.old_share, s.new_share) for s in entry.shares] == [
        ("1.1.0", 0.90, 0.75), ("1.2.0", 0.10, 0.25)]
    assert entry.ideal_fraction == pytest.approx(0.15)
    assert entry.sampled_keys == 100_000
    assert entry.moved_fraction == pytest.approx(0.15, abs=0.005)
    assert [(m.source, m.target) for m in entry.movements] == [("1.1.0", "1.2.0")]
    assert entry.movements[0].keys == entry.moved_keys


def test_shadow_change_is_reported() -> None:
    result = preview(parse_routing(text_of()), parse_routing(text_of(fraction=0.2)), keys=1000)
    entry = result.model("delivery_eta")
    assert entry.shadow_changed
    assert entry.old_shadow == ShadowSetting("1.0.0", 0.05)
    assert entry.new_shadow == ShadowSetting("1.0.0", 0.2)
    assert entry.moved_keys == 0 and entry.ideal_fraction == 0
    assert "Shadow: 1.0.0 at 5% -> 1.0.0 at 20%" in render(result)


def test_unchanged_config_moves_nothing() -> None:
    config = parse_routing(text_of())
    entry = preview(config, parse_routing(text_of()), keys=2000).model("delivery_eta")
    assert entry.status == "unchanged"
    assert (entry.moved_keys, entry.movements, entry.shadow_changed) == (0, (), False)


def test_lowering_the_canary_moves_canary_keys_back() -> None:
    entry = preview(parse_routing(text_of(75, 25)), parse_routing(text_of(100, 0)),
                    keys=20_000).model("delivery_eta")
    assert entry.movements == (Movement("1.2.0", "1.1.0", entry.moved_keys),)
    assert entry.moved_fraction == pytest.approx(0.25, abs=0.01)
    assert entry.ideal_fraction == pytest.approx(0.25)


def test_preview_is_deterministic() -> None:
    old, new = parse_routing(text_of(90, 10)), parse_routing(text_of(70, 30))
    assert preview(old, new, keys=5000) == preview(old, new, keys=5000)


def test_added_and_removed_models() -> None:
    other = text_of().replace("[models.delivery_eta]", "[models.pickup_eta]")
    result = preview(parse_routing(other), parse_routing(text_of()), keys=100)
    assert [(m.model, m.status, m.sampled_keys) for m in result.models] == [
        ("delivery_eta", "added", 0), ("pickup_eta", "removed", 0)]
    assert preview(None, parse_routing(text_of()), keys=100).model("delivery_eta").status == (
        "added")
    rendered = render(result)
    assert "#### delivery_eta: added" in rendered and "#### pickup_eta: removed" in rendered


def test_notes_for_stable_label_and_sticky_key_changes() -> None:
    old = parse_routing(text_of())
    promoted = parse_routing(text_of(90, 10, stable_version="1.2.0"))
    notes = preview(old, promoted, keys=1000).model("delivery_eta").notes
    assert any(n.startswith("stable changes from 1.1.0 to 1.2.0") for n in notes)
    assert "label 'canary': 1.2.0 -> 1.1.0 (pins of this label change version)" in notes
    rekeyed = parse_routing(text_of(sticky_key="x-customer-id"))
    notes = preview(old, rekeyed, keys=10).model("delivery_eta").notes
    assert any(n.startswith("sticky_key changes from x-routing-key to x-customer-id")
               for n in notes)


def test_render_is_a_readable_table() -> None:
    result = preview(parse_routing(text_of(90, 10)), parse_routing(text_of(75, 25)), keys=10_000)
    rendered = render(result)
    assert "| 1.1.0 | stable | 90% | 75% | -15 pp |" in rendered
    assert "| 1.2.0 | canary | 10% | 25% | +15 pp |" in rendered
    assert "of 10,000 sampled keys (least possible: 15%)" in rendered
    assert "| 1.1.0 | 1.2.0 |" in rendered


def test_keys_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        preview(None, parse_routing(text_of()), keys=0)


# ---- check_report --------------------------------------------------------------------------


def test_check_report_valid_change() -> None:
    ok, report = check_report(text_of(75, 25), "deploy/routing.toml", text_of(90, 10),
                              REGISTRY, old_source="origin/main:deploy/routing.toml", keys=5000)
    assert ok
    assert report.startswith("### waybill routing check: deploy/routing.toml\n")
    assert "Result: **valid**" in report
    assert "Compared with: origin/main:deploy/routing.toml" in report
    assert "| 1.2.0 | canary | 10% | 25% | +15 pp |" in report


def test_check_report_syntax_error_fails_with_the_line() -> None:
    ok, report = check_report('version = 1\n[models.delivery_eta\n', "deploy/routing.toml",
                              text_of(), REGISTRY)
    assert not ok
    assert "Result: **invalid**, 1 problem:" in report
    assert "(at line 2, column" in report


def test_check_report_rule_violation_names_field_and_value() -> None:
    ok, report = check_report(text_of(90, 20), "deploy/routing.toml", text_of(), REGISTRY)
    assert not ok
    assert "models.delivery_eta.routes[*].weight = 90 + 20 = 110: weights must sum to 100" in (
        report)


def test_check_report_registry_problems_fail_but_still_preview() -> None:
    registry = {"delivery_eta": ["1.0.0", "1.1.0"]}
    ok, report = check_report(text_of(75, 25), "deploy/routing.toml", text_of(), registry,
                              keys=1000)
    assert not ok
    assert ("models.delivery_eta.routes[1].version: 1.2.0 is not in the registry "
            "(available: 1.0.0, 1.1.0)") in report
    assert "| 1.2.0 | canary | 10% | 25% | +15 pp |" in report


def test_check_report_load_failures_fail() -> None:
    failed = {"delivery_eta": {"1.0.0": "digest mismatch"}}
    ok, report = check_report(text_of(), "deploy/routing.toml", None, REGISTRY, failed=failed,
                              keys=10)
    assert not ok
    assert "models.delivery_eta.shadow.version: 1.0.0 failed to load: digest mismatch" in report
    assert "Compared with: nothing (a new routing file)" in report


def test_check_report_survives_a_broken_previous_config() -> None:
    ok, report = check_report(text_of(), "deploy/routing.toml", "version = [", REGISTRY,
                              old_source="origin/main:deploy/routing.toml", keys=10)
    assert ok
    assert "origin/main:deploy/routing.toml does not parse" in report
    assert "#### delivery_eta: added" in report
