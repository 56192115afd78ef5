"""Every exception a user, a task or a pool author can see.

Kept free of imports from the rest of the engine so that ``pools.base`` and plugin pools can
depend on it alone.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's own errors."""


class ConfigurationError(EngineError):
    """A setting, an ``-A`` target or a pool name that cannot be used; the message says why."""


class BrokerUnavailable(EngineError, ConnectionError):
    """Redis could not be reached within the client's retry budget
    (``broker_connection_retries``, backing off up to ``broker_connection_backoff_max``).
    A built-in ``ConnectionError``: sending fails with it rather than hanging."""


class NotSupported(EngineError):
    """A pool was asked for something it cannot do (see ``Pool.capabilities``)."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a running task when its soft time limit passes; the task may catch it."""


class TimeLimitExceeded(Exception):
    """The task was ended by its hard time limit; recorded as its FAILURE."""


class WorkerLostError(Exception):
    """The process running the task died before the task ended."""


class TaskRevokedError(Exception):
    """The task was revoked before or while it ran."""


class ChordError(Exception):
    """A chord's header member failed, so its body never ran; the message names the member's
    task id (and its exception)."""


class TaskError(Exception):
    """A task failed and its exception type cannot be rebuilt here.

    ``exc_type`` is the dotted name of the original type, ``traceback`` the remote traceback.
    """

    def __init__(self, message: str = "", *, exc_type: str = "", traceback: str = ""):
        super().__init__(message)
        self.exc_type = exc_type
        self.traceback = traceback

    def __str__(self) -> str:
        base = super().__str__()
        return f"{self.exc_type}: {base}" if self.exc_type else base


class Retry(Exception):
    """Raised by ``task.retry()``: run the task again later.

    ``when`` is a countdown in seconds or an absolute unix time in ``eta``.
    """

    def __init__(self, message: str = "", *, exc: BaseException | None = None,
                 countdown: float | None = None, eta: float | None = None):
        super().__init__(message or (repr(exc) if exc else "retry"))
        self.exc = exc
        self.countdown = countdown
        self.eta = eta


class MaxRetriesExceededError(EngineError):
    """``task.retry()`` was called past ``max_retries`` with no exception to re-raise."""


class Reject(Exception):
    """Raised by a task to refuse its message: dead-lettered, or requeued when ``requeue``."""

    def __init__(self, reason: str = "", *, requeue: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue
