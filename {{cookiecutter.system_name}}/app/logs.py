"""JSON log lines on stdout: the application's records and Gunicorn's access and error logs.

Each line names the process that wrote it (pid). Each access line carries the request id
(X-Request-ID, kept or generated), method, path, status and duration; the application's lines
carry the request id of the request they belong to. With tracing on (app.tracing), a line
written during a span carries its trace_id and span_id, and an access line those of its
request's span; with tracing off, or outside a span, the two keys are absent: the lines are
then exactly as without tracing, and no OpenTelemetry code runs to write them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC
from datetime import datetime

from gunicorn.glogging import Logger as GunicornLogger

from .middleware import request_id

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Set by app.tracing in a process that traces: the current span's (trace id, span id), or
# None outside a span. None where nothing traces, so that each line costs one comparison.
current_trace: Callable[[], tuple[str, str] | None] | None = None
TRACE_KEY = "service.trace"  # in the WSGI environ: the request span's (trace id, span id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra= fields are kept, tracebacks go in "exception"."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        current_id = request_id()
        if current_id:
            line["request_id"] = current_id
        if current_trace is not None:
            ids = current_trace()
            if ids is not None:
                line["trace_id"], line["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    """Send the application's log records to stdout as JSON (once per process)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(handler, "json_stdout", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler.json_stdout = True
        root.addHandler(handler)


class JsonGunicornLogger(GunicornLogger):
    """Gunicorn's logger with JSON output; set as logger_class in gunicorn.conf.py."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_id = None
        for name, value in resp.headers:
            if name.lower() == "x-request-id":
                request_id = value
                break
        line = {
            "time": datetime.now(UTC).isoformat(),
            "level": "INFO",
            "logger": "access",
            "pid": os.getpid(),  # which worker served it
            "request_id": request_id,
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(status),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "remote_addr": environ.get("REMOTE_ADDR"),
        }
        if current_trace is not None:
            ids = environ.get(TRACE_KEY)
            if ids is not None:
                line["trace_id"], line["span_id"] = ids
        _write_line(self.access_log, json.dumps(line))


def _write_line(logger: logging.Logger, line: str) -> None:
    """What logger.info(line) ends in, without building a LogRecord (half the cost of an
    access line): the line goes to each stream handler under the handler's lock, so a log
    file reopened on SIGUSR1 and lines written by other threads stay whole."""
    handlers = logger.handlers
    if not all(isinstance(handler, logging.StreamHandler) for handler in handlers):
        logger.info(line)  # syslog, or a handler a user added: the logging module's way
        return
    for handler in handlers:
        handler.acquire()
        try:
            handler.stream.write(line + "\n")
            handler.flush()
        finally:
            handler.release()
