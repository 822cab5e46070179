"""The wire contract: generated code is current, buf lint passes, no breaking change vs main."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Loaded by path, not by putting protos/ on sys.path: there protos/waybill (the .proto files)
# would shadow the installed waybill package as a namespace package, and grpc_tools' import
# hook would then compile waybill.v1 from the .proto files instead of the committed stubs.
_spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

BUF = shutil.which("buf") or str(Path(sys.executable).parent / "buf")


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    committed = ROOT / "protos" / "python"  # the waybill-protos distribution
    assert committed == generate.DEFAULT_OUT, "`make protos` must write what this test checks"
    for fresh in generate.generate(tmp_path):
        rel = fresh.relative_to(tmp_path)
        assert (committed / rel).read_bytes() == fresh.read_bytes(), (
            f"{rel} is stale against protos/: run `make protos` and commit"
        )


def test_buf_lint() -> None:
    result = subprocess.run([BUF, "lint"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_against_main() -> None:
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "main:protos"],
        cwd=ROOT, capture_output=True, check=False,
    ).returncode == 0
    if not has_main:
        pytest.skip("no main branch with protos/ in this checkout to compare against")
    result = subprocess.run(
        [BUF, "breaking", "--against", ".git#branch=main"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
