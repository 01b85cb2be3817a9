"""Service routes: health, readiness, metrics, OpenAPI, security headers and error shapes."""

from __future__ import annotations

import os
import re

import pytest
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app import metrics
from helpers import SETTINGS
from helpers import STORES

PROBLEM_JSON = "application/problem+json"


def test_health_answers_without_the_database(environ):
    broken = create_app(environ={**environ, "DATABASE_URL": "postgresql://127.0.0.1:1/none"})
    response = broken.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_checks_every_store(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {name: "ok" for name in STORES}


def test_ready_names_the_stores_that_fail(environ):
    broken = create_app(environ={**environ, "DATABASE_URL": "postgresql://127.0.0.1:1/none"})
    client = broken.test_client()
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json()["failed"] == STORES
    endpoint = next(iter(SETTINGS.endpoints.values()))
    response = client.get(endpoint.path if "list" in endpoint.operations else f"{endpoint.path}/1")
    assert response.status_code in (401, 503)
    assert response.mimetype == PROBLEM_JSON


@pytest.mark.parametrize(
    ("flags", "free_blocks", "reason"),
    [
        (os.ST_RDONLY, 10**6, "cannot write: read-only file system"),
        (0, 0, "cannot write: disk full (0 bytes free)"),
    ],
)
def test_ready_names_a_sqlite_store_that_cannot_write(app, monkeypatch, flags, free_blocks, reason):
    """What the data directory's file system reports (os.statvfs) decides; the fault tests
    fill a real disk."""
    if app.extensions["database"].dialect.postgres:
        # PostgreSQL's store asks the server whether it takes writes, not the local disk.
        pytest.skip("SQLite only: the data directory's file system decides")
    real = os.statvfs(app.extensions["database"].path.parent)
    fields = list(real)
    fields[4] = free_blocks  # f_bavail
    fields[8] = flags  # f_flag
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(fields))
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {name: reason for name in STORES}


def _metric(client, name: str, **labels: str) -> float:
    """The sum of a metric's samples that carry these labels, as /metrics reports it now."""
    text = client.get("/metrics").get_data(as_text=True)
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_metrics_count_requests_by_route_and_status(client):
    duration = "flask_http_request_duration_seconds_count"
    health = {"method": "GET", "url_rule": "/health", "status": "200"}
    unmatched = {"method": "GET", "url_rule": "None", "status": "404"}
    other_method = {"method": "other", "status": "405"}

    def counts() -> list[float]:
        return [
            _metric(client, duration, **health),
            _metric(client, duration, **unmatched),
            _metric(client, "flask_http_request_total", **other_method),
        ]

    before = counts()
    for _ in range(3):
        client.get("/health")
    client.get("/no/such/path")
    client.open("/health", method="BREW")  # any method a client invents shares one label
    after = counts()
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 1]
    assert _metric(client, duration, url_rule="/metrics") == 0  # scrapes are not counted


def test_request_durations_reach_the_histogram_exactly(monkeypatch):
    """Requests are tallied in memory and flushed: each duration lands in the bucket
    observe() would choose, and the sum and count are exact."""
    registry = CollectorRegistry()
    middleware = metrics.RequestMetrics(lambda environ, start: [b""], registry)
    clock = iter([0.0, 0.003, 0.0, 0.25, 0.0, 7.0])
    monkeypatch.setattr(metrics, "perf_counter", lambda: next(clock))
    for _ in range(3):
        middleware({"REQUEST_METHOD": "GET", metrics.URL_RULE_KEY: "/x"}, lambda *a: None)
    middleware.flush()
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("url_rule") == "/x" or sample.name == "flask_http_request_total"
    }
    bucket = "flask_http_request_duration_seconds_bucket"
    assert samples[bucket, "0.005"] == 1
    assert samples[bucket, "0.1"] == 1
    assert samples[bucket, "0.25"] == 2  # a bound includes its own value, as in observe()
    assert samples[bucket, "7.5"] == 3
    assert samples["flask_http_request_duration_seconds_count", None] == 3
    assert samples["flask_http_request_duration_seconds_sum", None] == pytest.approx(7.253)
    assert samples["flask_http_request_total", None] == 3


def test_metrics_count_unexpected_errors(environ):
    app = create_app(environ=environ)

    def fail():
        raise RuntimeError("a bug")

    app.add_url_rule("/fail", "fail", fail)
    client = app.test_client()
    labels = {"method": "GET", "status": "500"}
    before = _metric(client, "flask_http_request_exceptions_total", **labels)
    response = client.get("/fail")
    assert response.status_code == 500
    assert response.mimetype == PROBLEM_JSON
    assert _metric(client, "flask_http_request_exceptions_total", **labels) == before + 1


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>", lambda m: "{id}", rule)


def test_openapi_is_valid_and_matches_the_routes(client, app):
    document = client.get("/openapi.json").get_json()
    validate(document)
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    served = {
        (_openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served


def test_responses_carry_security_headers_and_request_id(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    generated = client.get("/health", headers={"X-Request-ID": "bad id <script>"}).headers[
        "X-Request-ID"
    ]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_unknown_route_and_method_are_problems(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404 and response.mimetype == PROBLEM_JSON
    response = client.delete("/health")
    assert response.status_code == 405 and response.mimetype == PROBLEM_JSON
    assert "GET" in response.headers["Allow"]


def test_unexpected_errors_hide_the_traceback(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.mimetype == PROBLEM_JSON
    assert "secret detail" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_cors_only_for_listed_origins(environ):
    app = create_app(environ=environ)
    client = app.test_client()
    for endpoint in SETTINGS.endpoints.values():
        origin = endpoint.cors_origins[0] if endpoint.cors_origins else "https://elsewhere.example"
        response = client.options(
            endpoint.path,
            headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
        )
        allowed = response.headers.get("Access-Control-Allow-Origin")
        if endpoint.cors_origins:
            assert allowed in (origin, "*")
        else:
            assert allowed is None
    assert (
        client.get("/health", headers={"Origin": "https://x.example"}).headers.get(
            "Access-Control-Allow-Origin"
        )
        is None
    )


def test_forwarded_headers_are_trusted_only_with_proxy_count(environ):
    seen = {}
    for count in ("0", "1"):
        app = create_app(environ={**environ, "PROXY_COUNT": count})

        @app.get("/whoami")
        def whoami():
            from flask import request

            return {"remote": request.remote_addr}

        response = app.test_client().get("/whoami", headers={"X-Forwarded-For": "203.0.113.7"})
        seen[count] = response.get_json()["remote"]
    assert seen == {"0": "127.0.0.1", "1": "203.0.113.7"}


def test_debug_is_off(app):
    assert app.debug is False
