"""Security defaults: API keys, response headers, request ids."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Callable
from functools import wraps

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request

from .problems import Problem

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def api_key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """Compare with every key in constant time, so timing tells nothing about any of them."""
    given_bytes = given.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given_bytes, key.encode())
    return matched


def require_api_key(view: Callable) -> Callable:
    """401 unless X-API-Key holds one of the keys in API_KEYS (no keys: nobody gets in)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        keys = current_app.config["SETTINGS"].api_keys
        if not api_key_matches(request.headers.get("X-API-Key", ""), keys):
            raise Problem(
                401,
                "Unauthorized",
                "send a valid API key in the X-API-Key header",
                headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'},
            )
        return view(*args, **kwargs)

    return guarded


def _assign_request_id() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex


def _add_headers(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def install(app: Flask) -> None:
    app.before_request(_assign_request_id)
    app.after_request(_add_headers)
