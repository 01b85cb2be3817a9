"""API keys: endpoints with `auth: api_key` need one of the keys in API_KEYS."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps

from flask import current_app
from flask import request

from .problems import Problem


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
        if not api_key_matches(request.environ.get("HTTP_X_API_KEY", ""), keys):
            raise Problem(
                401,
                "Unauthorized",
                "send a valid API key in the X-API-Key header",
                headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'},
            )
        return view(*args, **kwargs)

    return guarded
