"""Gunicorn settings, each read from the environment with a production default.

Run from the project directory: gunicorn -c gunicorn.conf.py main:app
Every value is checked by app.settings; an invalid one stops start-up with one line.
"""

import atexit
import os
import shutil
import sys
import tempfile

# Prometheus multiprocess mode. prometheus_client decides at import whether samples live in
# process memory or in files, so the directory must be in the environment before anything
# imports it (the app, when preload_app is on, or any worker). Each server makes its own,
# under TMPDIR, so two services on one host never mix their samples, and the process that
# made it removes it when it exits (also after --check-config; workers leave it alone).
# Gunicorn reads this file again on SIGHUP: the same master keeps its directory and counters.
_METRICS_DIR_OWNER = "SERVICE_METRICS_DIR_OWNER"


def _remove_metrics_dir() -> None:
    if os.environ.get(_METRICS_DIR_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


if os.environ.get(_METRICS_DIR_OWNER) != str(os.getpid()):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="service-metrics-")
    os.environ[_METRICS_DIR_OWNER] = str(os.getpid())
    atexit.register(_remove_metrics_dir)

from app import lifecycle  # noqa: E402  (imported in the master: its mark is shared)
from app.settings import ConfigError  # noqa: E402  (after the metrics directory is set)
from app.settings import check_request_timeout  # noqa: E402
from app.settings import load_server_settings  # noqa: E402
from app.settings import load_settings  # noqa: E402

# Invalid configuration stops start-up here, in the master, with one line.
try:
    _service = load_settings()
    _server = load_server_settings()
    check_request_timeout(_service, _server)
except ConfigError as _error:
    sys.exit(f"configuration error: {_error}")

# Where to listen: BIND (host:port or unix:path), else 0.0.0.0:PORT (default 8080).
bind = _server.bind

# Worker processes: WEB_CONCURRENCY, else the usual (2 x CPUs) + 1.
workers = _server.workers

# Request threads per worker (GUNICORN_THREADS, default 4), beside two threads for probes.
# With 1 (for code that is not thread-safe) each worker answers one request at a time in its
# loop thread and closes the connection after it, as Gunicorn's sync worker does.
threads = _server.threads

# Gunicorn's threaded worker, whose threads never wait for a client to send (app/worker.py): a
# client gets GUNICORN_REQUEST_READ_TIMEOUT seconds (default 10) to send its request line,
# headers and body, then 408. Slow clients never hold a thread: no buffering proxy is needed.
worker_class = "app.worker.RequestBufferingWorker"

# Seconds a worker may go silent before it is killed and replaced (GUNICORN_TIMEOUT, default
# 30). Requests end sooner: REQUEST_TIMEOUT_MS (default 10000) bounds each one, and must be
# below this.
timeout = _server.timeout

# Seconds in-flight requests get to finish after SIGTERM (GUNICORN_GRACEFUL_TIMEOUT, default 30).
graceful_timeout = _server.graceful_timeout

# Seconds an idle keep-alive connection stays open (GUNICORN_KEEPALIVE, default 5; behind a
# load balancer: above its idle timeout).
keepalive = _server.keepalive

# Recycle each worker after GUNICORN_MAX_REQUESTS requests, plus up to
# GUNICORN_MAX_REQUESTS_JITTER so not all at once. Default 0: never, as in Gunicorn itself.
# The soak test finds no growth to cure, and under load recycling every 10,000 requests
# restarts each worker every few seconds (the README has the figures).
max_requests = _server.max_requests
max_requests_jitter = _server.max_requests_jitter

# Load the app in the master before forking (GUNICORN_PRELOAD, default false: less memory,
# slower reloads); database pools are opened lazily in each worker either way.
preload_app = _server.preload_app

# Logs: JSON lines, access on stdout (GUNICORN_ACCESS_LOG: "-" or a path, empty for none),
# errors on stderr, at LOG_LEVEL.
accesslog = _server.access_log
errorlog = "-"
loglevel = _service.log_level.lower()
logger_class = "app.logs.JsonGunicornLogger"

# Gunicorn's control socket (gunicornc) only at GUNICORN_CONTROL_SOCKET: its default is one
# path per user, which every server on the host would share and remove.
control_socket_disable = _server.control_socket is None
if _server.control_socket:
    control_socket = _server.control_socket

# Heartbeat files in memory, not on a possibly slow container disk (Gunicorn's own advice;
# the files hold no data, hence nosec).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # nosec B108


# On SIGTERM, DRAIN_SECONDS (default 5) of answering /ready with 503 while still serving,
# then the graceful stop: a load balancer takes the instance out before it stops listening.
def when_ready(server):
    lifecycle.drain_on_term(server, _server.drain_seconds)


def child_exit(server, worker):
    """Keep a dead worker's counters but drop its live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Start applying pending schema migrations as soon as the worker is up (with
    MIGRATE_ON_START; on a thread, so requests and probes never wait for it)."""
    database = getattr(worker.wsgi, "extensions", {}).get("database")
    if database is not None:
        database.schema.start()
