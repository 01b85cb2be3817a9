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
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


class GunicornServer:
    """gunicorn -c gunicorn.conf.py main:app in project_dir; stopped by its own PID."""

    def __init__(self, project_dir: Path, work_dir: Path, env: dict | None = None) -> None:
        self.project_dir = Path(project_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_dir = work_dir / "metrics"
        self.stdout_path = work_dir / "gunicorn.out"
        self.stderr_path = work_dir / "gunicorn.err"
        self.env = {
            **os.environ,
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "2",
            "DATA_DIR": str(work_dir / "data"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> GunicornServer:
        self.process = subprocess.Popen(
            [GUNICORN, "-c", "gunicorn.conf.py", "main:app"],
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
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"no 200 from /health in {START_TIMEOUT_S}s: {self.stderr()[-2000:]}")

    def terminate(self) -> None:
        """Send SIGTERM to the master (a graceful shutdown) without waiting."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL if it has not exited in time; returns the exit status."""
        if self.process is None:
            return 0
        self.terminate()
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

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
