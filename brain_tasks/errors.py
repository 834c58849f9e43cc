"""The two kinds of failure the tasks treat differently.

A `DataError` is a domain error: the input is bad, retrying cannot help, so it is recorded (a
data-quality or task-failure row) and the fan-out goes on.  A `TransientError` is a fault of the world
(exchange, database, broker) that a retry with backoff may clear.
"""


class BrainError(Exception):
    """Base class of brain_tasks' own errors."""


class DataError(BrainError, ValueError):
    """Bad or insufficient input data; recorded, never retried."""


class TransientError(BrainError):
    """A fault that may clear on retry (network, exchange rate limit, database restart)."""


class IntegrityError(BrainError):
    """Stored bytes do not match their recorded sha256 (a corrupted or tampered artifact)."""


class NoDataError(DataError):
    """No stored bar to decide on for a symbol (or too little history before it)."""


class StaleDataError(DataError):
    """The symbol's latest stored bar is older than the configured maximum data age."""

    def __init__(self, message: str, *, symbol: str, last_bar: object, age_seconds: float) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.last_bar = last_bar
        self.age_seconds = age_seconds


class NoModelError(BrainError, LookupError):
    """No champion and no per-regime choice to serve for a symbol."""


class ServiceError(BrainError):
    """The Brain's database or broker cannot be used as configured (named, password redacted)."""


class SchemaMissingError(ServiceError):
    """The database has no Brain schema yet: `brain-tasks db upgrade` creates it."""


class DatabaseUnavailableError(ServiceError):
    """The database cannot be reached or its URL cannot be used."""


class BrokerUnavailableError(ServiceError):
    """The Celery broker cannot be reached: nothing was enqueued."""
