"""The hot-path Redis commands, straight onto redis-py connections.

``redis.Redis.execute_command`` costs about 70 µs of Python per command on the machines we
measure on (pool locking, retry closures, observability hooks, response callbacks), three
times the round trip it wraps. A task costs the engine a fetch, a write and, for the caller,
a ``delay()`` and a ``get()``: that overhead was most of a task's latency. ``Wire`` keeps
redis-py's connections (so every URL option, auth, TLS, unix sockets and hiredis parsing
still come from the client; a Sentinel client's connections find the current master each
time they connect) and drives them itself: commands packed by the connection's packer,
replies read raw. Replies are hiredis's, untouched: bytes, ints, nested lists.

A ``Wire`` is safe to share between threads and greenlets: each call borrows an idle
connection or makes one, and gives it back (list ``pop``/``append``, atomic in CPython).
After a fork the child drops the inherited connections without touching their sockets.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import redis

#: idle connections a Wire keeps; more are closed when given back
KEEP_IDLE = 8

_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_DEFAULT = object()   # read with the connection's own socket timeout


class Wire:
    def __init__(self, client: redis.Redis, *, keep: int = KEEP_IDLE) -> None:
        pool = client.connection_pool
        # RESP2 whatever the client speaks: flat arrays, the shapes the callers read
        kwargs = {**pool.connection_kwargs, "protocol": 2}
        self._make = lambda: pool.connection_class(**kwargs)
        self._idle: list = []
        self._keep = keep
        self._pid = os.getpid()
        self._closed = False

    # -- connections -----------------------------------------------------------------------
    def _take(self):
        if self._pid != os.getpid():
            # a forked child: the sockets belong to the parent (never shut them down here)
            self._idle = []
            self._pid = os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self._make()

    def _give(self, conn) -> None:
        if self._closed or len(self._idle) >= self._keep:
            conn.disconnect()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for conn in idle:
                conn.disconnect()

    # -- commands ----------------------------------------------------------------------
    def call(self, *args: Any, retry: bool = True, block: float | None = None,
             forever: bool = False) -> Any:
        """One command; an error reply raises ``redis.ResponseError``.

        A blocking command says how long Redis may hold it: ``block`` seconds (the reply
        is then awaited that long plus the connection's socket timeout) or ``forever``."""
        conn = self._take()
        try:
            packed = conn.pack_command(*args)
            limit = conn.socket_timeout
            wait: Any = _DEFAULT
            if forever:
                wait = None
            elif block is not None and limit is not None and block + 1 >= limit:
                wait = block + limit      # a short block fits in the socket timeout as is
            try:
                return _one(conn, packed, wait)
            except _CONNECTION_ERRORS as exc:
                conn.disconnect()
                return self._again(conn, exc, retry, lambda: _one(conn, packed, wait))
        finally:
            self._give(conn)

    def pipeline(self, commands: Sequence[Sequence[Any]], *, retry: bool = True,
                 raise_on_error: bool = True) -> list[Any]:
        """Many commands in one write, their replies in order. An error reply is returned in
        its place (``raise_on_error=False``) or raised once every reply is read, so the
        connection stays in step either way. ``retry`` resends the whole lot after a
        dropped connection: fine for idempotent commands, a possible duplicate otherwise
        (as with any Redis client)."""
        if not commands:
            return []
        conn = self._take()
        try:
            packed = conn.pack_commands(commands)
            n = len(commands)
            try:
                replies = _many(conn, packed, n)
            except _CONNECTION_ERRORS as exc:
                conn.disconnect()
                replies = self._again(conn, exc, retry, lambda: _many(conn, packed, n))
        finally:
            self._give(conn)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.ResponseError):
                    raise reply
        return replies

    @staticmethod
    def _again(conn, exc: BaseException, retry: bool, attempt) -> Any:
        """After a dropped connection: the connection's own retry policy (the client's
        backoff and attempt budget), or the error at once."""
        policy = getattr(conn, "retry", None)
        if not retry or policy is None:
            raise _as_redis_error(exc) from exc
        try:
            return policy.call_with_retry(attempt, lambda error: conn.disconnect())
        except OSError as error:
            raise _as_redis_error(error) from error


def _connected(conn) -> None:
    """Connect through the connection's own ``connect``: ``send_packed_command`` would
    connect by itself, but past the override in which a Sentinel-managed connection asks
    the sentinels where the master is now (it would dial the default localhost:6379)."""
    if conn._sock is None:
        conn.connect()


def _one(conn, packed, wait: Any = None) -> Any:
    _connected(conn)
    conn.send_packed_command(packed, check_health=False)
    if wait is _DEFAULT:
        return conn.read_response()
    return conn.read_response(timeout=wait)


def _many(conn, packed, n: int) -> list[Any]:
    _connected(conn)
    conn.send_packed_command(packed, check_health=False)
    read = conn.read_response
    replies = []
    for _ in range(n):
        try:
            replies.append(read())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


def _as_redis_error(exc: BaseException) -> BaseException:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return exc
    return redis.ConnectionError(str(exc))


def fields_get(fields: Iterable | dict | None, name: bytes) -> Any:
    """A field of a stream entry as a raw reply gives it (``[k, v, k, v...]``), or None."""
    if fields is None:
        return None
    if isinstance(fields, dict):
        return fields.get(name)
    it = iter(fields)
    for key in it:
        value = next(it, None)
        if key == name:
            return value
    return None


def text(value: Any) -> Any:
    """A reply's bytes as str (other values as they are)."""
    return value.decode() if isinstance(value, bytes) else value
