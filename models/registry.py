"""The model registry on disk: ``<root>/<name>/<semver>/{model.cbm,model.json}``.

This module finds, publishes and checks versions; it never loads a model into
memory for serving (that is :mod:`models.loaded`). A version becomes visible
only when complete: it is written into a hidden temporary directory beside its
final place and renamed into place, so a reader never sees half a version.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from models.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactError,
    Manifest,
    read_manifest,
    sha256_file,
)
from models.naming import MODEL_NAME_RE, is_semver, semver_key

# The committed registry: models/<name>/<version>/ next to this file.
DEFAULT_ROOT = Path(__file__).resolve().parent

# CatBoost's native format starts with these bytes; a pickle starts with 0x80.
CBM_MAGIC = b"CBM1"


@dataclass(frozen=True, slots=True)
class VersionRef:
    name: str
    version: str
    path: Path


def _inside(root: Path, path: Path) -> Path:
    """Resolve path and refuse it when it escapes root (symlinks included)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ArtifactError(f"{path}: resolves outside the registry root {root}")
    return resolved


def version_path(root: Path, name: str, version: str) -> Path:
    if not MODEL_NAME_RE.match(name):
        raise ArtifactError(f"model name {name!r} must match {MODEL_NAME_RE.pattern}")
    if not is_semver(version):
        raise ArtifactError(f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    return _inside(root, root / name / version)


def discover(root: Path) -> dict[str, list[VersionRef]]:
    """Every model directory under root with its semver versions, oldest first.

    A model directory is a directory with a valid model name that holds at least
    one semver directory; anything else (code, caches, temporary dirs) is ignored.
    """
    found: dict[str, list[VersionRef]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not MODEL_NAME_RE.match(model_dir.name):
            continue
        versions = [
            VersionRef(model_dir.name, child.name, child)
            for child in model_dir.iterdir()
            if child.is_dir() and is_semver(child.name)
        ]
        if versions:
            found[model_dir.name] = sorted(versions, key=lambda ref: semver_key(ref.version))
    return found


def check_files(version_dir: Path, root: Path) -> Manifest:
    """Check a version on disk without loading the model: manifest, file, magic, digest."""
    _inside(root, version_dir)
    manifest = read_manifest(version_dir)
    if manifest.version != version_dir.name or manifest.name != version_dir.parent.name:
        raise ArtifactError(
            f"{version_dir}: manifest says {manifest.name}/{manifest.version}, "
            f"directory says {version_dir.parent.name}/{version_dir.name}"
        )
    model_file = _inside(root, version_dir / MODEL_FILE)
    try:
        with model_file.open("rb") as handle:
            magic = handle.read(len(CBM_MAGIC))
    except OSError as err:
        raise ArtifactError(f"{model_file}: cannot read ({err.strerror})") from None
    if magic != CBM_MAGIC:
        raise ArtifactError(
            f"{model_file}: not a CatBoost native model (starts with {magic!r}, "
            f"expected {CBM_MAGIC!r}); pickle and joblib files are never loaded"
        )
    actual = sha256_file(model_file)
    if actual != manifest.sha256:
        raise ArtifactError(
            f"{model_file}: sha256 {actual} does not match the manifest's {manifest.sha256}"
        )
    return manifest


@contextlib.contextmanager
def staging_dir(root: Path, name: str, version: str) -> Iterator[Path]:
    """Yield a temporary directory to build a version in; publish it atomically on success.

    Refuses an existing version before and after the build (another writer may
    have published the same version meanwhile: rename onto a non-empty directory
    fails, and nothing is overwritten).
    """
    final = version_path(root, name, version)
    if final.exists():
        raise ArtifactError(f"{name} {version} already exists at {final}; versions are immutable")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        for child in tmp.iterdir():
            with child.open("rb") as handle:
                os.fsync(handle.fileno())
        # mkdtemp creates the directory 0700; a published version must be readable
        # by the serving user (another uid in a container) like any committed file.
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError as err:
            raise ArtifactError(
                f"{name} {version}: cannot publish to {final} ({err.strerror}); "
                "versions are immutable"
            ) from None
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish(root: Path, name: str, version: str, build: Callable[[Path], None]) -> Path:
    """Build a version with ``build(tmp_dir)`` and rename it into place; return its path."""
    with staging_dir(root, name, version) as tmp:
        build(tmp)
        missing = [f for f in (MODEL_FILE, MANIFEST_FILE) if not (tmp / f).is_file()]
        if missing:
            raise ArtifactError(f"{name} {version}: build wrote no {', '.join(missing)}")
    return version_path(root, name, version)
