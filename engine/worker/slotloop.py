"""An ``async def`` task run to its end from a synchronous slot (a prefork child, a threads
slot thread, solo's loop, a gevent greenlet): owns the slot's event loop, kept for the
thread's life (a new loop per task would cost a selector and a self-pipe each time), and how
time limits that arrive in the slot reach the coroutine.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any, Coroutine

from engine.exceptions import SoftTimeLimitExceeded
from pools.base import Interruptible

#: seconds between wake-ups of the loop while a coroutine runs: an async exception (the
#: threads pool's limits) is only seen between bytecodes, never inside epoll_wait
TICK = 0.05
#: seconds a cancelled coroutine (hard limit) gets to end before its loop is dropped
GRACE = 1.0

_local = threading.local()
_hub_loop: asyncio.AbstractEventLoop | None = None   # the gevent process's one loop


def run(coro: Coroutine) -> Any:
    """Run ``coro`` to its end on this slot's loop and return its value (or raise).

    A pool's soft limit arrives as an exception in the slot (a signal handler in prefork and
    solo, an async exception in threads, a throw in gevent) and usually surfaces in the
    loop's own code, not in the coroutine: it is caught there and thrown into the coroutine
    at its current ``await`` (``pools.base.Interruptible``), and the loop goes on. Any other
    exception (TimeLimitExceeded: the hard limit) cancels the coroutine, gives it GRACE
    seconds and is raised again; a loop left holding a coroutine that would not end is
    dropped and the thread gets a new one. In a gevent-patched process, where greenlets
    share one OS thread and asyncio allows one running loop per thread, one loop runs in a
    greenlet of its own and the job's greenlet waits for its coroutine cooperatively.
    """
    if _gevent_patched():
        return _run_beside_hub(coro)
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    wrapper = Interruptible(coro)
    task = loop.create_task(_await(wrapper))
    ticker: list[asyncio.TimerHandle] = []
    _tick(loop, ticker)
    try:
        while True:
            try:
                return loop.run_until_complete(task)
            except SoftTimeLimitExceeded as exc:
                if task.done():
                    raise
                wrapper.throw(exc)       # it landed in the loop's code: hand it on
            except BaseException:
                if not task.done():
                    _give_up(loop, task)
                raise
    finally:
        ticker[0].cancel()


def _tick(loop: asyncio.AbstractEventLoop, handle: list) -> None:
    handle[:] = [loop.call_later(TICK, _tick, loop, handle)]


def _give_up(loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
    """Hard limit (or the slot's own end): cancel, wait a grace, drop the loop if stuck."""
    task.cancel("hard time limit exceeded")
    try:
        loop.run_until_complete(asyncio.wait([task], timeout=GRACE))
    except BaseException:        # another limit landed meanwhile: stop waiting
        pass
    if not task.done():
        # it ignored its cancellation: end it here (GeneratorExit), not in whatever thread
        # garbage-collects the loop later, and give this thread a new loop
        task._log_destroy_pending = False     # asyncio's own switch for that warning
        try:
            task.get_coro().close()
        except RuntimeError:     # it ignored GeneratorExit too
            pass
        _local.loop = None
        loop.close()


async def _await(wrapper: Interruptible) -> Any:
    return await wrapper


def _gevent_patched() -> bool:
    gevent_monkey = sys.modules.get("gevent.monkey")
    return gevent_monkey is not None and gevent_monkey.is_module_patched("threading")


def _run_beside_hub(coro: Coroutine) -> Any:
    """gevent: the coroutine runs on the process's one loop; this greenlet waits for it."""
    global _hub_loop
    if _hub_loop is None or _hub_loop.is_closed():
        import gevent
        _hub_loop = asyncio.new_event_loop()
        gevent.spawn(_hub_loop.run_forever)     # its selector is patched: it yields to the hub
    loop = _hub_loop
    wrapper = Interruptible(coro)
    future = asyncio.run_coroutine_threadsafe(_await(wrapper), loop)
    while True:
        try:
            return future.result()
        except SoftTimeLimitExceeded as exc:
            if future.done():
                raise
            loop.call_soon_threadsafe(wrapper.throw, exc)
        except BaseException:    # TimeLimitExceeded, GreenletExit: cancel the coroutine
            if not future.done():
                future.cancel()
            raise


async def with_request(request: Any, coro: Coroutine) -> Any:
    """Await ``coro`` with ``self.request`` set to ``request`` in its asyncio task's context
    (coroutines share their thread, so the thread-local request stack cannot say)."""
    from engine.task import set_async_request
    set_async_request(request)
    return await coro
