"""Prometheus metrics: request counts and durations, served at /metrics.

prometheus-flask-exporter serves /metrics (adding up every worker's samples in multiprocess
mode) and the app_info gauge. The request metrics carry its names and labels, but are recorded
by a WSGI middleware: the exporter's Flask hooks cost about 50 us on every request, most of it
spent in Flask's request proxies and in looking up label children.

Under Gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker starts, so
every worker writes its samples there and /metrics adds them up across workers.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from bisect import bisect_left
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
# How often each process moves its requests into the metrics: a request shows in /metrics
# within this (at once when this process answers the scrape).
FLUSH_INTERVAL_S = 0.25


class RequestMetrics:
    """WSGI middleware: each request's duration, by method, URL rule and status.

    flask_http_request_duration_seconds (histogram; method, url_rule, status),
    flask_http_request_total (method, status) and flask_http_request_exceptions_total
    (method, status; requests answered by the unexpected-error handler or raising out of
    the app). Requests for /metrics itself are not counted.

    A request is added to a tally in memory (under a microsecond); a thread of each process
    moves the tallies into the Prometheus metrics every FLUSH_INTERVAL_S, as does a scrape
    of this process and its exit. Writing every request into the multiprocess files
    directly costs 5 us (three locked writes to memory-mapped files).
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
        self._bounds = Histogram.DEFAULT_BUCKETS
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str, str], Tally] = {}
        self._flusher_pid = 0

    def __call__(self, environ: dict, start_response):
        if environ.get("PATH_INFO") == METRICS_PATH:
            self.flush()  # this process's requests so far; other workers' within a flush
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
        if self._flusher_pid != os.getpid():
            self._start_flusher()
        method = environ.get("REQUEST_METHOD", "")
        if method not in METHODS:
            method = "other"
        key = (method, rule, status)
        bucket = bisect_left(self._bounds, seconds)  # the first bound >= seconds, as observe()
        with self._lock:
            tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = Tally(len(self._bounds))
            tally.requests += 1
            tally.seconds += seconds
            tally.buckets[bucket] += 1
            if environ.get(EXCEPTION_KEY):
                tally.exceptions += 1

    def flush(self) -> None:
        """Move the tallies into the metrics (the multiprocess files under Gunicorn)."""
        with self._lock:
            tallies, self._tallies = self._tallies, {}
        for (method, rule, status), tally in tallies.items():
            duration = self._duration.labels(method, rule, status)
            # What observe() does per request, once per tally: its sum and its buckets.
            duration._sum.inc(tally.seconds)
            for bucket, requests in enumerate(tally.buckets):
                if requests:
                    duration._buckets[bucket].inc(requests)
            self._total.labels(method, status).inc(tally.requests)
            exceptions = self._exceptions.labels(method, status)
            if tally.exceptions:
                exceptions.inc(tally.exceptions)

    def _start_flusher(self) -> None:
        """A flushing thread in this process (a forked worker does not inherit its
        parent's), and a last flush when the process exits."""
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
            self._tallies = {}  # a forked child counts only its own requests
        threading.Thread(target=self._flush_every_interval, name="metrics", daemon=True).start()
        atexit.register(self.flush)

    def _flush_every_interval(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()


class Tally:
    """The requests of one (method, URL rule, status) since the last flush."""

    __slots__ = ("requests", "seconds", "buckets", "exceptions")

    def __init__(self, buckets: int) -> None:
        self.requests = 0
        self.seconds = 0.0
        self.buckets = [0] * buckets
        self.exceptions = 0


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
