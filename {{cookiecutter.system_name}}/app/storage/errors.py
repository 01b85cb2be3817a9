"""Storage failures, in terms the HTTP layer can answer with the right status."""


class StorageError(Exception):
    """Base class of the failures below."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or dropped the connection (answered with 503)."""


class QueryTimeout(StorageError):
    """A statement ran past the configured statement timeout (answered with 504)."""


class Conflict(StorageError):
    """A unique field already holds the value (answered with 409)."""


class InvalidValue(StorageError):
    """The database refused a value the schema let through (answered with 422)."""
