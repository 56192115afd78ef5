"""The supervisor's inbox: everything that reaches the loop from other threads or processes.

Items are fetched batches ``(lane, batch)``, pool ``Outcome``s, and the tagged tuples
``(START, job_id)``, ``(SIGNAL, intent)`` and ``(CONTROL, command)``. Producers only put;
the loop alone takes. In a gevent-patched process the inbox is a plain ``SimpleQueue``
(a process-shared semaphore would stall the hub); elsewhere a ``WakeInbox``.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
from collections import deque
from typing import Any, Iterator

START, SIGNAL, CONTROL = "start", "signal", "control"


class WakeInbox:
    """The loop's inbox when pools may wake the loop from other processes: items from this
    process's threads in a deque, and one process-shared semaphore that every producer posts
    (threads after each ``put``, prefork children after each completion they publish). The
    loop then reads the children's outboxes itself (``Pool.poll``), a thread hop less per
    completion than a reader thread handing them over.

    No wake-up is lost: producers publish, then post; ``wait`` takes every token, then the
    loop reads every source. Surplus tokens cost a spurious turn, nothing else.

    Threads post once a turn, not once an item: the first ``put`` after the loop's last
    ``wait`` posts and raises ``_posted``; the others only append, as the loop has a token
    coming and reads every item after it. ``wait`` lowers the flag after it took the tokens,
    before the loop reads the items: an item put after the loop's last look finds the flag
    down and posts. (A post is a syscall made with the GIL held when the loop sleeps; a
    pool that finishes twenty jobs in one go would wake it twenty times.)"""

    def __init__(self) -> None:
        self._items: deque = deque()
        self.waker = multiprocessing.get_context("fork").Semaphore(0)
        self._post = self.waker.release
        self._take = self.waker.acquire
        self._posted = False

    def put(self, item: Any) -> None:
        self._items.append(item)
        if not self._posted:
            self._posted = True
            self._post()

    def put_here(self, item: Any) -> None:
        """``put`` from the loop's own thread, within a loop turn: no wake-up (the loop
        looks at its items before it waits again)."""
        self._items.append(item)

    def get_nowait(self) -> Any:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    def get(self, timeout: float) -> Any:
        if not self._items:
            self.wait(timeout)
        return self.get_nowait()

    def wait(self, timeout: float) -> None:
        """Until something was posted or ``timeout``; then absorb every token."""
        take = self._take
        if not self._items and take(True, timeout):
            while take(False):
                pass
        self._posted = False


def make_inbox() -> Any:
    """A WakeInbox, or a SimpleQueue where gevent has patched threading."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey and monkey.is_module_patched("threading"):
        return queue.SimpleQueue()
    return WakeInbox()


def take(inbox: Any, timeout: float, polled: list, limit: int) -> Iterator[Any]:
    """One loop turn's items: wait up to ``timeout`` for the first (pools in ``polled``
    publish their outboxes first: ``Pool.poll``), then up to ``limit`` in all, without
    waiting again."""
    if polled:
        inbox.wait(timeout)
        for pool in polled:
            pool.poll()
        timeout = 0
    try:
        item = inbox.get_nowait() if timeout == 0 else inbox.get(timeout=timeout)
    except queue.Empty:
        return
    yield item
    # an item is only taken out once it will be yielded: one taken past the limit would
    # be dropped with the generator (an outcome lost, its job "active" for ever)
    for _ in range(limit - 1):
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return
        yield item
