"""The routing file: the router's routes and monitoring's alert rules, from one TOML text.

Each owner validates its own part (:mod:`router.config` the routes, weights, shadow and
sticky key; :mod:`server.monitoring.rules` the ``alerts`` tables, against those routes),
and one :class:`~router.config.RoutingConfigError` lists every problem of either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from router.config import (
    RoutingConfig,
    RoutingConfigError,
    check_routing,
    read_text,
    read_toml,
    set_aside,
)
from server.monitoring.rules import ALERTS_KEY, AlertRule, Rules, check_rules


@dataclass(frozen=True, slots=True)
class RoutingFile:
    config: RoutingConfig
    alerts: Rules = field(default_factory=lambda: MappingProxyType({}))

    def rules(self, model: str) -> tuple[AlertRule, ...]:
        return self.alerts.get(model, ())


def parse_routing_file(text: str, source: str = "<routing>") -> RoutingFile:
    """Parse and validate a whole routing file; raise RoutingConfigError when unusable."""
    routes, aside = set_aside(read_toml(text, source), (ALERTS_KEY,))
    config, problems = check_routing(routes, other_keys=(ALERTS_KEY,))
    alerts, rule_problems = check_rules(
        {model: tables[ALERTS_KEY] for model, tables in aside.items()}, config)
    problems += rule_problems
    if config is None or problems:
        raise RoutingConfigError(source, problems)
    return RoutingFile(config, MappingProxyType({m: r for m, r in alerts.items() if r}))


def load_routing_file(path: Path | str) -> RoutingFile:
    """Read and parse a routing file (UTF-8). Errors name the path."""
    return parse_routing_file(read_text(path), str(path))
