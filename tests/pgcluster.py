"""A throwaway PostgreSQL cluster for tests and benchmarks: 127.0.0.1, an OS-chosen free
port, a temporary directory, stopped and deleted after.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` system
user (Debian's ``postgresql`` package creates it) and its commands run through
``runuser``; as any other user they run as that user. The binaries are Debian's
(``/usr/lib/postgresql/<major>/bin``) or whatever ``pg_ctl`` is on PATH. ``make test``
installs the package when it can (see the Makefile); :func:`unavailable` says why a
cluster cannot be had here, for a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SUPERUSER = "postgres"


def binaries() -> Path | None:
    """The directory of initdb and pg_ctl, newest major first; None when not installed."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                    key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                    else 0, reverse=True)
    if debian:
        return debian[0].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _as_root() -> bool:
    return os.geteuid() == 0


def unavailable() -> str | None:
    """Why no cluster can run here, or None when one can."""
    if binaries() is None:
        return ("PostgreSQL is not installed (make test installs Debian's postgresql package "
                "with apt-get as root or through sudo -n; this machine could not)")
    if _as_root():
        try:
            import pwd

            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to run PostgreSQL as 'postgres'"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One cluster; ``start()`` it, ``database()`` for a fresh, empty database's URL."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        reason = unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        self.bin = binaries()
        assert self.bin is not None
        self.root = Path(tempfile.mkdtemp(prefix="waybill-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        # fsync off: a test cluster need not survive a power cut, and it is much faster.
        self.settings = {"fsync": "off", "full_page_writes": "off", "max_connections": "200",
                         **(settings or {})}
        if _as_root():
            import pwd

            owner = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def _run(self, tool: str, *args: str,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        assert self.bin is not None
        command = [str(self.bin / tool), *args]
        if _as_root():
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n"
                               f"{self.log_text()[-2000:]}")
        return done

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> Cluster:
        """Start on a free port the first time, on the same port after a stop."""
        for _ in range(5):
            port = self.port or free_port()
            options = " ".join([f"-p {port}", f"-k {self.root}",
                                "-c listen_addresses=127.0.0.1",
                                *(f"-c {k}={v}" for k, v in self.settings.items())])
            try:
                self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                          "-w", "-t", "60", "start", timeout=90)
            except RuntimeError:
                if self.port:  # a restart on its own port: nothing else to try
                    raise
                continue  # the port was taken between choosing and binding: another
            self.port = port
            return self
        raise RuntimeError("PostgreSQL did not start on any free port")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until_down(cluster: Cluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while cluster.running and time.monotonic() < deadline:
        time.sleep(0.05)
