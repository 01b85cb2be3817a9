"""A throwaway PostgreSQL cluster on a free port, for tests that stop or break the database."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from service_validator.server import child_pids, free_port

_SERVER_BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
BIN_DIR = Path(_SERVER_BIN_DIRS[-1]) if _SERVER_BIN_DIRS else None


def _as_postgres(
    command: list[str], prefix: list[str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then (after
    prefix, a command such as `ip netns exec NAME` that runs the rest)."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    command = [*(prefix or []), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


def _signal(pid: int, signal_number: int) -> bool:
    """Send a signal; False when the process no longer exists."""
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        return False
    return True


class ThrowawayCluster:
    """initdb into a temporary directory, then pg_ctl start/stop on a free port of host
    (loopback by default), inside network namespace netns when one is given."""

    def __init__(self, host: str = "127.0.0.1", netns: str | None = None) -> None:
        if BIN_DIR is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="pg-throwaway-"))
        self.data = self.root / "data"
        self.frozen: list[int] = []  # the processes freeze() stopped, for thaw()
        self.port = free_port()
        self.host = host
        self.netns = netns
        self.url = f"postgresql://postgres@{host}:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        result = _as_postgres(
            [
                str(BIN_DIR / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr}")
        if host != "127.0.0.1":  # initdb trusts loopback only; this test host is the client
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.write("host all all 10.0.0.0/8 trust\n")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off"
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        result = _as_postgres(
            [
                str(BIN_DIR / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
            ],
            prefix=inside,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres([str(BIN_DIR / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def freeze(self) -> None:
        """SIGSTOP the postmaster, then its children (backends, checkpointer, ...): stopped
        first, it forks no child that the list would miss. A child that exits meanwhile has
        nothing to stop."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)
        children = [pid for pid in child_pids(postmaster) if _signal(pid, signal.SIGSTOP)]
        self.frozen = [postmaster, *children]

    def thaw(self) -> None:
        """SIGCONT to every process freeze() stopped. One already gone is skipped: a child
        that was exiting when frozen is reaped as soon as the postmaster runs again."""
        for pid in self.frozen:
            _signal(pid, signal.SIGCONT)
        self.frozen = []

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.url, connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
