"""The committed demo registry checks out, and the registry commands say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from models.artifact import read_manifest
from models.registry import DEFAULT_ROOT, discover

ROOT = Path(__file__).resolve().parent.parent


def waybill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.runtime.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_committed_demo_versions_verify() -> None:
    result = waybill("registry", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok      delivery_eta 1.0.0" in result.stdout
    assert "ok      delivery_eta 1.1.0" in result.stdout


def test_committed_demo_versions_are_small_and_1_1_0_is_better() -> None:
    refs = {ref.version: ref for ref in discover(DEFAULT_ROOT)["delivery_eta"]}
    old, new = (read_manifest(refs[v].path) for v in ("1.0.0", "1.1.0"))
    assert new.metrics.mae < old.metrics.mae < old.metrics.baseline_mae
    assert len(new.model_features) > len(old.model_features)
    assert max(old.size_bytes, new.size_bytes) < 600 * 1024


def test_verify_fails_on_a_tampered_copy(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(DEFAULT_ROOT / "delivery_eta", tmp_path / "delivery_eta")
    cbm = tmp_path / "delivery_eta" / "1.0.0" / "model.cbm"
    cbm.write_bytes(cbm.read_bytes()[:-10])
    result = waybill("registry", "verify", "--registry", str(tmp_path))
    assert result.returncode == 1
    assert "FAILED  delivery_eta 1.0.0" in result.stdout
    assert "sha256" in result.stdout


def test_list_as_json() -> None:
    result = waybill("registry", "list", "--json")
    listed = json.loads(result.stdout)
    assert [(r["model"], r["version"]) for r in listed] == [("delivery_eta", "1.0.0"),
                                                           ("delivery_eta", "1.1.0")]
