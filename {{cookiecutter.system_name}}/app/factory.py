"""The application factory: create_app() builds the Flask app from settings and the blueprint.

It can be called any number of times in one process: each application owns its database
and its stores (app.extensions["database"], app.extensions["stores"]).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import metrics
from . import problems
from . import service
from . import tracing
from .deadline import RequestDeadline
from .endpoints import ENDPOINT_ROUTES
from .logs import configure_logging
from .middleware import RequestIdAndSecurityHeaders
from .openapi import build_document
from .persistence import open_database
from .settings import Settings
from .settings import load_settings
from .stores import STORES

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, environ: Mapping[str, str] = os.environ) -> Flask:
    """Build the service. No database connection is opened here: each worker opens its own."""
    settings = settings or load_settings(environ)
    traced = tracing.enabled(environ)  # OTEL_EXPORTER_OTLP_ENDPOINT, checked with the settings
    configure_logging(settings.log_level)

    app = Flask(__name__, static_folder=None)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        JSON_SORT_KEYS=False,
    )
    if settings.proxy_count:
        count = settings.proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)

    database = open_database(settings)
    app.extensions["database"] = database
    app.extensions["stores"] = {
        store.name: store.open(database, settings.stores[store.name]) for store in STORES
    }

    app.wsgi_app = RequestIdAndSecurityHeaders(app.wsgi_app)
    app.wsgi_app = RequestDeadline(app.wsgi_app, settings.request_timeout_ms / 1000)
    problems.register_error_handlers(app)
    app.register_blueprint(service.routes)
    for routes in ENDPOINT_ROUTES:
        app.register_blueprint(routes)
    _allow_cross_origin(app, settings)
    metrics.install(app, settings.version)
    if traced:  # off, nothing of OpenTelemetry is imported
        tracing.instrument(app, settings)  # outermost: the request span covers the rest
    app.config["OPENAPI_JSON"] = json.dumps(build_document(settings))

    protected = [e.name for e in settings.endpoints.values() if e.auth == "api_key"]
    if protected and not settings.api_keys:
        log.warning("API_KEYS is empty: endpoints %s refuse every request", ", ".join(protected))
    return app


def _allow_cross_origin(app: Flask, settings: Settings) -> None:
    """CORS headers on the paths of endpoints that list origins (cors_origins)."""
    resources = {
        rf"^{re.escape(endpoint.path)}(/.*)?$": {"origins": list(endpoint.cors_origins)}
        for endpoint in settings.endpoints.values()
        if endpoint.cors_origins
    }
    if resources:
        from flask_cors import CORS  # only services that list origins load it

        CORS(app, resources=resources)
