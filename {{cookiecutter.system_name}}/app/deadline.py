"""Each request's deadline: set when the request arrives, read by whatever waits on its
behalf (the database layer), so that no request holds its thread past REQUEST_TIMEOUT_MS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_current = threading.local()


def arrived(at: float) -> None:
    """Called by the server before the application: when this thread's next request was
    received in full. Its deadline counts from then, so time spent waiting for a free thread
    counts against it too."""
    _current.arrived = at


def expires() -> float | None:
    """The current deadline (time.monotonic()), or None outside a request."""
    return getattr(_current, "expires", None)


def remaining(default: float) -> float:
    """Seconds left before the deadline (default when there is none); never below 0."""
    deadline = expires()
    if deadline is None:
        return default
    return max(deadline - time.monotonic(), 0.0)


@contextmanager
def limit(seconds: float) -> Iterator[None]:
    """Within the block, the deadline is `seconds` from now, or the current one if sooner."""
    outer = expires()
    deadline = time.monotonic() + seconds
    _current.expires = deadline if outer is None else min(outer, deadline)
    try:
        yield
    finally:
        _current.expires = outer


class RequestDeadline:
    """WSGI middleware: every request gets its deadline, `seconds` after it arrives."""

    def __init__(self, wsgi_app, seconds: float) -> None:
        self.wsgi_app = wsgi_app
        self.seconds = seconds

    def __call__(self, environ: dict, start_response):
        arrival = getattr(_current, "arrived", None)
        _current.arrived = None
        _current.expires = (arrival or time.monotonic()) + self.seconds
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            _current.expires = None
