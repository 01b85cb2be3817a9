"""Gunicorn settings, each read from the environment with a production default.

Run from the project directory: gunicorn -c gunicorn.conf.py main:app
"""

import multiprocessing
import os
import shutil
import sys
import tempfile

from app.settings import ConfigError
from app.settings import load_settings
from app.settings import threads as configured_threads

# Invalid configuration stops start-up here, in the master, with one line.
try:
    load_settings()
    _threads = configured_threads()
except ConfigError as _error:
    sys.exit(f"configuration error: {_error}")

# Where to listen: BIND (host:port) or 0.0.0.0:PORT.
bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8080')}"

# Worker processes: WEB_CONCURRENCY, else the usual (2 x CPUs) + 1.
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)

# Threads per worker (GUNICORN_THREADS, default 4): gthread workers, or sync when 1.
threads = _threads
worker_class = "gthread" if threads > 1 else "sync"

# Seconds a worker may spend on one request before it is killed and replaced.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))

# Seconds in-flight requests get to finish after SIGTERM.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))

# Seconds an idle keep-alive connection stays open (behind a load balancer: above its idle timeout).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

# Recycle each worker after this many requests (with jitter, so not all at once); 0 = never.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "10000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "1000"))

# Load the app in the master before forking (less memory, slower reloads); database pools are
# opened lazily in each worker either way.
preload_app = os.environ.get("GUNICORN_PRELOAD", "false").lower() in ("1", "true", "yes")

# Logs: JSON lines on stdout (access) and stderr (errors).
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logger_class = "app.logs.JsonGunicornLogger"

# Heartbeat files in memory, not on a possibly slow container disk (Gunicorn's own advice;
# the files hold no data, hence nosec).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # nosec B108

# Prometheus multiprocess mode: every worker writes its samples to one directory, emptied
# here (before the app may be preloaded) so counters start at zero.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    _metrics_dir_created = None
else:
    _metrics_dir_created = tempfile.mkdtemp(prefix="prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir_created


def on_exit(server):
    """Remove the metrics directory if this configuration made it."""
    if _metrics_dir_created:
        shutil.rmtree(_metrics_dir_created, ignore_errors=True)


def child_exit(server, worker):
    """Keep a dead worker's counters but drop its live gauges."""
    from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
