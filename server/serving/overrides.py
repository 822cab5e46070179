"""Overrides: a rollback sends a model's traffic to its stable version until cleared.

Both the alert engine and an operator's Rollback / ClearOverride publish through these,
as a new snapshot derived from the one in force (the router's pure
:func:`~router.table.with_override` and :func:`~router.table.without_override`); the
journal records and saves what they did.
"""

from __future__ import annotations

import logging

from models.calendar import utc_now
from router.table import ModelRoutes, with_override, without_override
from server.serving.state import ServingState

log = logging.getLogger("waybill.routing")


def rollback(state: ServingState, model: str, reason: str, actor: str) -> tuple[bool, ModelRoutes]:
    """Send the model's traffic to its stable version; idempotent. Returns (changed, routes)."""
    before = state.current
    published = state.update(
        lambda cur: cur.with_table(with_override(
            cur.table, model, reason, utc_now(), actor=actor, loaded=cur.versions.get(model, {})))
    )
    changed = published.table.routes(model) != before.table.routes(model)
    if changed:
        log.warning("routing override", extra={"fields": {
            "model": model, "reason": reason, "actor": actor, "generation": published.generation}})
    return changed, published.table.routes(model)


def clear_override(state: ServingState, model: str, actor: str) -> tuple[bool, ModelRoutes]:
    before = state.current
    published = state.update(lambda cur: cur.with_table(without_override(cur.table, model)))
    changed = published.table.routes(model) != before.table.routes(model)
    if changed:
        log.warning("routing override cleared", extra={"fields": {
            "model": model, "actor": actor, "generation": published.generation}})
    return changed, published.table.routes(model)
