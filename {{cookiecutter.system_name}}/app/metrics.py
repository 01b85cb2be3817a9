"""Prometheus metrics: request counts and durations, served at /metrics.

prometheus-flask-exporter serves /metrics (adding up every worker's samples in multiprocess
mode) and the app_info gauge. The request metrics carry its names and labels, but are recorded
by a WSGI middleware: the exporter's Flask hooks cost about 50 us on every request, most of it
spent in Flask's request proxies and in looking up label children, which a cache of children
avoids.

Under Gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker starts, so
every worker writes its samples there and /metrics adds them up across workers.
"""

from __future__ import annotations

from time import perf_counter

from flask import Flask
from flask import Request
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_flask_exporter import PrometheusMetrics
from werkzeug.routing import Rule

METRICS_PATH = "/metrics"
URL_RULE_KEY = "service.url_rule"  # set by MetricsRequest, read by the middleware
EXCEPTION_KEY = "service.exception"  # set when an unexpected error produced the answer
UNMATCHED = "None"  # the url_rule label of requests no route matched, as the exporter has it
# Other request methods share one label value, so clients cannot add label values at will.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """WSGI middleware: each request's duration, by method, URL rule and status.

    flask_http_request_duration_seconds (histogram; method, url_rule, status),
    flask_http_request_total (method, status) and flask_http_request_exceptions_total
    (method, status; requests answered by the unexpected-error handler or raising out of
    the app). Requests for /metrics itself are not counted.
    """

    def __init__(self, wsgi_app, registry: CollectorRegistry) -> None:
        self.wsgi_app = wsgi_app
        self._duration = Histogram(
            "flask_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ("method", "url_rule", "status"),
            registry=registry,
        )
        self._total = Counter(
            "flask_http_request_total",
            "Total number of HTTP requests",
            ("method", "status"),
            registry=registry,
        )
        self._exceptions = Counter(
            "flask_http_request_exceptions_total",
            "Total number of HTTP requests which resulted in an exception",
            ("method", "status"),
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple] = {}

    def __call__(self, environ: dict, start_response):
        started = perf_counter()
        status_line = ["500"]

        def start(status: str, headers: list, exc_info=None):
            status_line[0] = status
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, start)
        except BaseException:
            environ[EXCEPTION_KEY] = True
            self._record(environ, "500", perf_counter() - started)
            raise
        self._record(environ, status_line[0][:3], perf_counter() - started)
        return body

    def _record(self, environ: dict, status: str, seconds: float) -> None:
        rule = environ.get(URL_RULE_KEY, UNMATCHED)
        if rule == METRICS_PATH:
            return
        method = environ.get("REQUEST_METHOD", "")
        if method not in METHODS:
            method = "other"
        key = (method, rule, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._duration.labels(method, rule, status),
                self._total.labels(method, status),
                self._exceptions.labels(method, status),
            )
        duration, total, exceptions = children
        duration.observe(seconds)
        total.inc()
        if environ.get(EXCEPTION_KEY):
            exceptions.inc()


class MetricsRequest(Request):
    """Flask's request, also keeping the matched URL rule in the WSGI environ, where the
    middleware finds it once Flask's request is gone (cheaper than a before_request hook)."""

    _url_rule: Rule | None = None

    @property
    def url_rule(self) -> Rule | None:
        return self._url_rule

    @url_rule.setter
    def url_rule(self, rule: Rule | None) -> None:
        self._url_rule = rule
        self.environ[URL_RULE_KEY] = UNMATCHED if rule is None else rule.rule


def install(app: Flask, version: str) -> PrometheusMetrics:
    """/metrics, the app_info gauge and the request metrics, on an app being created."""
    # A registry per app keeps applications created in one process (tests) apart; in
    # multiprocess mode the exporter reads every worker's samples from the shared directory.
    registry = CollectorRegistry()
    exporter = PrometheusMetrics(app, path=METRICS_PATH, registry=registry, export_defaults=False)
    exporter.info("app_info", "Service version", version=version)
    app.request_class = MetricsRequest
    app.wsgi_app = RequestMetrics(app.wsgi_app, registry)
    return exporter
