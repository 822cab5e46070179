"""What a model name and a version look like, and how versions sort.

The one home of these rules: the registry (``models/artifact.py``) and the routing config
(``router/config.py``) both check names and versions with them.
"""

from __future__ import annotations

import re

# Semantic Versioning 2.0.0, without build metadata (a version names one artifact).
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$"
)
MODEL_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def is_semver(text: str) -> bool:
    return SEMVER_RE.match(text) is not None


def semver_key(text: str) -> SemverKey:
    """Sort key with SemVer precedence (a pre-release sorts before its release)."""
    match = SEMVER_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, ids)
