"""Gunicorn settings of the hand-written baselines: the generated service's, value for value.

Fairness: every setting below reads the same environment variable, with the same default, as
the generated project's gunicorn.conf.py (workers, threads, worker class, timeouts, keep-alive,
worker recycling, preload, control socket, access and error logs on stdout/stderr, heartbeat
directory).
benchmarks/run.py loads both files through Gunicorn itself before measuring and stops if any
setting differs, except the generated service's own features: its JSON logger class and its
Prometheus multiprocess hook. Both servers are started with the same command-line flags.
"""

import multiprocessing
import os

bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "0"))
preload_app = os.environ.get("GUNICORN_PRELOAD", "false").lower() in ("1", "true", "yes")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
