"""Errors as RFC 9457 problem details (application/problem+json), never a traceback."""

from __future__ import annotations

import json
import logging

from flask import Flask
from flask import Response
from flask import request
from werkzeug.exceptions import HTTPException

from .metrics import EXCEPTION_KEY
from .middleware import request_id
from .persistence import Conflict
from .persistence import DatabaseUnavailable
from .persistence import DeadlineExceeded
from .persistence import IdempotencyKeyReused
from .persistence import InvalidValue
from .persistence import QueryTimeout
from .persistence import WriteOutcomeUnknown

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
# What any request that reaches the database may answer (the handlers of storage errors
# below): 503 when it is unavailable or cannot write, 504 when it does not answer in time.
DATABASE_PROBLEMS = (503, 504)


class Problem(Exception):
    """Raise to answer with a problem document; errors list the bad fields by JSON pointer."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def problem_response(problem: Problem) -> Response:
    body: dict = {"type": "about:blank", "title": problem.title, "status": problem.status}
    if problem.detail:
        body["detail"] = problem.detail
    if problem.errors:
        body["errors"] = problem.errors
    current_id = request_id()
    if current_id:
        body["request_id"] = current_id
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_JSON)
    response.headers.update(problem.headers)
    return response


def _from_http(error: HTTPException) -> Response:
    headers = {}
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    problem = Problem(error.code or 500, error.name, error.description or "", headers=headers)
    return problem_response(problem)


def _unavailable(error: DatabaseUnavailable) -> Response:
    log.warning("database unavailable: %s", error)
    detail = str(error) if error.served else "the database is unavailable; retry later"
    problem = Problem(503, "Service Unavailable", detail)
    problem.headers["Retry-After"] = "1"
    return problem_response(problem)


def _timeout(error: QueryTimeout) -> Response:
    log.warning("statement timeout: %s", error)
    return problem_response(Problem(504, "Gateway Timeout", "the database took too long to answer"))


def _deadline(error: DeadlineExceeded) -> Response:
    log.warning("request deadline passed: %s", error)
    detail = "the database did not answer within the request's deadline; nothing was changed"
    return problem_response(Problem(504, "Gateway Timeout", detail))


def _outcome_unknown(error: WriteOutcomeUnknown) -> Response:
    log.warning("write of unknown outcome: %s", error)
    detail = (
        "the database did not confirm the write: it may have been applied. Retry with the same "
        "Idempotency-Key header to apply it at most once"
    )
    return problem_response(Problem(504, "Gateway Timeout", detail))


def _key_reused(error: IdempotencyKeyReused) -> Response:
    # 409, as for a unique value taken: the key is taken, by another request body.
    return problem_response(Problem(409, "Conflict", f"Idempotency-Key: {error}"))


def _conflict(error: Conflict) -> Response:
    detail = "a record with the same value of a unique field exists"
    return problem_response(Problem(409, "Conflict", detail))


def _invalid(error: InvalidValue) -> Response:
    return problem_response(Problem(422, "Unprocessable Content", "the database refused a value"))


def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    request.environ[EXCEPTION_KEY] = True  # counted in flask_http_request_exceptions_total
    return problem_response(Problem(500, "Internal Server Error", "an unexpected error occurred"))


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(Problem, problem_response)
    app.register_error_handler(HTTPException, _from_http)
    app.register_error_handler(DatabaseUnavailable, _unavailable)
    app.register_error_handler(QueryTimeout, _timeout)
    app.register_error_handler(DeadlineExceeded, _deadline)
    app.register_error_handler(WriteOutcomeUnknown, _outcome_unknown)
    app.register_error_handler(IdempotencyKeyReused, _key_reused)
    app.register_error_handler(Conflict, _conflict)
    app.register_error_handler(InvalidValue, _invalid)
    app.register_error_handler(Exception, _unexpected)
