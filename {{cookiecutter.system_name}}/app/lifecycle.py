"""Draining on SIGTERM: an instance stops being ready before it stops serving.

A load balancer (or Kubernetes) routes to an instance while its /ready answers 200. On
SIGTERM, Gunicorn on its own closes its listening socket at once: the connections waiting in
its queue are reset, and the balancer learns of the stop only from failed requests. Here the
master's first SIGTERM marks the instance as draining for DRAIN_SECONDS instead: /ready
answers 503 in every worker while requests are still served (each response closing its
connection, so that keep-alive clients reconnect elsewhere), the balancer's health check
takes the instance out, and then Gunicorn's graceful stop runs (GUNICORN_GRACEFUL_TIMEOUT for
the requests in flight). A second SIGTERM, or SIGINT or SIGQUIT, stops without waiting.

The mark is one byte of shared memory, made when this module is first imported, in the master
(gunicorn.conf.py imports it): every worker forked afterwards sees the master's write, with no
system call per request. Standard library only: the worker class reads it too.
"""

from __future__ import annotations

import mmap
import os
import signal
import threading
from typing import Any

_DRAINING = mmap.mmap(-1, 1)  # anonymous and shared: inherited by forked workers


def draining() -> bool:
    """Whether this instance is draining: its master received SIGTERM."""
    return _DRAINING[0] == 1


def drain_on_term(arbiter: Any, seconds: int) -> None:
    """Make the Gunicorn master's first SIGTERM drain for `seconds`, then stop as before (a
    second SIGTERM, which the master sends itself when the time is up)."""
    stop = arbiter.handle_term  # raises StopIteration: Gunicorn's graceful stop

    def handle_term() -> None:
        if draining() or seconds <= 0:
            stop()
        _DRAINING[0] = 1
        arbiter.log.info(
            "draining for %d s (DRAIN_SECONDS): /ready answers 503, requests are still served",
            seconds,
        )
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    arbiter.handle_term = handle_term
