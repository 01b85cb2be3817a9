"""The probe paths: served by app.service, and given threads of their own by app.worker when
the request threads are stalled. Kept apart so the worker reads them without loading Flask."""

HEALTH_PATH = "/health"
READY_PATH = "/ready"
PROBE_PATHS = (HEALTH_PATH, READY_PATH)
