"""The routing file: parsing, every rejection rule, registry checks, the committed file.

Problems are read through the server's file parser (:mod:`server.serving.routing_file`),
which is what users meet: the router validates the routes and monitoring the alert rules,
with one list of problems."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from router.config import (
    DEFAULT_STICKY_KEY,
    RoutingConfig,
    RoutingConfigError,
    check_against_registry,
    content_hash,
    load_routing,
    parse_routing,
    version_fields,
)
from server.monitoring.judge import JudgeSpec
from server.serving.routing_file import parse_routing_file

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = {"delivery_eta": ["1.0.0", "1.1.0", "1.2.0"]}


def config_text(
    routes: str = ('{ version = "1.1.0", weight = 90, label = "stable" },\n'
                   '  { version = "1.2.0", weight = 10, label = "canary" },'),
    stable: str = '"1.1.0"',
    extra: str = 'shadow = { version = "1.0.0", fraction = 0.05 }',
    head: str = "version = 1",
    model: str = "delivery_eta",
) -> str:
    return (f"{head}\n\n[models.{model}]\nstable = {stable}\n"
            f"routes = [\n  {routes}\n]\n{extra}\n")


def problems_of(text: str) -> tuple[str, ...]:
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing_file(text, "deploy/routing.toml")
    assert str(caught.value).startswith("deploy/routing.toml: ")
    return caught.value.problems


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_config_parses_into_frozen_objects() -> None:
    config = parse_routing(config_text())
    model = config.models["delivery_eta"]
    assert model.stable == "1.1.0"
    assert model.sticky_key == DEFAULT_STICKY_KEY
    assert [(r.version, r.weight, r.label) for r in model.routes] == [
        ("1.1.0", 90, "stable"), ("1.2.0", 10, "canary")]
    assert model.shadow is not None and model.shadow.fraction == 0.05
    assert model.versions() == ("1.0.0", "1.1.0", "1.2.0")
    assert model.weight_of("1.2.0") == 10 and model.weight_of("1.0.0") == 0
    with pytest.raises(ValueError, match="frozen"):
        model.stable = "1.2.0"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.models["other"] = model  # type: ignore[index]


def test_stable_label_is_implicit() -> None:
    text = config_text(routes='{ version = "1.1.0", weight = 90 },\n'
                              '{ version = "1.2.0", weight = 10, label = "canary" },')
    assert parse_routing(text).models["delivery_eta"].labels() == {
        "canary": "1.2.0", "stable": "1.1.0"}


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        ("120", "models.delivery_eta.routes[1].weight = 120: must be an integer from 0 to 100"),
        ("-5", "models.delivery_eta.routes[1].weight = -5: must be an integer from 0 to 100"),
        ("10.0", "models.delivery_eta.routes[1].weight = 10.0: must be an integer"),
        ('"10"', 'models.delivery_eta.routes[1].weight = "10": must be an integer'),
        ("true", "models.delivery_eta.routes[1].weight = true: must be an integer"),
    ],
)
def test_weight_must_be_an_integer_from_0_to_100(weight: str, expected: str) -> None:
    routes = ('{ version = "1.1.0", weight = 90 },\n'
              f'{{ version = "1.2.0", weight = {weight} }},')
    assert only_problem(config_text(routes=routes)) == expected


def test_weights_must_sum_to_100() -> None:
    routes = '{ version = "1.1.0", weight = 90 }, { version = "1.2.0", weight = 20 },'
    assert only_problem(config_text(routes=routes)) == (
        "models.delivery_eta.routes[*].weight = 90 + 20 = 110: weights must sum to 100")


def test_routes_must_not_be_empty() -> None:
    assert only_problem(config_text(routes="")) == (
        "models.delivery_eta.routes = []: at least one route is required")


def test_duplicate_versions_are_refused() -> None:
    routes = ('{ version = "1.1.0", weight = 90 }, { version = "1.2.0", weight = 5 },'
              '{ version = "1.2.0", weight = 5 },')
    assert only_problem(config_text(routes=routes)) == (
        'models.delivery_eta.routes[2].version = "1.2.0": duplicates routes[1].version')


def test_duplicate_labels_are_refused() -> None:
    routes = ('{ version = "1.1.0", weight = 80, label = "canary" },'
              '{ version = "1.2.0", weight = 20, label = "canary" },')
    assert only_problem(config_text(routes=routes)) == (
        'models.delivery_eta.routes[1].label = "canary": duplicates routes[0].label')


@pytest.mark.parametrize("label", ["Canary", "1canary", "can ary", "a" * 33, ""])
def test_label_format(label: str) -> None:
    routes = ('{ version = "1.1.0", weight = 90 },'
              f'{{ version = "1.2.0", weight = 10, label = "{label}" }},')
    assert only_problem(config_text(routes=routes)) == (
        f'models.delivery_eta.routes[1].label = "{label}": is not a label: '
        "must match ^[a-z][a-z0-9_-]{0,31}$")


def test_stable_label_must_name_the_stable_version() -> None:
    routes = ('{ version = "1.1.0", weight = 90 },'
              '{ version = "1.2.0", weight = 10, label = "stable" },')
    assert only_problem(config_text(routes=routes)) == (
        'models.delivery_eta.routes[1].label = "stable": the stable label must be on the '
        "stable version 1.1.0, not 1.2.0")


@pytest.mark.parametrize("version", ["1.2", "v1.2.0", "01.2.0", "1.2.0+build"])
def test_versions_must_be_semver(version: str) -> None:
    routes = ('{ version = "1.1.0", weight = 90 },'
              f'{{ version = "{version}", weight = 10 }},')
    assert only_problem(config_text(routes=routes)) == (
        f'models.delivery_eta.routes[1].version = "{version}": is not a semantic version '
        "(MAJOR.MINOR.PATCH, e.g. 1.2.0)")


def test_prerelease_versions_are_allowed() -> None:
    routes = '{ version = "1.1.0", weight = 90 }, { version = "1.2.0-rc.1", weight = 10 },'
    assert parse_routing(config_text(routes=routes)).models["delivery_eta"].versions()[-1] == (
        "1.2.0-rc.1")


def test_stable_must_be_a_route() -> None:
    assert only_problem(config_text(stable='"1.0.0"')) == (
        'models.delivery_eta.stable = "1.0.0": is not one of the routes; the stable version '
        "must be a route with weight > 0")


def test_stable_must_have_traffic() -> None:
    routes = '{ version = "1.1.0", weight = 0 }, { version = "1.2.0", weight = 100 },'
    assert only_problem(config_text(routes=routes)) == (
        'models.delivery_eta.stable = "1.1.0": has no traffic (routes[0].weight = 0); the '
        "stable version must have weight > 0")


@pytest.mark.parametrize(("fraction", "shown"), [("1.5", "1.5"), ("-0.1", "-0.1"),
                                                 ("nan", "nan"), ("inf", "inf")])
def test_shadow_fraction_must_be_within_0_and_1(fraction: str, shown: str) -> None:
    extra = f'shadow = {{ version = "1.0.0", fraction = {fraction} }}'
    assert only_problem(config_text(extra=extra)) == (
        f"models.delivery_eta.shadow.fraction = {shown}: must be a number from 0 to 1")


@pytest.mark.parametrize("fraction", ["0", "1", "0.0", "1.0"])
def test_shadow_fraction_bounds_are_allowed(fraction: str) -> None:
    extra = f'shadow = {{ version = "1.0.0", fraction = {fraction} }}'
    shadow = parse_routing(config_text(extra=extra)).models["delivery_eta"].shadow
    assert shadow is not None and shadow.fraction == float(fraction)


def test_shadow_must_not_be_the_stable_version() -> None:
    extra = 'shadow = { version = "1.1.0", fraction = 0.5 }'
    assert only_problem(config_text(extra=extra)) == (
        'models.delivery_eta.shadow.version = "1.1.0": is the stable version; a shadow must '
        "be another version")


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("X-Customer", "is not a request metadata key: must match ^[a-z0-9][a-z0-9_.-]{0,63}$"),
        ("x-key-bin", "must be a text metadata key (no -bin suffix, no grpc- prefix)"),
        ("grpc-timeout", "must be a text metadata key (no -bin suffix, no grpc- prefix)"),
        ("x-model-version", "x-model-version pins a version; it cannot also be the sticky key"),
    ],
)
def test_sticky_key_must_be_a_text_metadata_key(key: str, rule: str) -> None:
    text = config_text(extra=f'sticky_key = "{key}"')
    assert only_problem(text) == f'models.delivery_eta.sticky_key = "{key}": {rule}'


def test_other_sticky_keys_are_allowed() -> None:
    text = config_text(extra='sticky_key = "x-customer-id"')
    assert parse_routing(text).models["delivery_eta"].sticky_key == "x-customer-id"


ALERT = ('[[models.delivery_eta.alerts]]\nname = "canary-mae"\nmetric = "mae_ratio"\n'
         'op = ">"\nthreshold = 1.25\n')


def test_alert_rules_parse_with_defaults_and_durations() -> None:
    text = config_text(extra=ALERT + 'scope = "canary"\nfor = "2m"\nwindow = 900\n'
                       'severity = "critical"\naction = "rollback"\n'
                       + ALERT.replace("canary-mae", "drift").replace("mae_ratio", "feature_psi")
                       + 'feature = "zip_code"\n')
    rules = parse_routing_file(text).alerts["delivery_eta"]
    assert [r.name for r in rules] == ["canary-mae", "drift"]
    first, second = rules
    assert (first.scope, first.for_s, first.window, first.severity, first.action) == (
        "canary", 120.0, 900.0, "critical", "rollback")
    assert (second.scope, second.for_s, second.window, second.min_samples, second.severity,
            second.action, second.feature) == (
        "model", 0.0, 300.0, 100, "warning", "notify", "zip_code")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('for = "5d"', 'models.delivery_eta.alerts[0].for = "5d": must be a duration such as '
                       '"30s", "5m" or "1h"'),
        ('scope = "beta"', 'models.delivery_eta.alerts[0].scope = "beta": is not a label of '
                           'this model (labels: canary, stable)'),
        ('scope = "2.0.0"', 'models.delivery_eta.alerts[0].scope = "2.0.0": is not a version '
                            'this model routes or shadows'),
        ('scope = "stable"\naction = "rollback"',
         'models.delivery_eta.alerts[0].action = "rollback": the stable version is what a '
         'rollback goes back to; it cannot be rolled back'),
        ('scope = "1.1.0"\naction = "rollback"',
         'models.delivery_eta.alerts[0].action = "rollback": names the stable version 1.1.0; '
         'a rollback goes back to it and cannot take it out'),
        ('exclude = ["hour"]', "models.delivery_eta.alerts[0].exclude = [\"hour\"]: only applies "
                               "to metric 'feature_psi' without `feature`"),
        ('feature = "zip_code"', "models.delivery_eta.alerts[0].feature = \"zip_code\": only "
                                 "applies to metric 'feature_psi'"),
        ("min_samples = 0", "models.delivery_eta.alerts[0].min_samples = 0: must be at least 1: "
                            "a rule never judges on no data"),
        ('severity = "page"', "models.delivery_eta.alerts[0].severity = \"page\": Input should "
                              "be 'critical', 'warning' or 'info'"),
    ],
)
def test_bad_alert_rules_name_the_field(extra: str, expected: str) -> None:
    assert only_problem(config_text(extra=ALERT + extra)) == expected


JUDGE = ('[[models.delivery_eta.alerts]]\nname = "canary-judge"\nmetric = "judge"\n'
         'action = "rollback"\n')


def test_judge_rules_parse_with_defaults_and_their_own_keys() -> None:
    text = config_text(extra=JUDGE + JUDGE.replace("canary-judge", "strict")
                       + 'scope = "canary"\nalpha = 0.05\nmin_effect = 0.2\nperiod = "1h"\n'
                       'min_samples = 50\nfor = "1m"\n')
    default, strict = parse_routing_file(text).alerts["delivery_eta"]
    assert (default.metric, default.op, default.threshold) == ("judge", ">", 0.0)
    assert (default.alpha, default.min_effect, default.period_s, default.min_samples) == (
        0.01, 0.10, 900.0, 100)
    assert default.judge_spec == JudgeSpec(alpha=0.01, min_effect=0.1, period_s=900.0,
                                           min_samples=100)
    assert (strict.scope, strict.for_s) == ("canary", 60.0)
    assert strict.judge_spec == JudgeSpec(alpha=0.05, min_effect=0.2, period_s=3600.0,
                                          min_samples=50)
    assert default.condition == "worse than stable (alpha 0.01)"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("alpha = 0.5", "models.delivery_eta.alerts[0].alpha = 0.5: must be a number in "
                        "(0, 0.5): the false-rollback rate (0.01 is 1 %)"),
        ("alpha = 0", "models.delivery_eta.alerts[0].alpha = 0.0: must be a number in "
                      "(0, 0.5): the false-rollback rate (0.01 is 1 %)"),
        ('alpha = "1%"', "models.delivery_eta.alerts[0].alpha = \"1%\": must be a number"),
        ("min_effect = 0.0", "models.delivery_eta.alerts[0].min_effect = 0.0: must be a "
                             "fraction in (0, 1]: the smallest relative worsening worth "
                             "refusing (0.10 is 10 %)"),
        ("min_effect = 10", "models.delivery_eta.alerts[0].min_effect = 10.0: must be a "
                            "fraction in (0, 1]: the smallest relative worsening worth "
                            "refusing (0.10 is 10 %)"),
        ('period = "0s"', 'models.delivery_eta.alerts[0].period = 0.0: must be longer than '
                          '0 seconds'),
        ('period = "2w"', 'models.delivery_eta.alerts[0].period = "2w": must be a duration '
                          'such as "30s", "5m" or "1h"'),
        ("min_samples = 1", "models.delivery_eta.alerts[0].min_samples = 1: must be at least "
                            "2 for metric 'judge': outcomes of each side before any verdict"),
        ('op = ">"', "models.delivery_eta.alerts[0].op = \">\": does not apply to metric "
                     "'judge': it fires when its sequential test finds the canary worse than "
                     "stable (effect > 0) at its `alpha`"),
        ("threshold = 1.25", "models.delivery_eta.alerts[0].threshold = 1.25: does not apply "
                             "to metric 'judge': it fires when its sequential test finds the "
                             "canary worse than stable (effect > 0) at its `alpha`"),
        ('window = "1h"', "models.delivery_eta.alerts[0].window = 3600.0: does not apply to "
                          "metric 'judge': it sums every retained outcome of the canary and "
                          "the stable version (a sliding window would start its test again "
                          "at every look)"),
        ('scope = "stable"', 'models.delivery_eta.alerts[0].scope = "stable": names the '
                             'stable version 1.1.0; the judge compares a canary with it'),
    ],
)
def test_bad_judge_rules_name_the_field(extra: str, expected: str) -> None:
    assert only_problem(config_text(extra=JUDGE.replace('action = "rollback"\n', "")
                                    + extra)) == expected


@pytest.mark.parametrize("extra", ["alpha = 0.05", "min_effect = 0.2", 'period = "1h"'])
def test_judge_keys_only_apply_to_the_judge(extra: str) -> None:
    key = extra.split(" ")[0]
    problem = only_problem(config_text(extra=ALERT + extra))
    assert problem.startswith(f"models.delivery_eta.alerts[0].{key} = ")
    assert problem.endswith(": only applies to metric 'judge'")


def test_the_router_alone_knows_nothing_of_alert_rules() -> None:
    text = config_text(extra=ALERT)
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing(text)
    assert caught.value.problems == (
        "models.delivery_eta.alerts: unknown key (allowed here: stable, sticky_key, routes, "
        "shadow)",)
    whole = parse_routing_file(text)
    assert whole.config == parse_routing(config_text(extra=""))
    assert [r.name for r in whole.alerts["delivery_eta"]] == ["canary-mae"]


def test_route_and_rule_problems_are_listed_together() -> None:
    text = config_text(routes='{ version = "1.1.0", weight = 90 },',
                       extra=ALERT + "min_samples = 0")
    assert problems_of(text) == (
        "models.delivery_eta.routes[*].weight = 90: weights must sum to 100",
        "models.delivery_eta.alerts[0].min_samples = 0: must be at least 1: a rule never "
        "judges on no data")


def test_one_models_bad_routes_hide_no_other_models_rule_problems() -> None:
    text = (config_text(routes='{ version = "1.1.0", weight = 90 },', model="a")
            + config_text(head="", extra=ALERT.replace("delivery_eta", "b") + 'scope = "beta"',
                          model="b"))
    assert problems_of(text) == (
        "models.a.routes[*].weight = 90: weights must sum to 100",
        'models.b.alerts[0].scope = "beta": is not a label of this model (labels: canary, '
        "stable)")


def test_a_change_to_alert_rules_alone_shows_in_the_routing_check() -> None:
    from router.preview import check_report

    old = config_text(extra=ALERT)
    new = config_text(extra=ALERT.replace("1.25", "1.5"))
    ok, report = check_report(new, "new.toml", old, REGISTRY,
                              parse=lambda text, source: parse_routing_file(text,
                                                                            source).parsed())
    assert ok
    assert "delivery_eta: changed" in report and "`alerts` changed" in report
    ok, report = check_report(old, "new.toml", old, REGISTRY,
                              parse=lambda text, source: parse_routing_file(text,
                                                                            source).parsed())
    assert "delivery_eta: unchanged" in report and "`alerts` changed" not in report


def test_alert_rule_names_are_unique_and_operators_known() -> None:
    assert only_problem(config_text(extra=ALERT + ALERT)) == (
        'models.delivery_eta.alerts[1].name = "canary-mae": duplicates alerts[0].name')
    assert only_problem(config_text(extra=ALERT.replace('">"', '"=="'))) == (
        'models.delivery_eta.alerts[0].op = "==": must be one of >, >=, <, <=')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (config_text(head="version = 1\nowner = 'me'"),
         "owner: unknown key (allowed here: version, models)"),
        (config_text(extra="weights = [90, 10]"),
         "models.delivery_eta.weights: unknown key (allowed here: stable, sticky_key, routes, "
         "shadow, alerts)"),
        (config_text(routes='{ version = "1.1.0", weight = 100, lable = "stable" },'),
         "models.delivery_eta.routes[0].lable: unknown key (allowed here: version, weight, "
         "label)"),
        (config_text(extra='shadow = { version = "1.0.0", fraction = 0.1, sample = 2 }'),
         "models.delivery_eta.shadow.sample: unknown key (allowed here: version, fraction)"),
        (config_text(extra=ALERT + 'colour = "red"'),
         "models.delivery_eta.alerts[0].colour: unknown key (allowed here: name, metric, "
         "scope, op, threshold, for, window, min_samples, severity, action, feature, exclude, "
         "quantile, "
         "status_class, alpha, min_effect, period, summary)"),
    ],
)
def test_unknown_keys_are_refused(text: str, expected: str) -> None:
    assert only_problem(text) == expected


def test_schema_version_is_required_and_known() -> None:
    assert only_problem(config_text(head="version = 2")) == (
        "version = 2: is not a supported schema version (supported: 1)")
    assert only_problem(config_text(head="")) == "version: required key is missing"


def test_required_keys() -> None:
    assert set(problems_of("")) == {"version: required key is missing",
                                    "models: required key is missing"}
    assert only_problem("version = 1\n[models]\n") == (
        "models: at least one [models.<name>] table is required")
    text = 'version = 1\n[models.delivery_eta]\nroutes = [{ version = "1.1.0", weight = 100 }]\n'
    assert only_problem(text) == "models.delivery_eta.stable: required key is missing"


def test_model_names_are_checked() -> None:
    assert only_problem(config_text(model="DeliveryEta")) == (
        'models.DeliveryEta: key "DeliveryEta" is not a model name: must match '
        "^[a-z][a-z0-9_]{0,62}$")


def test_every_problem_is_reported_at_once() -> None:
    routes = ('{ version = "1.1.0", weight = 90 },'
              '{ version = "1.2", weight = 101, color = "red" },')
    extra = 'shadow = { version = "1.0.0", fraction = 2.0 }'
    assert set(problems_of(config_text(routes=routes, extra=extra))) == {
        'models.delivery_eta.routes[1].version = "1.2": is not a semantic version '
        "(MAJOR.MINOR.PATCH, e.g. 1.2.0)",
        "models.delivery_eta.routes[1].weight = 101: must be an integer from 0 to 100",
        "models.delivery_eta.routes[1].color: unknown key (allowed here: version, weight, label)",
        "models.delivery_eta.shadow.fraction = 2.0: must be a number from 0 to 1",
    }


def test_syntax_errors_name_the_source_line_and_column() -> None:
    text = 'version = 1\n\n[models.delivery_eta]\nstable = "1.1.0\n'
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing(text, "deploy/routing.toml")
    message = str(caught.value)
    assert message.startswith("deploy/routing.toml: 1 problem\n  not valid TOML: ")
    assert "line 4" in message
    assert caught.value.source == "deploy/routing.toml"


def test_load_routing_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    pattern = f"^{re.escape(str(missing))}: 1 problem\n  cannot read"
    with pytest.raises(RoutingConfigError, match=pattern):
        load_routing(missing)
    binary = tmp_path / "bad.toml"
    binary.write_bytes(b"version = 1\n\xff\n")
    with pytest.raises(RoutingConfigError, match="not UTF-8 \\(byte 12\\)"):
        load_routing(binary)
    broken = tmp_path / "broken.toml"
    broken.write_text(config_text(head="version = 3"))
    pattern = f"^{re.escape(str(broken))}: 1 problem\n  version = 3"
    with pytest.raises(RoutingConfigError, match=pattern):
        load_routing(broken)


def test_content_hash_is_sha256_of_the_bytes() -> None:
    text = config_text()
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert content_hash(text) == expected == content_hash(text.encode())
    assert content_hash(text + " ") != expected


def test_registry_check_names_the_field_and_what_exists() -> None:
    config = parse_routing(config_text())
    assert check_against_registry(config, REGISTRY) == []
    assert check_against_registry(config, {"delivery_eta": ["1.1.0", "1.0.0"]}) == [
        "models.delivery_eta.routes[1].version: 1.2.0 is not in the registry "
        "(available: 1.0.0, 1.1.0)"]
    assert check_against_registry(config, {"delivery_eta": ["1.1.0", "1.2.0"]}) == [
        "models.delivery_eta.shadow.version: 1.0.0 is not in the registry "
        "(available: 1.1.0, 1.2.0)"]
    assert check_against_registry(config, {"other": ["1.0.0"]}) == [
        "models.delivery_eta: model 'delivery_eta' is not in the registry (available: other)"]


def test_registry_check_reports_versions_that_failed_to_load() -> None:
    config = parse_routing(config_text())
    failed = {"delivery_eta": {"1.2.0": "sha256 of model.cbm does not match the manifest"}}
    assert check_against_registry(config, REGISTRY, failed) == [
        "models.delivery_eta.routes[1].version: 1.2.0 failed to load: sha256 of model.cbm "
        "does not match the manifest"]


def test_version_fields_lists_every_path() -> None:
    config = parse_routing(config_text())
    assert version_fields(config) == {
        ("delivery_eta", "1.1.0"): ("models.delivery_eta.routes[0].version",),
        ("delivery_eta", "1.2.0"): ("models.delivery_eta.routes[1].version",),
        ("delivery_eta", "1.0.0"): ("models.delivery_eta.shadow.version",),
    }


def test_committed_routing_file_is_valid_for_the_demo_registry() -> None:
    config = parse_routing_file((ROOT / "deploy" / "routing.toml").read_text()).config
    assert isinstance(config, RoutingConfig)
    assert check_against_registry(config, {"delivery_eta": ["1.0.0", "1.1.0"]}) == []
    model = config.models["delivery_eta"]
    assert model.stable == "1.1.0" and model.weight_of("1.1.0") == 100
    assert model.shadow is not None and model.shadow.version == "1.0.0"


def test_committed_routing_file_matches_the_committed_registry() -> None:
    registry = ROOT / "models"
    available = {
        name: [p.name for p in (registry / name).iterdir() if (p / "model.json").is_file()]
        for name in parse_routing_file((ROOT / "deploy" / "routing.toml").read_text()).config.models
    }
    config = parse_routing_file((ROOT / "deploy" / "routing.toml").read_text()).config
    assert check_against_registry(config, available) == []
