"""Storage failures, in terms the HTTP layer can answer with the right status."""


class StorageError(Exception):
    """Base class of the failures below."""

    # True: the message is written for the client (it names nothing internal) and is served
    # as it is; otherwise the client gets a fixed sentence and the message is only logged.
    served = False


def first_line(exc: BaseException) -> str:
    """The first line of a driver's error (SQLAlchemy's, the driver error it wraps)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DatabaseUnavailable(StorageError):
    """The database cannot be reached, refuses to write, or dropped the connection before
    anything could be applied (answered with 503: retry later)."""


class SchemaBehind(DatabaseUnavailable):
    """The database is at an older schema revision than the code needs (503 until it is
    migrated). Its message names the revisions and what to run."""

    served = True


class QueryTimeout(StorageError):
    """A statement ran past the configured statement timeout and was cancelled, or the
    database did not answer before the request's deadline; nothing was applied (504)."""


class DeadlineExceeded(QueryTimeout):
    """The database did not answer before the request's deadline (raised while waiting on it;
    the connection is discarded)."""


class WriteOutcomeUnknown(StorageError):
    """A write was sent but its commit was never confirmed: it may have been applied (504;
    a client retries it safely with the same Idempotency-Key)."""


class Conflict(StorageError):
    """A unique field already holds the value (answered with 409)."""


class InvalidValue(StorageError):
    """The database refused a value the schema let through (answered with 422)."""


class IdempotencyKeyReused(StorageError):
    """An Idempotency-Key already created a record from a different request body (409)."""


class MigrationRefused(Exception):
    """A revision cannot be applied as it stands: existing rows break a constraint it adds,
    for one (the message says why and what to do)."""
