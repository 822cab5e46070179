"""Reported actuals scored with the kind of the version that predicted them.

The store finds the logged prediction of each outcome; this module decides what the
actual means for that version (which forms and range it accepts, the accuracy terms
it adds) by asking the version's model kind. A version no longer served is read from
the registry: outcomes often arrive days after a version left traffic.
"""

from __future__ import annotations

import functools
from pathlib import Path

from models.artifact import ArtifactError, OutputSpec, read_manifest
from models.kinds import Actual, Logged, OutcomeRefused, Terms, kind_of
from models.registry import version_path
from server.serving.state import ServingState


class OutcomeScorer:
    """The store's ``score`` function: (index, actual, model, version, logged) -> terms."""

    def __init__(self, state: ServingState, registry: Path) -> None:
        self._state = state
        self._registry = registry

    def __call__(self, index: int, actual: Actual, model: str, version: str,
                 logged: Logged) -> Terms:
        try:
            output = self.output(model, version)
        except ArtifactError as err:
            raise OutcomeRefused(f"outcomes[{index}].prediction_id", "version_unavailable",
                                 f"version {version} of {model} that made this prediction "
                                 f"cannot be read ({err})") from None
        return kind_of(output).terms(output, f"outcomes[{index}]", actual, logged)

    def output(self, model: str, version: str) -> OutputSpec:
        loaded = self._state.current.versions.get(model, {}).get(version)
        if loaded is not None:
            return loaded.output
        return _registered_output(self._registry, model, version)


@functools.lru_cache(maxsize=256)
def _registered_output(registry: Path, model: str, version: str) -> OutputSpec:
    # Published versions never change, so a manifest read once stays right.
    return read_manifest(version_path(registry, model, version)).output
