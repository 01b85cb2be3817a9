"""A generated service under real Gunicorn on a free loopback port, and a small HTTP client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
# What /ready says while a worker applies pending schema migrations at start-up.
MIGRATIONS_RUNNING = b"MIGRATE_ON_START: being applied"
START_TIMEOUT_S = 30
# What the master logs when its first SIGTERM starts the drain (app/lifecycle.py), and how long
# stop() looks for it before leaving the drain to run its course.
DRAINING_LOG = b"draining for"
DRAIN_START_WAIT_S = 2.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def child_pids(pid: int) -> list[int]:
    """A process's children (a Gunicorn master's workers, a postmaster's backends); [] once it
    has exited. Both fork from their main thread, whose children /proc lists."""
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


class HttpResult:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def http(
    method: str, url: str, body: object = None, headers: dict | None = None, timeout: float = 10
) -> HttpResult:
    """One request; HTTP error statuses are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResult(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return HttpResult(error.code, error.headers, error.read())


# What a deployment must choose; every other setting keeps the default the project ships.
DEPLOYMENT_SETTINGS = frozenset(
    {"BIND", "PORT", "DATABASE_URL", "DATA_DIR", "WEB_CONCURRENCY", "API_KEYS"}
)
# Taken from the caller's environment: what any shell has, none of it the service's settings.
SHELL_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
WORKERS = 2


def shell_environment() -> dict[str, str]:
    """The environment a user's shell gives the README's command: the shell's basics, with
    this Python's scripts first on PATH, and none of the caller's other variables."""
    env = {name: os.environ[name] for name in SHELL_VARIABLES if name in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class GunicornServer:
    """The generated service as its README starts it: `gunicorn -c gunicorn.conf.py main:app`
    in the project directory, in a shell's environment plus what a deployment chooses (a free
    loopback port, 2 workers, a data directory under work_dir); stopped by its own PID.

    `env` holds deployment choices (DEPLOYMENT_SETTINGS). Any other setting changes what is
    tested, so it is accepted only with `because`, the reason the caller needs it.
    `base_env` and `command` replace the shell's environment and the README's command (the
    Dockerfile's ENV and CMD, for instance).
    """

    def __init__(
        self,
        project_dir: Path,
        work_dir: Path,
        env: dict[str, str] | None = None,
        *,
        because: str | None = None,
        base_env: dict[str, str] | None = None,
        command: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        others = sorted(set(env or {}) - DEPLOYMENT_SETTINGS)
        if others and not because:
            named = ", ".join(others)
            raise ValueError(f"{named}: beyond a deployment's choices, say why (because=...)")
        self.project_dir = Path(project_dir)
        self.port = port or free_port()  # a port of its own; an instance restarted keeps it
        self.url = f"http://127.0.0.1:{self.port}"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = work_dir / "gunicorn.out"
        self.stderr_path = work_dir / "gunicorn.err"
        self.command = command or ["gunicorn", "-c", "gunicorn.conf.py", "main:app"]
        self.env = {
            **(shell_environment() if base_env is None else base_env),
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(WORKERS),
            "DATA_DIR": str(work_dir / "data"),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> GunicornServer:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.project_dir,
            env=self.env,
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.process.returncode}: {self.stderr()}")
            try:
                if http("GET", f"{self.url}/health", timeout=2).status == 200:
                    self._wait_for_migrations(deadline)
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"no 200 from /health in {START_TIMEOUT_S}s: {self.stderr()[-2000:]}")

    def _wait_for_migrations(self, deadline: float) -> None:
        """As a load balancer waits for readiness: while the service says its schema
        migrations are being applied (MIGRATE_ON_START on an empty or older database), wait.
        Any other answer (ready, or not ready for a reason a test may have arranged) ends
        the wait."""
        while time.monotonic() < deadline:
            if MIGRATIONS_RUNNING not in http("GET", f"{self.url}/ready", timeout=2).body:
                return
            time.sleep(0.05)

    def terminate(self) -> None:
        """Send SIGTERM to the master (a graceful shutdown) without waiting."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and once the master has begun draining a second SIGTERM, which skips the
        rest of the drain (DRAIN_SECONDS) for Gunicorn's graceful stop, as an operator's second
        SIGTERM does: with no balancer in front there is nothing to drain for. Then SIGKILL if
        it has not exited in time; returns the exit status. terminate() is the SIGTERM a
        platform sends, drain included."""
        if self.process is None:
            return 0
        logged_before = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        self.terminate()
        deadline = time.monotonic() + DRAIN_START_WAIT_S
        with self.stderr_path.open("rb") as log:  # only what the master logs from now on
            log.seek(logged_before)
            logged = b""
            while self.process.poll() is None and time.monotonic() < deadline:
                logged += log.read()
                if DRAINING_LOG in logged:
                    self.terminate()
                    break
                time.sleep(0.02)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        return self.process.returncode

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def access_lines(self) -> list[dict]:
        """The JSON access log lines written so far (Gunicorn logs them on stdout)."""
        lines = [json.loads(line) for line in self.stdout().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "access"]

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
