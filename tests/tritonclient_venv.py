"""A virtual environment holding tritonclient[grpc], made on first use and kept.

tritonclient needs protobuf<7 and Waybill protobuf>=7.35, and its ``inference`` protobuf
symbols clash with Waybill's own in one process: the tests run a client script in this
venv as a subprocess (as bench/ keeps MLServer in bench/.venvs/). It is installed from the
hash-locked ``tests/requirements-tritonclient.lock`` (``pip install --require-hashes``);
a marker holding the lock's sha256 tells a current venv from a stale one, which is made
anew. The venv lives in ``tests/.venvs/tritonclient`` (git-ignored), or under
``$WAYBILL_TEST_VENVS``. Made cold (pip's cache empty) it took 14 s here; a current one
costs nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LOCK = HERE / "requirements-tritonclient.lock"
VENVS = Path(os.environ.get("WAYBILL_TEST_VENVS") or HERE / ".venvs")
VENV = VENVS / "tritonclient"
PYTHON = VENV / "bin" / "python"
MARKER = VENV / ".installed"
# What pip prints when it cannot reach the index (the only reason to skip).
_OFFLINE = ("NewConnectionError", "Temporary failure in name resolution",
            "Max retries exceeded", "Network is unreachable", "ConnectTimeoutError",
            "ReadTimeoutError")


def _wanted() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def ensure() -> Path:
    """The venv's python, installing it first if missing or stale; skips the calling
    test only when the package index cannot be reached."""
    VENVS.mkdir(parents=True, exist_ok=True)
    with (VENVS / ".tritonclient.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one installer at a time
        wanted = _wanted()
        if PYTHON.exists() and MARKER.exists() and MARKER.read_text().strip() == wanted:
            return PYTHON
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        result = subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--require-hashes", "--no-deps", "-r", str(LOCK)],
            capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            said = result.stdout + result.stderr
            if any(sign in said for sign in _OFFLINE):
                pytest.skip(f"cannot install tritonclient: the package index is unreachable "
                            f"({said.strip().splitlines()[-1]})")
            raise RuntimeError(f"installing {LOCK.name} failed:\n{said}")
        MARKER.write_text(wanted + "\n")
        return PYTHON
