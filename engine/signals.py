"""The hook registry: Celery's signals, by name and keyword arguments.

A ``Signal`` holds receivers, each with an optional sender filter; whoever owns the event
sends it (the app when publishing, ``engine.worker.runner`` around a task, in the process
that runs it; the supervisor for received, revoked, rejected and the worker's life; the
prefork child for ``worker_process_init``). Callers guard each send with
``if signal.receivers:``, so a signal nobody connected costs one attribute read.

Promises to handlers: they are called with ``sender`` and the signal's keyword arguments
(plus ``signal``), in the order they were connected. A handler that raises is logged and its
exception is its entry in ``send``'s result; nothing else changes (the task's outcome, the
other handlers). Promises asked of handlers: take ``**kwargs`` (arguments may be added), and
return quickly (task signals run on the task's own time).
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from typing import Any, Callable

log = logging.getLogger("engine.signals")

__all__ = [
    "Signal", "SignalGroup", "TASK_HOOKS", "before_task_publish", "after_task_publish", "task_received", "task_prerun",
    "task_postrun", "task_success", "task_failure", "task_retry", "task_revoked",
    "task_rejected", "task_unknown", "worker_init", "worker_process_init", "worker_ready",
    "worker_shutdown", "worker_process_shutdown", "beat_init", "setup_logging",
    "import_modules",
]


class _Receiver:
    """One connection: the handler (or a weak reference to it), its sender filter, its key."""

    __slots__ = ("ref", "weak", "sender", "key")

    def __init__(self, receiver: Callable, sender: Any, key: tuple, weak: bool) -> None:
        self.weak = weak
        if weak:
            self.ref = (weakref.WeakMethod(receiver) if hasattr(receiver, "__self__")
                        else weakref.ref(receiver))
        else:
            self.ref = receiver
        self.sender = sender
        self.key = key

    def target(self) -> Callable | None:
        return self.ref() if self.weak else self.ref


def _sender_key(sender: Any) -> Any:
    """What a filter compares: a name for strings and named things (tasks), else identity."""
    if sender is None:
        return None
    if isinstance(sender, str):
        return sender
    name = getattr(sender, "name", None)
    return name if isinstance(name, str) else id(sender)


def _matches(filter_key: Any, sender: Any) -> bool:
    if filter_key is None:
        return True
    if isinstance(sender, str):
        return filter_key == sender
    if sender is None:
        return False
    if filter_key == id(sender):
        return True
    name = getattr(sender, "name", None)
    return isinstance(name, str) and filter_key == name


class SignalGroup:
    """Signals read together on a hot path: ``connected`` is True while any member has a
    receiver, kept up to date by the members, so the reader checks one attribute."""

    __slots__ = ("members", "connected")

    def __init__(self) -> None:
        self.members: list[Signal] = []
        self.connected = False

    def refresh(self) -> None:
        self.connected = any(signal.receivers for signal in self.members)


class Signal:
    """A named hook. ``connect`` adds a handler (also as ``@sig.connect`` or
    ``@sig.connect(sender=...)``), ``disconnect`` removes it, ``send`` calls them all.

    A sender filter given as a string matches a sender of that name (a task name for task
    signals); given as an object it matches that object, or, when it has a ``name`` (a
    task), anything sent under that name.
    """

    def __init__(self, name: str, *, providing_args: tuple[str, ...] = (),
                 doc: str = "", group: SignalGroup | None = None) -> None:
        self.name = name
        self.group = group
        if group is not None:
            group.members.append(self)
        self.providing_args = providing_args
        self.__doc__ = doc or f"The {name} signal."
        #: the connections; empty (falsy) when nobody listens. Replaced, never mutated, so
        #: ``send`` walks a snapshot without a lock while another thread connects.
        self.receivers: tuple[_Receiver, ...] = ()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Signal {self.name}: {len(self.receivers)} receiver(s)>"

    def connect(self, receiver: Callable | None = None, *, sender: Any = None,
                weak: bool = False, dispatch_uid: Any = None) -> Any:
        """Add ``receiver``; connecting the same one (or ``dispatch_uid``) again for the
        same sender is a no-op. Returns the receiver, so it works as a decorator; called
        without one, returns the decorator. Receivers are held strongly unless ``weak``."""
        if receiver is None:
            def decorate(fn: Callable) -> Callable:
                return self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
            return decorate
        if not callable(receiver):
            raise TypeError(f"{self.name}.connect: {receiver!r} is not callable")
        filter_key = _sender_key(sender)
        key = (dispatch_uid if dispatch_uid is not None else _receiver_id(receiver), filter_key)
        with self._lock:
            if not any(r.key == key for r in self.receivers):
                self.receivers = self.receivers + (
                    _Receiver(receiver, filter_key, key, weak),)
            if self.group is not None:
                self.group.refresh()
        return receiver

    def disconnect(self, receiver: Callable | None = None, *, sender: Any = None,
                   dispatch_uid: Any = None) -> bool:
        """Remove a connection made with the same receiver (or uid) and sender; True if
        there was one."""
        if receiver is None and dispatch_uid is None:
            raise TypeError(f"{self.name}.disconnect needs a receiver or a dispatch_uid")
        key = (dispatch_uid if dispatch_uid is not None else _receiver_id(receiver),
               _sender_key(sender))
        with self._lock:
            kept = tuple(r for r in self.receivers if r.key != key)
            removed = len(kept) != len(self.receivers)
            self.receivers = kept
            if self.group is not None:
                self.group.refresh()
        return removed

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Callable, Any]]:
        """Call every matching receiver; [(receiver, its return value or the exception it
        raised)]. Exceptions are logged, never raised."""
        responses: list[tuple[Callable, Any]] = []
        dead = False
        for entry in self.receivers:
            if entry.sender is not None and not _matches(entry.sender, sender):
                continue
            receiver = entry.target()
            if receiver is None:
                dead = True
                continue
            try:
                result = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                log.exception("signal %s: handler %s raised (ignored)", self.name,
                              getattr(receiver, "__qualname__", receiver))
                result = exc
            responses.append((receiver, result))
        if dead:
            with self._lock:
                self.receivers = tuple(r for r in self.receivers if r.target() is not None)
                if self.group is not None:
                    self.group.refresh()
        return responses

    send_robust = send   # Celery/Django spell the same behaviour so as well

    def has_listeners(self, sender: Any = None) -> bool:
        return any(r.sender is None or _matches(r.sender, sender) for r in self.receivers)


def _receiver_id(receiver: Callable) -> Any:
    # a bound method is a fresh object each time it is looked up: key it by (self, function)
    func = getattr(receiver, "__func__", None)
    if func is not None:
        return (id(getattr(receiver, "__self__", None)), id(func))
    return id(receiver)


# -- the signals ----------------------------------------------------------------------------
# publishing (the process that sends; sender: the task name)
before_task_publish = Signal("before_task_publish", providing_args=(
    "body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"),
    doc="Before a task message is sent; ``headers`` may be changed (they travel with it).")
after_task_publish = Signal("after_task_publish", providing_args=(
    "headers", "body", "exchange", "routing_key"), doc="After a task message was sent.")
# in the supervisor, which takes messages off the stream (sender: the supervisor)
task_received = Signal("task_received", providing_args=("request",),
                       doc="A message was taken off its queue and will run.")
task_rejected = Signal("task_rejected", providing_args=("message", "exc"),
                       doc="A message that is not a task message was dead-lettered.")
task_unknown = Signal("task_unknown", providing_args=("name", "id", "message", "exc"),
                      doc="A message named a task this worker does not know.")
task_revoked = Signal("task_revoked", providing_args=(
    "request", "terminated", "signum", "expired"),
    doc="A task was revoked, terminated or expired (sender: the task).")
# in the process that runs the task (sender: the task). Any receiver of one of these sends
# every task down the runner's hooked path (``TASK_HOOKS.connected``).
TASK_HOOKS = SignalGroup()
task_prerun = Signal("task_prerun", providing_args=("task_id", "task", "args", "kwargs"),
                     group=TASK_HOOKS)
task_postrun = Signal("task_postrun", providing_args=(
    "task_id", "task", "args", "kwargs", "retval", "state"), group=TASK_HOOKS)
task_success = Signal("task_success", providing_args=("result", "runtime"), group=TASK_HOOKS)
task_failure = Signal("task_failure", providing_args=(
    "task_id", "exception", "args", "kwargs", "traceback", "einfo"), group=TASK_HOOKS)
task_retry = Signal("task_retry", providing_args=("request", "reason", "einfo"),
                    group=TASK_HOOKS)
# the worker's life
worker_init = Signal("worker_init", doc="Before the worker starts (sender: the supervisor).")
worker_ready = Signal("worker_ready", doc="The worker takes work (sender: the supervisor).")
worker_shutdown = Signal("worker_shutdown", doc="The worker stopped (sender: the supervisor).")
worker_process_init = Signal("worker_process_init", doc=(
    "In every process that runs tasks, once, after any fork: prefork children, lane "
    "processes, and the worker itself when its pool runs tasks in-process."))
worker_process_shutdown = Signal("worker_process_shutdown", providing_args=("pid", "exitcode"),
                                 doc="In those processes, just before they exit.")
beat_init = Signal("beat_init", doc="The beat scheduler starts (sender: the Beat).")
setup_logging = Signal("setup_logging", providing_args=(
    "loglevel", "logfile", "format", "colorize"),
    doc="Connected: the command line leaves logging to its handlers.")
import_modules = Signal("import_modules", doc="The app imports its task modules (sender: app).")


#: the message fields in before_task_publish's ``headers`` (the rest are custom headers)
_MESSAGE_HEADERS = frozenset({"id", "task", "retries", "eta", "expires"})


def publish(app: Any, name: str, task: Any, args: Any, kwargs: dict, queue: str,
            options: dict, *, ignore_result: bool) -> Any:
    """``Engine``'s publish path when before/after_task_publish have receivers: ``headers``
    hold the message's fields (Celery's ``headers['id']``, ``['task']``) and its custom
    headers; keys a receiver adds travel as custom headers (``self.request.headers``)."""
    from engine.results import AsyncResult
    task_id = options.get("task_id") or str(uuid.uuid4())
    custom = dict(options.get("headers") or {})
    headers = {**custom, "id": task_id, "task": name, "retries": 0,
               "eta": options.get("eta"), "expires": options.get("expires")}
    body = (list(args), kwargs, {})
    before_task_publish.send(
        sender=name, body=body, exchange="", routing_key=queue, headers=headers,
        properties={}, declare=[], retry_policy=None)
    custom = {k: v for k, v in headers.items() if k not in _MESSAGE_HEADERS}
    options = {**options, "task_id": task_id, "headers": custom or None}
    task_id, raw, when = app._body(name, args, kwargs, task=task, **options)
    app._enqueue(name, task_id, queue, raw, when, options.get("priority", 0))
    if after_task_publish.receivers:
        after_task_publish.send(sender=name, headers=headers, body=body, exchange="",
                                routing_key=queue)
    return AsyncResult(task_id, app, task_name=name, ignore_result=ignore_result)
