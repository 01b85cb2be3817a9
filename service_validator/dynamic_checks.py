"""Checks against the service running under Gunicorn: real HTTP on a loopback port."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection, HTTPException
from pathlib import Path

from .report import CheckFailed, Passed
from .server import GunicornServer, http

BIN = Path(sys.executable).parent
SCHEMATHESIS_CHECKS = (
    "not_a_server_error,response_schema_conformance,status_code_conformance,"
    "content_type_conformance,positive_data_acceptance"
)


def health_and_ready(server: GunicornServer) -> Passed:
    health = http("GET", f"{server.url}/health")
    ready = http("GET", f"{server.url}/ready")
    if health.status != 200 or ready.status != 200:
        body = ready.body[:200].decode(errors="replace")
        raise CheckFailed(f"/health {health.status}, /ready {ready.status}: {body}")
    return Passed("/health 200, /ready 200", {"health": 200, "ready": 200})


def openapi_valid(server: GunicornServer) -> tuple[Passed, dict]:
    from openapi_spec_validator import validate

    response = http("GET", f"{server.url}/openapi.json")
    if response.status != 200:
        raise CheckFailed(f"/openapi.json answered {response.status}")
    document = response.json()
    try:
        validate(document)
    except Exception as error:  # the validator's exceptions carry the reason
        raise CheckFailed(f"invalid OpenAPI document: {str(error).splitlines()[0]}") from None
    version = document.get("openapi")
    return Passed(f"OpenAPI {version} document is valid ({len(document['paths'])} paths)"), document


def _valid_post_bodies(document: dict, paths: list[str]) -> dict[str, object]:
    """For each path, the smallest POST body schemathesis generates as valid, from the
    already-fetched OpenAPI document (parsed once, not per collection)."""
    import schemathesis
    from hypothesis import HealthCheck, find, settings

    schema = schemathesis.openapi.from_dict(document)
    posts = {
        op.path: op
        for op in (result.ok() for result in schema.get_all_operations())
        if op.method.upper() == "POST" and op.path in paths
    }
    quiet = settings(database=None, suppress_health_check=list(HealthCheck), max_examples=200)
    mode = schemathesis.GenerationMode.POSITIVE
    return {
        path: find(operation.as_strategy(generation_mode=mode), lambda _: True, settings=quiet).body
        for path, operation in posts.items()
    }


def _collections(document: dict) -> list[str]:
    return [
        path
        for path, item in document["paths"].items()
        if "{" not in path and ("post" in item or f"{path}/{{id}}" in document["paths"])
    ]


def crud_round_trip(server: GunicornServer, document: dict, headers: dict) -> Passed:
    done = []
    collections = _collections(document)
    bodies = _valid_post_bodies(document, collections)
    for path in collections:
        operations = document["paths"][path]
        item_ops = document["paths"].get(f"{path}/{{id}}", {})
        if "get" in operations:
            listed = http("GET", f"{server.url}{path}", headers=headers)
            if listed.status != 200:
                raise CheckFailed(f"GET {path} answered {listed.status}")
        if "post" not in operations:
            done.append(f"{path} (read-only: list)")
            continue
        body = bodies[path]
        created = http("POST", f"{server.url}{path}", body, headers)
        if created.status != 201:
            raise CheckFailed(
                f"POST {path} {body} answered {created.status}: {created.body[:200]!r}"
            )
        record = created.json()
        item = f"{server.url}{path}/{record['id']}"
        steps = []
        if "get" in item_ops:
            steps.append(("GET", None, 200))
        if "put" in item_ops:
            steps.append(("PUT", body, 200))
        if "patch" in item_ops:
            steps.append(("PATCH", {}, 200))
        if "delete" in item_ops:
            steps += [("DELETE", None, 204), ("GET", None, 404)]
        for method, payload, expected in steps:
            if method == "GET" and expected == 404 and "get" not in item_ops:
                continue
            answer = http(method, item, payload, headers)
            if answer.status != expected:
                raise CheckFailed(
                    f"{method} {path}/{{id}} answered {answer.status}, not {expected}"
                )
            if method == "GET" and expected == 200 and answer.json() != record:
                raise CheckFailed(f"GET {path}/{{id}} differs from what POST returned")
        done.append(path)
    if not done:
        raise CheckFailed("no collection found in /openapi.json")
    return Passed(f"round trip on {len(done)} collection(s): {', '.join(done)}")


def schemathesis_run(
    server: GunicornServer, headers: dict, examples: int, seed: int, work_dir: Path
) -> Passed:
    report = work_dir / "schemathesis.xml"
    command = [
        str(BIN / "schemathesis"),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--generation-deterministic",
        # Text is UTF-8 without NUL: the service refuses the rest (422), as databases would.
        "--generation-allow-x00",
        "false",
        "--generation-codec",
        "utf-8",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=work_dir)
    summary = re.search(r"(\d+) generated, ([^\n]*)", result.stdout)
    generated = int(summary.group(1)) if summary else 0
    detail = summary.group(0).strip() if summary else "no summary"
    if result.returncode != 0:
        failures = re.findall(r"^- (ST\d+ [^\n]+)", result.stdout, re.MULTILINE)
        first = re.search(r"^_+ (\S+ \S+) _+$", result.stdout, re.MULTILINE)
        where = f" on {first.group(1)}" if first else ""
        reasons = ", ".join(sorted(set(failures))) or result.stderr.strip()[-300:]
        raise CheckFailed(f"{reasons}{where}; {detail}", {"cases": generated})
    return Passed(f"{detail} (seed {seed}, {examples} examples/operation)", {"cases": generated})


def _parse_wrk(output: str) -> dict:
    def seconds(text: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": round(seconds(latency["50"]) * 1000, 3),
        "p99_ms": round(seconds(latency["99"]) * 1000, 3),
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def load(server: GunicornServer, document: dict, headers: dict, seconds: int, connections: int):
    wrk = shutil.which("wrk")
    if wrk is None:
        raise CheckFailed("wrk is not installed (apt-get install wrk)")
    targets = ["/health"] + [
        path for path in _collections(document) if "get" in document["paths"][path]
    ][:1]
    measured = {}
    for target in targets:
        command = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        result = subprocess.run(
            [*command, f"{server.url}{target}"],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        if result.returncode != 0:
            raise CheckFailed(f"wrk failed: {result.stderr.strip()[:200]}")
        measured[target] = _parse_wrk(result.stdout)
    summary = "; ".join(
        f"GET {target}: {m['requests_per_s']:.0f} req/s, p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms"
        for target, m in measured.items()
    )
    bad = {t: m for t, m in measured.items() if m["non_2xx"] or m["socket_errors"]}
    if bad:
        raise CheckFailed(
            f"unexpected statuses or socket errors at {connections} connections: {bad}", measured
        )
    return Passed(f"{connections} connections x {seconds}s, all 2xx: {summary}", measured)


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples (Prometheus text format) whose labels include the given ones."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


def settled_metric_total(
    url: str, name: str = "flask_http_request_total", limit_s: float = 10, **labels: str
) -> float:
    """A metric's total once it stops changing: each worker adds its requests to /metrics
    within a fraction of a second (app.metrics.FLUSH_INTERVAL_S), and requests queued by
    earlier load may still be being served."""

    def total() -> float:
        return metric_total(http("GET", f"{url}/metrics").body.decode(), name, **labels)

    previous = total()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = total()
        if current == previous:
            return current
        previous = current
    raise CheckFailed(f"{name} kept changing for {limit_s}s with no load sent")


def metrics_count(server: GunicornServer, rounds: int = 25, per_round: int = 40) -> Passed:
    """Requests counted by /metrics, summed over the workers, equal the requests sent."""
    before = settled_metric_total(server.url)
    sent = 0
    writers: set[str] = set()
    with ThreadPoolExecutor(16) as pool:
        for _ in range(rounds):
            statuses = list(
                pool.map(lambda _: http("GET", f"{server.url}/health").status, range(per_round))
            )
            if statuses != [200] * per_round:
                raise CheckFailed(f"/health answered {sorted(set(statuses))} under load")
            sent += per_round
            writers = {line["pid"] for line in server.access_lines() if line["path"] == "/health"}
            if len(writers) >= 2:
                break
    after = settled_metric_total(server.url)
    counted = after - before
    measurements = {"sent": sent, "counted": counted, "workers_counting": len(writers)}
    if counted != sent:
        raise CheckFailed(f"sent {sent} requests, /metrics counted {counted}", measurements)
    if len(writers) < 2:
        raise CheckFailed(f"only one worker served {sent} requests: nothing summed", measurements)
    return Passed(
        f"sent {sent}, counted {counted:.0f}, summed over {len(writers)} workers", measurements
    )


def graceful_shutdown(
    server: GunicornServer, graceful_timeout: float, drain_seconds: float, connections: int = 16
) -> Passed:
    """SIGTERM while requests are in flight: /ready answers 503 at once (the instance drains)
    while every request is still answered for drain_seconds, every request the service
    received is answered, and the master exits cleanly within drain_seconds +
    graceful_timeout.

    Each request carries its own X-Request-ID. A connection dropped without an answer counts as
    lost if the service logged that request id; if it did not, the connection was still in the
    kernel's listen queue when the listener closed and never reached the application: those are
    reported separately (what the drain gives a load balancer time to avoid: it stops routing
    on the first 503 of /ready).
    """
    stop = threading.Event()
    lock = threading.Lock()
    sent = iter(range(10**9))
    answered: list[str] = []
    unanswered: list[str] = []
    tally = {"refused": 0, "non_200": 0}
    not_ready_after: list[float] = []
    terminated = threading.Event()
    started = 0.0

    def client() -> None:
        while not stop.is_set():
            request_id = f"shutdown-{next(sent)}"
            connection = HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                connection.connect()
            except OSError:
                with lock:
                    tally["refused"] += 1  # the listener is closed: nothing was sent
                time.sleep(0.01)
                continue
            try:
                connection.request("GET", "/health", headers={"X-Request-ID": request_id})
                response = connection.getresponse()
                response.read()
                with lock:
                    answered.append(request_id)
                    tally["non_200"] += response.status != 200
            except (OSError, HTTPException):
                with lock:
                    unanswered.append(request_id)
            finally:
                connection.close()

    def readiness() -> None:
        """How soon after SIGTERM /ready says 503: what a balancer's health check sees."""
        terminated.wait(60)
        for _ in range(int(max(drain_seconds, 1) * 20)):
            try:
                status = http("GET", f"{server.url}/ready", timeout=2).status
            except OSError:
                return
            if status == 503:
                not_ready_after.append(time.monotonic() - started)
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    threads.append(threading.Thread(target=readiness, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    server.terminate()
    terminated.set()
    limit = drain_seconds + graceful_timeout
    try:
        code = server.process.wait(limit + 5)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join(15)
    logged = set(re.findall(r'"request_id": "(shutdown-\d+)"', server.stdout()))
    lost = [request_id for request_id in unanswered if request_id in logged]
    queued = len(unanswered) - len(lost)
    measurements = {
        "answered": len(answered),
        "lost_after_received": len(lost),
        "reset_in_listen_queue": queued,
        "refused_after_close": tally["refused"],
        "non_200": tally["non_200"],
        "exit_code": code,
        "exit_seconds": round(took, 2),
        "not_ready_after_seconds": round(not_ready_after[0], 2) if not_ready_after else None,
    }
    if code is None or took > limit:
        raise CheckFailed(
            f"no exit within DRAIN_SECONDS + graceful timeout ({limit:g} s)", measurements
        )
    if drain_seconds > 0 and not (not_ready_after and not_ready_after[0] < 1):
        raise CheckFailed("/ready did not answer 503 within 1 s of SIGTERM", measurements)
    if code != 0 or lost or tally["non_200"]:
        raise CheckFailed(
            f"exit {code}; {len(lost)} received request(s) left unanswered, "
            f"{tally['non_200']} non-200 during shutdown",
            measurements,
        )
    return Passed(
        f"/ready 503 {not_ready_after[0] if not_ready_after else '-'}s after SIGTERM; exit 0 in "
        f"{took:.2f}s (limit {limit:g}s); {len(answered)} answered, 0 received and lost; "
        f"{queued} reset in the listen queue, {tally['refused']} refused after the listener "
        "closed",
        measurements,
    )
