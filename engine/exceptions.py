"""Every exception a user, a task or a pool author can see.

Kept free of imports from the rest of the engine so that ``pools.base`` and plugin pools can
depend on it alone.
"""

from __future__ import annotations

from builtins import TimeoutError   # noqa: A004  Celery's name: ``get(timeout=)`` raises it


class EngineError(Exception):
    """Base class of the engine's own errors."""


class ConfigurationError(EngineError):
    """A setting, an ``-A`` target or a pool name that cannot be used; the message says why."""


class BrokerUnavailable(EngineError, ConnectionError):
    """Redis could not be reached within the client's retry budget
    (``broker_connection_retries``, backing off up to ``broker_connection_backoff_max``),
    or it answered but refused to store a message (the message says what Redis said).
    A built-in ``ConnectionError``: sending fails with it rather than hanging.

    ``sent`` and ``unsent`` are the ``AsyncResult`` handles of the calls Redis confirmed it
    queued and of those it did not, each in call order (for one ``delay()``: nothing sent,
    that one call unsent); ``unsent_indexes`` are the positions of the unsent calls in what
    was given to ``delay_many``. After a refusal they are exact: resend the calls at
    ``unsent_indexes`` and nothing is doubled.
    After a lost connection, the batch that was in flight is counted unsent, although
    Redis may have taken some of it: resending those may run them twice (at least once)."""

    def __init__(self, message: str = "", *, sent: list | None = None,
                 unsent: list | None = None, unsent_indexes: list[int] | None = None) -> None:
        super().__init__(message)
        self.sent: list = list(sent or ())
        self.unsent: list = list(unsent or ())
        self.unsent_indexes: list[int] = list(unsent_indexes or ())


class BrokerOutOfMemory(BrokerUnavailable):
    """Redis refused a write for lack of memory: ``maxmemory`` is reached and its
    ``maxmemory-policy`` (``noeviction``, the right one for a broker) evicts nothing.
    Nothing more is queued until memory is freed (workers draining queues free it) or the
    limit raised; ``sent``/``unsent`` say exactly which calls of a bulk send were queued."""


class CannotListen(EngineError):
    """A server of ours (the dashboard) cannot listen on its address; the message says which
    and why. The command line prints it as one line and exits 1."""


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

    def __init__(self, reason: str = "", requeue: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue


class ExceptionInfo:
    """What the failure hooks get as ``einfo`` (Celery's ``billiard.einfo.ExceptionInfo``,
    in small): the exception, its type, its traceback object and the formatted text."""

    __slots__ = ("exception", "type", "tb", "traceback")

    def __init__(self, exception: BaseException, traceback: str = "") -> None:
        self.exception = exception
        self.type = type(exception)
        self.tb = exception.__traceback__
        if not traceback:
            import traceback as _tb
            traceback = "".join(_tb.format_exception(exception))
        self.traceback = traceback

    @property
    def exc_info(self) -> tuple:
        return (self.type, self.exception, self.tb)

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo {self.type.__name__}: {self.exception}>"


class Ignore(Exception):
    """Raised by a task to end without a result state: nothing is stored, the message is
    acknowledged (for tasks that set their final state themselves)."""
