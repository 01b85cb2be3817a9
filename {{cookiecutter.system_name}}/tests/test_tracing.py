"""Tracing (app.tracing): spans for requests and, on PostgreSQL, SQL statements, their ids in
the log lines; and nothing of OpenTelemetry loaded when it is off.

The spans go to the SDK's in-memory exporter through the BatchSpanProcessor the service uses
(flushed by the test). The template's own tests export to a real OTLP receiver from Gunicorn.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app import create_app
from app import logs
from app import tracing
from app.settings import ConfigError
from helpers import ENDPOINTS
from helpers import SAMPLES
from helpers import SETTINGS
from helpers import endpoint

# Any OTLP endpoint turns tracing on; this one is never contacted: the spans go to memory.
TRACED = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def exported() -> InMemorySpanExporter:
    """This process's tracer provider, as a worker makes its own, exporting to memory."""
    exporter = InMemorySpanExporter()
    tracing.start(SETTINGS, exporter=exporter)
    return exporter


@pytest.fixture
def environ(environ, exported):
    """The tests' settings with tracing on (so `app` and `client` are traced apps)."""
    yield {**environ, **TRACED}
    # Statements of later tests' apps are not traced: the instrumentation is per process.
    instrumentor = Psycopg2Instrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def spans(exported):
    """The finished spans of this test, read after a flush."""
    tracing.flush()
    exported.clear()  # those of the fixtures (migrations) and earlier tests

    def finished() -> list:
        assert tracing.flush()
        return list(exported.get_finished_spans())

    return finished


def hex_ids(span) -> tuple[str, str]:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def server_span(finished: list, name: str):
    (span,) = [s for s in finished if s.kind == SpanKind.SERVER and s.name == name]
    return span


def children(finished: list, parent) -> list:
    return [
        s for s in finished if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def test_a_request_is_a_span_and_its_statements_are_its_children(app, client, spans):
    response = client.get("/ready", headers={"X-Request-ID": "ready-1"})
    assert response.status_code == 200
    finished = spans()
    ready = server_span(finished, "GET /ready")
    assert ready.attributes["http.route"] == "/ready"
    assert ready.attributes["http.status_code"] == 200
    assert ready.resource.attributes["service.name"] == SETTINGS.system_name
    assert ready.resource.attributes["process.pid"] == os.getpid()
    statements = children(finished, ready)
    if not app.extensions["database"].dialect.postgres:
        assert statements == []  # SQLite's statements are not traced (psycopg2 only)
        return
    assert statements, "no span for /ready's statements"
    for statement in statements:
        assert statement.kind == SpanKind.CLIENT
        assert statement.context.trace_id == ready.context.trace_id
        assert statement.attributes["db.system"] == "postgresql"
        assert statement.attributes["db.statement"]


@pytest.mark.parametrize("name", [n for n in ENDPOINTS if "create" in endpoint(n).operations][:1])
def test_a_write_shows_its_statement_without_its_values(app, client, spans, auth_headers, name):
    settings = endpoint(name)
    record = SAMPLES[settings.store][0]
    headers = auth_headers if settings.auth == "api_key" else {}
    response = client.post(settings.path, json=record, headers=headers)
    assert response.status_code == 201, response.get_json()
    finished = spans()
    created = server_span(finished, f"POST {settings.path}")
    assert created.attributes["http.status_code"] == 201
    if app.extensions["database"].dialect.postgres:
        table = SETTINGS.stores[settings.store].table
        (insert,) = [s for s in children(finished, created) if s.name == "INSERT"]
        assert insert.attributes["db.statement"].startswith(f'INSERT INTO "{table}"')
        for value in record.values():  # parameters are not recorded
            if isinstance(value, str) and len(value) > 3 and not value.isidentifier():
                assert value not in insert.attributes["db.statement"]


def test_a_parent_trace_from_the_caller_is_continued(client, spans):
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    response = client.get("/health", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert response.status_code == 200
    health = server_span(spans(), "GET /health")
    assert hex_ids(health)[0] == trace_id
    assert format(health.parent.span_id, "016x") == parent_id


def test_log_lines_carry_the_request_span(app, spans, tmp_path):
    """An application log line written during a request, and the request's access line."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test_tracing")
    logger.addHandler(handler)
    app.add_url_rule("/test-log", "test_log", lambda: logger.warning("inside a request") or "ok")
    environs = []
    wsgi_app = app.wsgi_app
    app.wsgi_app = lambda environ, start: environs.append(environ) or wsgi_app(environ, start)
    try:
        assert app.test_client().get("/test-log").status_code == 200
    finally:
        logger.removeHandler(handler)
    span = server_span(spans(), "GET /test-log")
    line = json.loads(written.getvalue())
    assert (line["trace_id"], line["span_id"]) == hex_ids(span)

    access = json.loads(_access_line(environs[0], tmp_path / "access.log"))
    assert (access["trace_id"], access["span_id"]) == hex_ids(span)


def test_outside_a_span_a_line_has_no_trace_keys(app):
    record = logging.makeLogRecord({"msg": "no request", "levelno": logging.INFO})
    line = json.loads(logs.JsonFormatter().format(record))
    assert "trace_id" not in line and "span_id" not in line


def test_apps_made_in_one_process_trace_alike(environ, spans):
    first, second = create_app(environ=environ), create_app(environ=environ)
    untraced = create_app(environ={k: v for k, v in environ.items() if k not in TRACED})
    for app in (first, second, untraced):
        assert app.test_client().get("/health").status_code == 200
    health = [s for s in spans() if s.name == "GET /health"]
    assert len(health) == 2  # the untraced app made none
    for app in (first, second, untraced):
        app.extensions["database"].close()


def test_an_endpoint_that_is_not_a_url_stops_start_up(environ):
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'"):
        create_app(environ={**environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


OFF_PROBE = """
import json, sys
from app import create_app
app = create_app()
status = app.test_client().get("/health").status_code
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
traced = getattr(app, "_is_instrumented_by_opentelemetry", False)
print(json.dumps({"status": status, "loaded": loaded, "traced": traced}))
"""


def test_off_nothing_of_opentelemetry_is_imported(tmp_path):
    """Without an endpoint (a fresh process, so that no other test's import counts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(DATA_DIR=str(tmp_path), DATABASE_URL="", MIGRATE_ON_START="false")
    result = subprocess.run(
        [sys.executable, "-c", OFF_PROBE],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe == {"status": 200, "loaded": [], "traced": False}


def _access_line(environ: dict, path: Path) -> str:
    """What the Gunicorn worker's access logger writes for a request of this environ."""
    from gunicorn.config import Config

    class Response:
        status = "200 OK"
        headers = [("X-Request-ID", "test")]

    class Request:
        headers: list = []

    config = Config()
    config.set("accesslog", str(path))
    logger = logs.JsonGunicornLogger(config)
    logger.access(Response(), Request(), environ, timedelta(milliseconds=1))
    return path.read_text().splitlines()[-1]
