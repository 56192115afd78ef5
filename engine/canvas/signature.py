"""Signatures, the producer's canvas: a task call described (``Signature``) and its
compositions (``chain``, ``group``, ``chord``, ``chunks``, ``xmap``, ``xstarmap``).

A signature *is* its wire map (a dict subclass: ``{task, args, kwargs, options,
immutable}``), so it can be passed as a task argument and rebuilt with ``signature(d)``.
Sending freezes a copy (every task, group and chord gets its id, so the handle is known
before anything runs), plans it into messages (``engine.canvas.plan``) and sends them in
pipelined batches. What happens after the first messages is the workers' business
(``engine.canvas.worker``).
"""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Iterable

from engine import tracing
from engine.broker import EnqueueError
from engine.canvas.plan import (CHAIN, CHORD, CHUNKS, GROUP, MAP, OPTIONS, STARMAP,
                                CanvasError, Planner)

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.canvas.result import GroupResult
    from engine.results import AsyncResult

_COMPOSED = (CHAIN, GROUP, CHORD)


def _check_options(options: dict) -> dict:
    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(f"unknown signature option(s): {', '.join(sorted(unknown))}")
    for key in ("link", "link_error"):
        if key in options:
            given = options[key]
            if given is None:
                options.pop(key)
                continue
            items = [given] if isinstance(given, dict) else list(given)
            options[key] = [maybe_signature(item) for item in items]
    return options


class Signature(dict):
    """One task call, described: ``add.s(2, 2)``, ``add.si(2, 2)`` (immutable: takes no
    parent's result), ``add.signature((2, 2), {}, countdown=1)``.

    Partial application follows Celery: arguments given when it is sent, or a parent's
    result, come first; keyword arguments are merged; an immutable signature keeps its own
    arguments whatever it is given."""

    __slots__ = ("_app",)

    def __init__(self, task: Any, args: Iterable[Any] = (), kwargs: dict | None = None,
                 options: dict | None = None, *, immutable: bool = False,
                 app: "Engine | None" = None) -> None:
        if not isinstance(task, str):
            app = app or getattr(task, "_app", None)
            task = task.name
        if isinstance(args, (str, bytes, dict)):
            raise TypeError(f"{task}: args must be a list or tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"{task}: kwargs must be a dict, got {type(kwargs).__name__}")
        super().__init__(task=task, args=tuple(args), kwargs=dict(kwargs or {}),
                         options=_check_options(dict(options or {})),
                         immutable=bool(immutable))
        self._app = app

    @classmethod
    def _make(cls, fields: dict, app: "Engine | None") -> "Signature":
        sig = dict.__new__(cls)
        dict.__init__(sig, fields)
        sig._app = app
        return sig

    # -- fields ------------------------------------------------------------------------
    task = property(lambda self: self["task"], doc="the task name")
    name = task
    args = property(lambda self: self["args"])
    kwargs = property(lambda self: self["kwargs"])
    options = property(lambda self: self["options"])
    immutable = property(lambda self: self["immutable"])

    @property
    def app(self) -> "Engine":
        from engine.registry import app_or_current
        return app_or_current(self._app)

    @property
    def type(self):
        """The registered Task (KeyError-like NotRegistered when unknown here)."""
        return self.app.tasks[self["task"]]

    def __repr__(self) -> str:
        parts = [repr(a) for a in self["args"]]
        parts += [f"{k}={v!r}" for k, v in self["kwargs"].items()]
        return f"{'%' if self['immutable'] else ''}{self['task']}({', '.join(parts)})"

    # -- building ----------------------------------------------------------------------
    def clone(self, args: Iterable[Any] | None = None, kwargs: dict | None = None,
              **options: Any) -> "Signature":
        """A copy; ``args`` replace the arguments, ``kwargs`` and ``options`` are merged."""
        fields = _copy(self)
        if args is not None:
            fields["args"] = tuple(args)
        if kwargs:
            fields["kwargs"] = {**fields["kwargs"], **kwargs}
        if options:
            fields["options"].update(_check_options(options))
        return type(self)._make(fields, self._app)

    def set(self, *, immutable: bool | None = None, **options: Any) -> "Signature":
        """Set options in place (``queue``, ``countdown``, ...); returns the signature."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self["options"].update(_check_options(options))
        return self

    def link(self, callback: dict) -> dict:
        """Run ``callback`` with this task's result when it succeeds; returns it."""
        self["options"].setdefault("link", []).append(maybe_signature(callback))
        return callback

    def link_error(self, errback: dict) -> dict:
        """Run ``errback`` with this task's id when it fails; returns it."""
        self["options"].setdefault("link_error", []).append(maybe_signature(errback))
        return errback

    def on_error(self, errback: dict) -> "Signature":
        self.link_error(errback)
        return self

    def __or__(self, other: Any) -> "Signature":
        if not isinstance(other, dict):
            return NotImplemented
        other = maybe_signature(other, app=self._app)
        if isinstance(other, chain) and not other["options"]:
            return chain(self, *other.tasks, app=self._app)
        return chain(self, other, app=self._app)

    def __ror__(self, other: Any) -> "Signature":
        if not isinstance(other, dict):
            return NotImplemented
        return maybe_signature(other, app=self._app) | self

    def __ior__(self, other: Any) -> "Signature":   # not dict's in-place merge
        return self | other

    # -- calling -----------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, with partial arguments applied (no message is sent)."""
        call_args, call_kwargs = self._merged(args, kwargs)
        return self.type(*call_args, **call_kwargs)

    def _merged(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self["immutable"]:
            return tuple(self["args"]), dict(self["kwargs"])
        return tuple(args) + tuple(self["args"]), {**self["kwargs"], **kwargs}

    def delay(self, *args: Any, **kwargs: Any):
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict | None = None,
                    **options: Any) -> "AsyncResult | GroupResult":
        """Send it: ``args`` come before the signature's own; options as ``set`` takes
        them. Returns the handle: an AsyncResult (of the last step for a chain, of the body
        for a chord) or a GroupResult."""
        sig = self.clone()
        if options:
            sig["options"].update(_check_options(dict(options)))
        if args or kwargs:
            _partial(sig, tuple(args), dict(kwargs or {}))
        return send(sig, self.app)

    def freeze(self) -> "AsyncResult | GroupResult":
        """Give every task, group and chord of this signature its id now (in place) and
        return the handle that sending it will return."""
        return _freeze(self, self.app, None, _ids())


class chain(Signature):
    """Steps run one after the other, each given the previous one's result first:
    ``chain(add.s(2, 2), mul.s(4))`` or ``add.s(2, 2) | mul.s(4)``. A group followed by
    a step is a chord."""

    def __init__(self, *tasks: Any, app: "Engine | None" = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        steps = [maybe_signature(t, app=app) for t in tasks]
        super().__init__(CHAIN, (), {"tasks": steps}, options, app=app or _app_of(steps))

    tasks = property(lambda self: self["kwargs"]["tasks"])

    def __or__(self, other: Any) -> "Signature":
        if not isinstance(other, dict):
            return NotImplemented
        other = maybe_signature(other, app=self._app)
        mine = list(self.tasks) if not self["options"] else [self]
        more = list(other.tasks) if isinstance(other, chain) and not other["options"] \
            else [other]
        return chain(*mine, *more, app=self._app)

    def __call__(self, *args: Any, **kwargs: Any):
        return self.apply_async(args, kwargs)   # as Celery's: calling a chain sends it

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)


class group(Signature):
    """Members run in parallel; the handle is a GroupResult, results in member order."""

    def __init__(self, *tasks: Any, app: "Engine | None" = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        members = [maybe_signature(t, app=app) for t in tasks]
        super().__init__(GROUP, (), {"tasks": members}, options, app=app or _app_of(members))

    tasks = property(lambda self: self["kwargs"]["tasks"])

    def __or__(self, other: Any) -> "Signature":
        if not isinstance(other, dict):
            return NotImplemented
        other = maybe_signature(other, app=self._app)
        if isinstance(other, group):
            return chain(self, other, app=self._app)
        return chord(self, other, app=self._app)

    def __call__(self, *args: Any, **kwargs: Any):
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return f"group({', '.join(repr(t) for t in self.tasks)})"


class chord(Signature):
    """A group (the header) and a body that runs once every member has succeeded, given
    the list of their results (in member order). ``chord(header, body)`` or
    ``chord(header)(body)``."""

    def __init__(self, header: Any, body: Any = None, *, app: "Engine | None" = None,
                 **options: Any) -> None:
        if isinstance(header, group):
            app = app or header._app
            gid = header["options"].get("group_id")
            if gid and "group_id" not in options:
                options["group_id"] = gid
            header = header.tasks
        members = [maybe_signature(t, app=app) for t in header]
        body = maybe_signature(body, app=app) if body is not None else None
        super().__init__(CHORD, (), {"header": members, "body": body}, options,
                         app=app or _app_of([*members, body]))

    header = property(lambda self: self["kwargs"]["header"])
    body = property(lambda self: self["kwargs"]["body"])

    def __call__(self, body: Any = None, **options: Any):
        """``chord(header)(body)`` sends the chord with that body."""
        sig = self.clone()
        if body is not None:
            sig["kwargs"]["body"] = maybe_signature(body, app=self._app)
        return sig.apply_async(**options)

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict | None = None,
                    **options: Any):
        if self["kwargs"]["body"] is None:
            raise CanvasError("a chord needs a body: chord(header, body) or chord(header)(body)")
        return super().apply_async(args, kwargs, **options)

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(t) for t in self.header)}], {self.body!r})"


class chunks(Signature):
    """``task.chunks(items, n)``: the items in parts of ``n``, each part one task that
    calls ``task`` on each of its items in turn; a group of those (``.group()``)."""

    def __init__(self, task: dict, it: Iterable[Any], n: int, *,
                 app: "Engine | None" = None, **options: Any) -> None:
        if int(n) < 1:
            raise ValueError(f"chunks: n must be at least 1, got {n}")
        task = maybe_signature(task, app=app)
        super().__init__(CHUNKS, (), {"task": task, "it": [list(item) for item in it],
                                      "n": int(n)}, options, app=app or _app_of([task]))

    def group(self) -> group:
        kw = self["kwargs"]
        items, n = kw["it"], kw["n"]
        parts = [xstarmap(kw["task"], items[i:i + n], app=self._app)
                 for i in range(0, len(items), n)]
        return group(parts, app=self._app, **self["options"])

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict | None = None,
                    **options: Any):
        return self.group().apply_async(args, kwargs, **options)

    def __call__(self, *args: Any, **kwargs: Any):
        return self.apply_async(args, kwargs)


def xmap(task: dict, it: Iterable[Any], *, app: "Engine | None" = None) -> Signature:
    """One task that calls ``task`` on each item (``task.map(items)``): a list back."""
    task = maybe_signature(task, app=app)
    return Signature(MAP, (), {"task": task, "it": list(it)}, app=app or _app_of([task]))


def xstarmap(task: dict, it: Iterable[Any], *, app: "Engine | None" = None) -> Signature:
    """``xmap`` with each item spread as the arguments (``task.starmap(pairs)``)."""
    task = maybe_signature(task, app=app)
    return Signature(STARMAP, (), {"task": task, "it": [list(item) for item in it]},
                     app=app or _app_of([task]))


_CLASSES = {CHAIN: chain, GROUP: group, CHORD: chord, CHUNKS: chunks}


def _app_of(parts: list) -> "Engine | None":
    """The app of a composition made without one: its tasks' (not the current app, which
    may be another)."""
    for part in parts:
        app = getattr(part, "_app", None)
        if app is not None:
            return app
    return None


def signature(varies: Any, args: Iterable[Any] = (), kwargs: dict | None = None, *,
              immutable: bool = False, app: "Engine | None" = None,
              **options: Any) -> Signature:
    """``signature("tasks.add", args=(2, 2), countdown=10)``, or a signature rebuilt from
    its map (as a task receives one in its arguments)."""
    if isinstance(varies, dict):
        return maybe_signature(varies, app=app)
    return Signature(varies, args, kwargs, options, immutable=immutable, app=app)


def maybe_signature(value: Any, app: "Engine | None" = None) -> Any:
    """A Signature (of the right class) from a signature map; None stays None."""
    if value is None or (isinstance(value, Signature) and (app is None or value._app)):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("task"), str):
        raise TypeError(f"expected a signature, got {type(value).__name__}: {value!r:.80}")
    kind = value["task"]
    kwargs = dict(value.get("kwargs") or {})
    if kind in (CHAIN, GROUP):
        kwargs["tasks"] = [maybe_signature(t, app) for t in kwargs.get("tasks") or ()]
    elif kind == CHORD:
        kwargs["header"] = [maybe_signature(t, app) for t in kwargs.get("header") or ()]
        kwargs["body"] = maybe_signature(kwargs.get("body"), app)
    elif kind in (CHUNKS, MAP, STARMAP):
        kwargs["task"] = maybe_signature(kwargs.get("task"), app)
    fields = {"task": kind, "args": tuple(value.get("args") or ()), "kwargs": kwargs,
              "options": _check_options(dict(value.get("options") or {})),
              "immutable": bool(value.get("immutable", False))}
    return _CLASSES.get(kind, Signature)._make(fields, app)


# -- sending -----------------------------------------------------------------------------
def send(sig: Signature, app: "Engine") -> "AsyncResult | GroupResult":
    """Freeze ``sig`` (a copy the caller will not reuse), plan it and send its first
    messages in pipelined batches; everything is encoded before the first byte is sent."""
    result = _freeze(sig, app, None, _ids())
    outgoing = Planner(app).plan(sig, seed=str(uuid.uuid4()))
    # tracing on: one 'send' span, whose traceparent the first messages carry
    with tracing.CanvasSpan(sig["task"], result.id, outgoing) if tracing.ENABLED else _NO_SPAN:
        try:
            app.broker.enqueue_many([(o.queue, o.body, o.eta) for o in outgoing])
        except EnqueueError as exc:   # one clear error, saying how much of it went out
            raise app._send_error(exc.error, sent=[], unsent=[], unsent_indexes=exc.unsent,
                                  what=f"{len(exc.sent)} of the canvas's {len(outgoing)} "
                                  f"first messages were queued") from exc.error
    return result


_NO_SPAN = nullcontext()


def _ids():
    from engine.message import uuid4_strings
    return uuid4_strings()


def _copy(sig: dict) -> dict:
    """The signature's structure copied (maps, option maps, lists of signatures); argument
    values are shared."""
    kind = sig["task"]
    kwargs = dict(sig["kwargs"])
    if kind in (CHAIN, GROUP):
        kwargs["tasks"] = [_retype(t) for t in kwargs["tasks"]]
    elif kind == CHORD:
        kwargs["header"] = [_retype(t) for t in kwargs["header"]]
        if kwargs.get("body") is not None:
            kwargs["body"] = _retype(kwargs["body"])
    options = dict(sig["options"])
    for key in ("link", "link_error"):
        if key in options:
            options[key] = [_retype(c) for c in options[key]]
    return {"task": kind, "args": sig["args"], "kwargs": kwargs, "options": options,
            "immutable": sig["immutable"]}


def _retype(sig: dict) -> Signature:
    kind = type(sig) if isinstance(sig, Signature) else _CLASSES.get(sig["task"], Signature)
    return kind._make(_copy(sig), getattr(sig, "_app", None))


def _partial(sig: dict, args: tuple, kwargs: dict) -> None:
    """Apply send-time arguments in place: to a task, the first step of a chain, every
    member of a group, every header member of a chord."""
    kind = sig["task"]
    if kind == CHAIN:
        _partial(sig["kwargs"]["tasks"][0], args, kwargs)
    elif kind == GROUP:
        for member in sig["kwargs"]["tasks"]:
            _partial(member, args, kwargs)
    elif kind == CHORD:
        for member in sig["kwargs"]["header"]:
            _partial(member, args, kwargs)
    elif not sig["immutable"]:
        sig["args"] = tuple(args) + tuple(sig["args"])
        sig["kwargs"] = {**sig["kwargs"], **kwargs}


def _freeze(sig: dict, app: "Engine", parent: Any, ids) -> Any:
    """Give ids in place (``task_id`` of tasks, ``group_id`` of groups and chords; a
    chain's or chord's own ``task_id`` moves to the task whose result is its handle) and
    return the handle, its ``parent`` links set."""
    from engine.canvas.result import GroupResult
    from engine.results import AsyncResult
    kind, options = sig["task"], sig["options"]
    if kind == CHUNKS:
        as_group = chunks._make(dict(sig), getattr(sig, "_app", None)).group()
        sig.clear()
        sig.update(as_group)
        kind, options = GROUP, sig["options"]
    if kind == CHAIN:
        steps = sig["kwargs"]["tasks"]
        if not steps:
            raise CanvasError("an empty chain")
        if "task_id" in options:
            _give_id(steps[-1], options.pop("task_id"))
        for step in steps[:-1]:
            if step["task"] == GROUP:   # followed by more: a chord's header
                for member in step["kwargs"]["tasks"]:
                    _countable(member)
        result = parent
        for step in steps:
            result = _freeze(step, app, result, ids)
        return result
    if kind == GROUP:
        gid = options.setdefault("group_id", next(ids))
        members = [_freeze(m, app, None, ids) for m in sig["kwargs"]["tasks"]]
        return _linked(GroupResult(gid, members, app=app), parent)
    if kind == CHORD:
        gid = options.setdefault("group_id", next(ids))
        body = sig["kwargs"].get("body")
        if body is None:
            raise CanvasError("a chord needs a body")
        if "task_id" in options:
            _give_id(body, options.pop("task_id"))
        for member in sig["kwargs"]["header"]:
            _countable(member)
        header = GroupResult(gid, [_freeze(m, app, None, ids) for m in sig["kwargs"]["header"]],
                             app=app)
        _linked(header, parent)
        return _freeze(body, app, header, ids)
    task_id = options.setdefault("task_id", next(ids))
    return _linked(AsyncResult(task_id, app, task_name=kind), parent)


def _give_id(sig: dict, task_id: str) -> None:
    while sig["task"] == CHAIN:
        sig = sig["kwargs"]["tasks"][-1]
    if sig["task"] == CHORD:
        sig = sig["kwargs"]["body"]
        return _give_id(sig, task_id)
    if sig["task"] not in _COMPOSED:
        sig["options"]["task_id"] = task_id


def _countable(member: dict) -> None:
    """A chord counts tasks and chains of tasks: refuse a group or chord in its header
    before anything is sent (a worker would have to refuse it later)."""
    kind = member["task"]
    if kind in (GROUP, CHORD, CHUNKS):
        raise CanvasError("a chord's header members must be tasks or chains of tasks, "
                          f"not {kind}")
    if kind == CHAIN:
        for step in member["kwargs"]["tasks"]:
            _countable(step)


def _linked(result: Any, parent: Any) -> Any:
    result.parent = parent
    if parent is not None:
        parent._children = [*(parent._children or ()), result]
    return result
