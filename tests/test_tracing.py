"""OpenTelemetry tracing of the generated service, end to end: real Gunicorn (2 workers), real
PostgreSQL, and a real OTLP/HTTP receiver started here, which decodes what the workers export
(POST /v1/traces, protobuf) with opentelemetry-proto. The JSON log lines are matched against
the exported spans."""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from service_validator.server import GunicornServer, child_pids, http

EXPORT_WAIT_S = 20  # the BatchSpanProcessor exports every 5 s (OTEL_BSP_SCHEDULE_DELAY)
SERVER, CLIENT = ProtoSpan.SPAN_KIND_SERVER, ProtoSpan.SPAN_KIND_CLIENT
# Loaded by the OpenTelemetry SDK, exporter and instrumentation, by nothing else the service
# uses: found in a worker's memory map only when it traces.
OPENTELEMETRY_EXTENSIONS = ("/google/_upb/", "/wrapt/")


@dataclass(frozen=True)
class ExportedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict
    status: int
    resource: dict


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def _attributes(key_values) -> dict:
    return {item.key: _value(item.value) for item in key_values}


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on a free loopback port: each POST /v1/traces body (an
    ExportTraceServiceRequest, gzip-compressed or not) is decoded and its spans kept; the
    answer is 200 with an empty ExportTraceServiceResponse, as a collector answers."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.exports = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def keep(self, request: ExportTraceServiceRequest) -> None:
        spans = [
            ExportedSpan(
                name=span.name,
                kind=span.kind,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                attributes=_attributes(span.attributes),
                status=span.status.code,
                resource=_attributes(resource_spans.resource.attributes),
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self.exports += 1
            self.spans.extend(spans)

    def received(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, span_ids: set[str], timeout: float) -> set[str]:
        """Wait until every span id has arrived (or the time is up); those still missing."""
        deadline = time.monotonic() + timeout
        while True:
            missing = span_ids - {span.span_id for span in self.received()}
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)

    def __enter__(self) -> OtlpReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()


def _json_lines(server: GunicornServer) -> list[dict]:
    return [json.loads(line) for line in server.stdout().splitlines() if line.startswith("{")]


def _access_lines(server: GunicornServer, request_ids, timeout: float = 5) -> dict[str, dict]:
    """{request id: its access line}, once Gunicorn has written each (just after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = {line["request_id"]: line for line in server.access_lines()}
        if set(request_ids) <= set(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _get_retried(url: str, request_id: str, attempts: int = 3):
    """GET, again when the connection is reset: Gunicorn resets a connection accepted by a
    worker that is exiting to be recycled, before it reaches the app (with or without
    tracing), so the request has no span and no access line."""
    for attempt in range(1, attempts + 1):
        try:
            return http("GET", url, headers={"X-Request-ID": request_id})
        except OSError:
            if attempt == attempts:
                raise
            time.sleep(0.2)


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_requests_and_statements_are_exported_and_the_logs_name_them(
    shop, postgres_database, tmp_path
):
    project, blueprint = shop
    version = yaml.safe_load(blueprint.read_text())["system"]["version"]
    database = postgres_database.rsplit("/", 1)[1]
    given_trace, given_parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with OtlpReceiver() as receiver:
        server = GunicornServer(
            project,
            tmp_path / "run",
            {
                "DATABASE_URL": postgres_database,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "DB_STATEMENT_TIMEOUT_MS": "300",
            },
            because="tracing is on only with an OTLP endpoint: this test's receiver; a short "
            "statement timeout makes a request that fails in the database and logs it",
        )
        with server:
            sent = {  # request id: (method, path, body, extra headers, status expected)
                "create": ("POST", "/orders", {"customer": "Ada L.", "email": "ada@x"}, {}, 201),
                "read": ("GET", "/orders/1", None, {}, 200),
                "list": ("GET", "/orders?customer=Ada%20L.", None, {}, 200),
                "missing": ("GET", "/orders/999999", None, {}, 404),
                "continued": (
                    "GET",
                    "/health",
                    None,
                    {"traceparent": f"00-{given_trace}-{given_parent}-01"},
                    200,
                ),
            }
            for request_id, (method, path, body, headers, status) in sent.items():
                answer = http(
                    method, f"{server.url}{path}", body, {"X-Request-ID": request_id, **headers}
                )
                assert answer.status == status, (request_id, answer.body)
            access = _access_lines(server, sent)
            wanted = {access[request_id]["span_id"] for request_id in sent}
            # Exported while the workers run, by each one's BatchSpanProcessor thread.
            assert receiver.wait_for(wanted, EXPORT_WAIT_S) == set()
            workers = set(child_pids(server.process.pid))
            for pid in workers:
                assert all(name in _mapped_files(pid) for name in OPENTELEMETRY_EXTENSIONS)

            # A statement the database cancels (a lock held here): 504, logged in its span.
            locker = psycopg2.connect(postgres_database)
            try:
                with locker.cursor() as cursor:
                    cursor.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                    answer = http(
                        "GET", f"{server.url}/orders/1", headers={"X-Request-ID": "locked"}
                    )
                    assert answer.status == 504, answer.body
                    sent["locked"] = ("GET", "/orders/1", None, {}, 504)
            finally:
                locker.close()
            lines = _json_lines(server)
        # The rest was exported as the workers exited (SIGTERM: the provider's shutdown).
        access = _access_lines(server, sent)
        assert receiver.wait_for({access["locked"]["span_id"]}, 5) == set()
        received = receiver.received()

    by_id = {span.span_id: span for span in received}
    assert len(by_id) == len(received), "a span was exported twice"
    for request_id, (method, path, _, _, status) in sent.items():
        line = access[request_id]
        span = by_id[line["span_id"]]  # the access line names the request's span
        assert span.trace_id == line["trace_id"]
        assert span.kind == SERVER
        assert span.attributes["http.method"] == method
        assert span.attributes["http.target"] == path.split("?")[0]
        assert span.attributes["http.status_code"] == status
        assert span.name == f"{method} {span.attributes['http.route']}"
        # Each worker exports with a provider of its own, made after fork.
        assert span.resource["process.pid"] == line["pid"]
        assert line["pid"] in workers
        assert span.resource["service.name"] == "order_service"
        assert span.resource["service.version"] == version
    assert by_id[access["create"]["span_id"]].attributes["http.route"] == "/orders"
    assert by_id[access["read"]["span_id"]].attributes["http.route"].startswith("/orders/<")

    def statements(request_id: str) -> list[ExportedSpan]:
        parent = access[request_id]
        found = [s for s in received if s.parent_span_id == parent["span_id"]]
        assert found, f"no statement span under {request_id}"
        for span in found:
            assert span.kind == CLIENT
            assert span.trace_id == parent["trace_id"]
            assert span.attributes["db.system"] == "postgresql"
            assert span.attributes["db.name"] == database
            assert span.attributes["net.peer.name"] == "127.0.0.1"
        return found

    (insert,) = [s for s in statements("create") if s.name == "INSERT"]
    assert insert.attributes["db.statement"].startswith('INSERT INTO "orders"')
    assert "Ada L." not in insert.attributes["db.statement"]  # values are not recorded
    assert any(
        s.attributes["db.statement"].startswith("SELECT")
        and 'WHERE "id" = %s' in s.attributes["db.statement"]
        for s in statements("read")
    )
    listed = by_id[access["list"]["span_id"]]
    assert statements("list")
    # Nor are the values of list filters (the query string), as in the access line.
    assert not [v for v in listed.attributes.values() if "Ada" in str(v)]
    (cancelled,) = [s for s in statements("locked") if s.status == Status.STATUS_CODE_ERROR]
    assert cancelled.name == "SELECT"

    continued = by_id[access["continued"]["span_id"]]
    assert (continued.trace_id, continued.parent_span_id) == (given_trace, given_parent)

    # The application's line about the cancelled statement names its request's span; lines
    # written outside any span (start-up, migrations) have no trace keys.
    (timeout_line,) = [
        line for line in lines if line.get("request_id") == "locked" and line["logger"] != "access"
    ]
    assert (timeout_line["trace_id"], timeout_line["span_id"]) == (
        access["locked"]["trace_id"],
        access["locked"]["span_id"],
    )
    outside = [line for line in lines if "request_id" not in line]
    assert outside and all("trace_id" not in line for line in outside)


def test_a_worker_exports_its_queued_spans_when_it_exits(shop, tmp_path):
    """Recycled workers (and, at the end, the stopped server's) export what they still hold;
    each replacement makes a provider of its own."""
    project, _ = shop
    with OtlpReceiver() as receiver:
        server = GunicornServer(
            project,
            tmp_path / "run",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_BSP_SCHEDULE_DELAY": "600000",
                "GUNICORN_MAX_REQUESTS": "5",
            },
            because="tracing is on only with an OTLP endpoint: this test's receiver; no export "
            "on schedule, so that only exits export; workers recycled every 5 requests",
        )
        with server:
            sent = [f"recycled-{n}" for n in range(20)]
            for request_id in sent:
                assert _get_retried(f"{server.url}/health", request_id).status == 200
            access = _access_lines(server, sent)
        wanted = {access[request_id]["span_id"] for request_id in sent}
        assert receiver.wait_for(wanted, 5) == set()
        received = {span.span_id: span for span in receiver.received()}
    pids = {access[request_id]["pid"] for request_id in sent}
    assert len(pids) >= 4  # 20 requests, at most 5 per worker
    for request_id in sent:
        line = access[request_id]
        assert received[line["span_id"]].resource["process.pid"] == line["pid"]


def test_without_an_endpoint_nothing_is_traced_or_loaded(shop, tmp_path):
    project, _ = shop
    with GunicornServer(project, tmp_path / "run") as server:
        sent = {"off-health": "/health", "off-list": "/orders", "off-missing": "/orders/1"}
        for request_id, path in sent.items():
            http("GET", f"{server.url}{path}", headers={"X-Request-ID": request_id})
        for pid in child_pids(server.process.pid):
            assert not any(name in _mapped_files(pid) for name in OPENTELEMETRY_EXTENSIONS)
        access = _access_lines(server, sent)
    lines = [access[request_id] for request_id in sent]
    assert not [line for line in lines if "trace_id" in line or "span_id" in line]


def test_an_endpoint_that_is_not_a_url_stops_start_up(shop, tmp_path):
    project, _ = shop
    server = GunicornServer(
        project,
        tmp_path / "run",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
        because="an OTLP endpoint without a scheme, which the exporter could never reach",
    )
    with pytest.raises(RuntimeError) as stopped:
        server.start()
    assert (
        "configuration error: OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318' is not an http://"
        in str(stopped.value)
    )
