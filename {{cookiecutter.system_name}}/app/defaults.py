"""Defaults of the service's settings, one definition each.

The generator writes them into config/system_config.yaml; app.settings falls back on them when
the file leaves a value out. Standard library only: the generator loads this file on its own.
"""

STATEMENT_TIMEOUT_MS = 5000  # the database abandons a statement after this long
MAX_CONTENT_LENGTH = 1024 * 1024  # bytes of a request body
POOL_MIN_SIZE = 2  # connections a worker keeps open to PostgreSQL
POOL_MAX_SIZE = 10  # connections a worker may open to PostgreSQL
REQUEST_TIMEOUT_MS = 10_000  # no request holds a thread longer (504 past it)
READY_TIMEOUT_MS = 500  # /ready's own deadline for each store's answer
PAGE_SIZE = 50  # records on a page of a list, unless the client asks for another number
MAX_PAGE_SIZE = 500  # the most records a client may ask for on one page
VERSION = "0.1.0"  # of a system whose blueprint names none
# Each worker, once up, runs `python -m app.migrate` on a thread when the database is behind
# (under the migration lock, so exactly once): a new project and a single instance need no
# extra step.
# Many instances, and migrations that take long, run `python -m app.migrate` as a job before
# the rollout and set MIGRATE_ON_START=false (README: Changing a blueprint).
MIGRATE_ON_START = True
# Seconds an instance keeps serving after SIGTERM while /ready answers 503, so that a load
# balancer's health check (haproxy: 2 failures 1 s apart) or Kubernetes' endpoint update
# takes it out before it stops listening (app/lifecycle.py).
DRAIN_SECONDS = 5
