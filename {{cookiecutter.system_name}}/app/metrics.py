"""Prometheus metrics at /metrics (prometheus-flask-exporter).

Under Gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker starts, so
every worker writes its samples there and /metrics adds them up across workers.
"""

from __future__ import annotations

from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics


def install(app: Flask, version: str) -> PrometheusMetrics:
    # A registry per app keeps applications created in one process (tests) apart; in
    # multiprocess mode the exporter reads every worker's samples from the shared directory.
    metrics = PrometheusMetrics(app, registry=CollectorRegistry(), group_by="url_rule")
    metrics.info("app_info", "Service version", version=version)
    return metrics
