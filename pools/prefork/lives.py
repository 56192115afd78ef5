"""The lives of the prefork pool's children: fork one, reap it, settle what a dead one held,
replace it (with a backoff while children die before their first task).

``ChildLives`` is mixed into ``pools.prefork.PreforkPool``: its methods keep the pool's
records (``_children``, ``_jobs``, ``_table``, ``_stats``) under the pool's drain lock, and
use its ``_drain_locked`` and ``_finish``; the one rule of ``pools.prefork`` holds here too
(whoever pops a job's entry reports it). What a child does is in ``child``.
"""

from __future__ import annotations

import logging
import os
import time

from engine.exceptions import WorkerLostError
from pools.base import Outcome
from pools.prefork import child as _child
from pools.prefork import shm
from pools.prefork.children import Child, Held, describe_exit, holding, import_setup, waitpid

#: longest pause before replacing children that keep dying before their first task (a
#: broken import_in_child app): doubles from 0.1 s, so a bad deploy cannot fork-bomb
MAX_RESPAWN_BACKOFF = 5.0

log = logging.getLogger("engine.pools.prefork")


class ChildLives:
    """Spawning, reaping and replacing children, for ``PreforkPool``."""

    def _spawn(self, index: int) -> None:
        outbox = self._spare.pop(index, None) or shm.Outbox()
        outbox.reset()
        setup = (import_setup(self.options.app_path, self.load_app)
                 if self.options.import_in_child else None)
        pid = os.fork()
        if pid == 0:   # pragma: no cover - runs in the child, which leaves by os._exit
            _child.main(self._table, outbox, self._done, self.runner,
                        parent_pid=self._parent_pid,
                        max_tasks=self.options.max_tasks_per_child,
                        max_memory=self.options.max_memory_per_child, setup=setup)
        self._children[index] = Child(index, pid, outbox)
        self._outboxes = tuple((k.index, k.outbox) for k in self._children.values())

    def _replenish(self) -> None:
        if self._state != "running" or time.monotonic() < self._respawn_at:
            return
        live = sum(1 for k in self._children.values() if not k.retiring)
        index = 0
        while live < self.concurrency:
            while index in self._children:
                index += 1
            self._spawn(index)
            live += 1

    def _reap(self, kid: Child, *, wait: float) -> bool:
        """True when ``kid`` is gone (and accounted for)."""
        deadline = time.monotonic() + wait
        while (status := waitpid(kid.pid, block=False)) is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        kid.status = status
        self._lost(kid)
        return True

    def _lost(self, kid: Child) -> None:
        """``kid`` has been reaped: settle what it held, then forget it."""
        table, ob = self._table, kid.outbox
        with self._lock:
            self._drain_locked()
            phase, reason = ob.phase, ob.reason
            if phase in (shm.CLAIMING, shm.OWNS):
                self._settle_claim(kid, ob.slot)
            else:
                self._running_here(kid.index, ob)   # a start it posted no record of
            for seq, entry in list(self._jobs.items()):
                if entry.child == kid.index:        # started here and never finished
                    if kid.killed:               # collateral of our kill: run it again
                        entry.child = -1
                        if self._state == "running":
                            table.reoffer(entry.slot)
                    else:
                        self._finish(seq, Outcome.from_exception(entry.job_id, WorkerLostError(
                            f"child process {kid.pid} exited unexpectedly "
                            f"({describe_exit(kid)})")))
                        self._stats["lost"] += 1
        if ob.done == 0 and not kid.killed and reason != _child.RETIRED \
                and self._state == "running":
            self._backoff = min(MAX_RESPAWN_BACKOFF, max(0.1, self._backoff * 2))
            self._respawn_at = time.monotonic() + self._backoff
            log.error("prefork child %s died before its first task (%s); next one in %.1fs",
                      kid.pid, describe_exit(kid), self._backoff)
        elif ob.done:
            self._backoff = 0.0
        if reason in (_child.RECYCLED_TASKS, _child.RECYCLED_MEMORY):
            self._stats["recycled"] += 1
        elif not kid.retiring and self._state == "running":
            self._stats["replaced"] += 1
        self._forget(kid)
        if self._state == "running":
            table.wake()   # it may have swallowed an items token

    def _settle_claim(self, kid: Child, slot: int) -> None:
        # the dead child said CLAIMING/OWNS ``slot``: if the slot is claimed and no live child
        # says it holds it, the dead one took it; the job never ran, so offer it again
        seq = self._table.seq_of(slot)
        entry = self._jobs.get(seq)
        if entry is None or entry.slot != slot or not self._table.is_claimed(slot):
            return
        if holding(self._children.values(), seq, slot, besides=kid) is not None:
            return
        self._drain_locked()               # a live child may have finished it meanwhile
        if seq in self._jobs and self._state == "running":
            entry.child = -1
            self._table.reoffer(slot)

    def _holder(self, seq: int, entry: Held) -> Child | None:
        if entry.child >= 0:
            return self._children.get(entry.child)
        return holding(self._children.values(), seq, entry.slot)

    def _forget(self, kid: Child) -> None:
        if self._children.get(kid.index) is kid:
            del self._children[kid.index]
            self._stats["done_by_dead"] = self._stats.get("done_by_dead", 0) + kid.outbox.done
            self._outboxes = tuple((k.index, k.outbox) for k in self._children.values())
            self._spare[kid.index] = kid.outbox
