"""The routing file: the router's routes and monitoring's alert rules, from one TOML text.

Each owner validates its own part (:mod:`router.config` the routes, weights, shadow and
sticky key; :mod:`server.monitoring.rules` the ``alerts`` tables, against those routes),
and one :class:`~router.config.RoutingConfigError` lists every problem of either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from router.config import (
    ModelConfig,
    RoutingConfig,
    RoutingConfigError,
    check_routing,
    read_toml,
    set_aside,
)
from router.preview import Parsed
from server.monitoring.rules import ALERTS_KEY, Rules, check_rules


@dataclass(frozen=True, slots=True)
class RoutingFile:
    config: RoutingConfig
    alerts: Rules = field(default_factory=lambda: MappingProxyType({}))

    def parsed(self) -> Parsed:
        """The routes, and each model's alert rules as a table the router compares."""
        return self.config, {model: {ALERTS_KEY: rules} for model, rules in self.alerts.items()}


def parse_routing_file(text: str, source: str = "<routing>") -> RoutingFile:
    """Parse and validate a whole routing file; raise RoutingConfigError when unusable."""
    routes, aside = set_aside(read_toml(text, source), (ALERTS_KEY,))
    config, problems = check_routing(routes, other_keys=(ALERTS_KEY,))
    models = config.models if config is not None else _valid_models(routes)
    alerts, rule_problems = check_rules(
        {model: tables[ALERTS_KEY] for model, tables in aside.items()}, models)
    problems += rule_problems
    if config is None or problems:
        raise RoutingConfigError(source, problems)
    return RoutingFile(config, MappingProxyType({m: r for m, r in alerts.items() if r}))


def _valid_models(routes: Mapping[str, Any]) -> dict[str, ModelConfig]:
    """The models whose own tables are valid, in a file that has problems elsewhere: their
    rules can still be checked against their routes."""
    models = routes.get("models")
    valid: dict[str, ModelConfig] = {}
    for name, table in (models.items() if isinstance(models, Mapping) else ()):
        try:
            valid[name] = ModelConfig.model_validate(table)
        except ValidationError:
            continue
    return valid
