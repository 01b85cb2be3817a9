"""OpenTelemetry tracing: a span for each request and each SQL statement, exported over OTLP/HTTP
when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Off (the default), nothing of OpenTelemetry is imported and nothing is wrapped: a request runs
the code of a service without tracing, but for one comparison per log line (app.logs), and
the log lines carry no trace fields.

On, create_app() calls instrument(): Flask's request spans (opentelemetry-instrumentation-flask)
and, on PostgreSQL, a span per statement (opentelemetry-instrumentation-psycopg2 wraps
psycopg2.connect, and every connection of the process's pools is made after that, so every
statement is traced; SQLite's statements are not). Neither starts a thread, so the app can be
made in the Gunicorn master (preload_app) and forked. The tracer provider, with its
BatchSpanProcessor thread and OTLP exporter, is made in the process that serves requests,
before its first one (start()): each Gunicorn worker has its own, and a worker that replaces a
recycled one makes a new one. Requests never wait for the collector: spans queue (up to 2048,
then they are dropped) for the exporter's thread; a process that exits exports what is queued,
waiting at most EXIT_EXPORT_S for it (the SDK alone would wait up to 30 s for a collector
that does not answer, holding up a worker's exit, so a restart or a recycling).

Statements are recorded without their parameters and request targets without their query
strings, so values sent to the service (list filters, fields) stay out of the traces.

The SDK's own variables configure the rest: OTEL_SERVICE_NAME (default: the system name),
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_BSP_*, OTEL_PYTHON_FLASK_EXCLUDED_URLS, OTEL_PROPAGATORS.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
from collections.abc import Callable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import logs
from .settings import ConfigError

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from .settings import Settings

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
DISABLED_VARIABLE = "OTEL_SDK_DISABLED"
EXIT_EXPORT_S = 3.0  # longest a process's exit waits for its last spans to be exported

_lock = threading.Lock()
_started_in = 0  # the pid of the process whose tracer provider is made


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to trace: an OTLP endpoint is set (an http:// or https:// URL, else
    ConfigError, so a typo stops start-up instead of losing every span) and the SDK is not
    disabled (OTEL_SDK_DISABLED=true)."""
    endpoints = [(name, environ.get(name)) for name in ENDPOINT_VARIABLES if environ.get(name)]
    for name, value in endpoints:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name}={value!r} is not an http:// or https:// URL")
    disabled = (environ.get(DISABLED_VARIABLE) or "").strip().lower() == "true"
    return bool(endpoints) and not disabled


def instrument(app: Flask, settings: Settings) -> None:
    """Spans for the app's requests and, on PostgreSQL, for its SQL statements; the log lines
    get the current trace. The provider is made in each process that serves (start())."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import get_current_span

    _sdk()  # imported now, not on a worker's first request
    FlaskInstrumentor.instrument_app(
        app,
        request_hook=_keep_span_ids,
        response_hook=_target_without_query,
        enable_commenter=False,  # no SQL comments: statements stay as the code wrote them
        meter_provider=NoOpMeterProvider(),  # Prometheus has the request metrics (app.metrics)
    )
    if app.extensions["database"].dialect.postgres:
        from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

        instrumentor = Psycopg2Instrumentor()  # one per process (the instrumentors' rule)
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()  # statements as written: parameter values are not kept
    app.wsgi_app = StartInThisProcess(app.wsgi_app, settings)
    logs.current_trace = functools.partial(_span_ids, get_current_span)


class StartInThisProcess:
    """WSGI middleware: makes this process's tracer provider before its first request (the
    first process to serve is a forked worker, never a preloading master)."""

    def __init__(self, wsgi_app, settings: Settings) -> None:
        self.wsgi_app = wsgi_app
        self.settings = settings

    def __call__(self, environ: dict, start_response):
        if _started_in != os.getpid():
            start(self.settings)
        return self.wsgi_app(environ, start_response)


def start(settings: Settings, exporter: SpanExporter | None = None) -> None:
    """This process's tracer provider, once: spans batched by a BatchSpanProcessor thread to
    the OTLP/HTTP exporter (configured by the OTEL_EXPORTER_OTLP_* variables), or to
    `exporter` (tests), and exported at exit. A provider already set (by a parent process
    before fork, or by your code) is kept: the SDK allows one per process."""
    global _started_in
    with _lock:
        if _started_in == os.getpid():
            return
        trace, TracerProvider, BatchSpanProcessor, Resource = _sdk()
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            _started_in = os.getpid()
            return
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        resource = Resource.create(
            {"service.version": settings.version, "process.pid": os.getpid()}
        )
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": settings.system_name}))
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        atexit.register(_shut_down, provider)
        _started_in = os.getpid()


def _shut_down(provider: TracerProvider) -> None:
    """At exit: export what is queued and stop the exporter's thread, for at most
    EXIT_EXPORT_S (on a thread, so that a collector that does not answer is left behind)."""
    exporting = threading.Thread(target=provider.shutdown, name="trace-export-at-exit", daemon=True)
    exporting.start()
    exporting.join(EXIT_EXPORT_S)


def flush(timeout_ms: int = 10_000) -> bool:
    """Export the spans this process has queued, now (tests); False if that timed out."""
    if _started_in != os.getpid():
        return True
    from opentelemetry import trace

    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    return force_flush is None or force_flush(timeout_ms)


def _span_ids(current_span: Callable[[], Span]) -> tuple[str, str] | None:
    """The current span's trace id and span id (hex, as exported), or None outside a span:
    what each JSON log line of a process that traces carries (app.logs)."""
    context = current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _keep_span_ids(span: Span, environ: dict) -> None:
    """The request span's ids, kept in the environ for the access line, which Gunicorn writes
    once the span has ended."""
    context = span.get_span_context()
    if context.is_valid:
        environ[logs.TRACE_KEY] = format(context.trace_id, "032x"), format(context.span_id, "016x")


def _target_without_query(span: Span | None, status: str, headers: list) -> None:
    """The request's target without its query string, as the access line has it: the values
    of list filters (an email, say) stay out of the traces, as SQL parameters do."""
    if span is not None and span.is_recording():
        from flask import request

        target = request.environ.get("RAW_URI") or request.environ.get("PATH_INFO", "")
        span.set_attribute("http.target", target.split("?", 1)[0])


def _sdk():
    """The SDK's parts start() uses, imported (also the OTLP exporter, used unless a test
    gives its own)."""
    import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return trace, TracerProvider, BatchSpanProcessor, Resource
