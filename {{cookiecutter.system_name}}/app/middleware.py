"""WSGI middleware on every request: the request id and the security response headers."""

from __future__ import annotations

import os
import re
import sys

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = "service.request_id"  # where the id is kept in the WSGI environ
_REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SECURITY_HEADER_ITEMS = tuple(SECURITY_HEADERS.items())


class RequestIdAndSecurityHeaders:
    """WSGI middleware: the request id and the security headers on every response.

    Done at the WSGI level, not in Flask hooks, because it runs on every request: the raw
    environ and header list are far cheaper than Flask's request and Headers objects.
    """

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response):
        given = environ.get(_REQUEST_ID_ENVIRON)
        if given and _SAFE_REQUEST_ID.match(given):
            request_id = given
        else:
            request_id = os.urandom(16).hex()  # as random as uuid4().hex, and cheaper
        environ[REQUEST_ID_KEY] = request_id

        def start(status: str, headers: list, exc_info=None):
            present = {name.lower() for name, _ in headers}
            headers.append((REQUEST_ID_HEADER, request_id))
            headers.extend(
                item for item in _SECURITY_HEADER_ITEMS if item[0].lower() not in present
            )
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def request_id() -> str | None:
    """The current request's id (None outside a request).

    Flask is looked up, not imported: the Gunicorn master logs through app.logs, which uses
    this, and there is no request where Flask was never loaded.
    """
    flask = sys.modules.get("flask")
    if flask is None or not flask.has_request_context():
        return None
    return flask.request.environ.get(REQUEST_ID_KEY)
