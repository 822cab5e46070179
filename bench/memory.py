"""Resident memory of `waybill serve` with 1, 2 and 5 versions loaded.

Copies of the committed delivery_eta 1.1.0 under new version numbers make the
registries (the manifest names its version; the model bytes and digest are the same),
so the difference between rows is what one more loaded version costs. Servers listen
on 127.0.0.1 and are stopped before the next one starts.

    .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models" / "delivery_eta" / "1.1.0"
COUNTS = (1, 2, 5)
SETTLE_S = 1.0


def registry(base: Path, versions: int) -> Path:
    root = base / f"registry-{versions}"
    for i in range(versions):
        version = f"1.1.{i}"
        target = root / "delivery_eta" / version
        shutil.copytree(SOURCE, target)
        manifest = json.loads((target / "model.json").read_text())
        manifest["version"] = version
        (target / "model.json").write_text(json.dumps(manifest))
    return root


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(root: Path) -> float:
    port_file = root / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.runtime.cli", "serve", "--host", "127.0.0.1", "--port", "0",
         "--admin-port", "0", "--metrics-port", "0", "--port-file", str(port_file),
         "--registry", str(root), "--no-routing", "--no-database"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start ({proc.returncode})")
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        return rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    size = (SOURCE / "model.cbm").stat().st_size / 1024
    print(f"model.cbm of delivery_eta 1.1.0: {size:.0f} KiB")
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: measure(registry(Path(tmp), n)) for n in COUNTS}
    base = results[COUNTS[0]]
    for n, rss in results.items():
        extra = (rss - base) / (n - 1) if n > 1 else 0.0
        print(f"{n} version(s): {rss:6.1f} MiB RSS" +
              (f"  (+{extra:.2f} MiB per extra version)" if n > 1 else ""))


if __name__ == "__main__":
    main()
