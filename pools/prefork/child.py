"""The main loop of one prefork child: claim a slot, run its job, post the outcome, repeat.

The child owns nothing but its outbox: every decision about what a death means, what to
replace and what to report belongs to the supervisor side (``pools.prefork``). The loop
never returns; it leaves through ``os._exit`` so no parent state (atexit, pytest) runs here.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
import traceback
from typing import Callable

import msgpack

from engine.worker import hooks
from engine.worker import ossignals as signals
from engine.exceptions import SoftTimeLimitExceeded
from pools.base import LOOP_FRESH, Outcome, Runner
from pools.prefork import shm

#: post a start record and wake the supervisor for every start, not only for the jobs the
#: supervisor marked ``notify_start`` (those with a time limit, whose clocks must start at
#: once); off, other starts are read from the child's status words (``START_SCAN``) or
#: told with their end (``Outcome.began``)
EAGER_STARTS = False

#: seconds an idle child sleeps before it looks at its flags and its parent again
IDLE_CHECK = 0.5

_LOOP_FRESH_NS = int(LOOP_FRESH * 1e9)

# why a child exited by itself (outbox ``reason``)
STOPPED, RETIRED, RECYCLED_TASKS, RECYCLED_MEMORY, CRASHED = 1, 2, 3, 4, 5

_pack = msgpack.Packer(use_bin_type=True).pack


class _LoadFailed(Exception):
    pass


def encode_outcome(seq: int, o: Outcome) -> bytes:
    return _pack([seq, o.state, o.result, o.exc_type, o.exc_message, o.traceback,
                  o.runtime, o.retry_at, o.requeue, o.stored])


def decode_outcome(payload: bytes) -> list:
    """[seq, state, result, exc_type, exc_message, traceback, runtime, retry_at, requeue,
    stored]"""
    return msgpack.unpackb(payload, raw=False)


def main(table: shm.WorkTable, outbox: shm.Outbox, done, runner: Runner, *, parent_pid: int,
         max_tasks: int | None, max_memory: int | None,
         setup: Callable[[], None] | None) -> None:
    """Run until told to stop, retired, recycled or orphaned; never returns."""
    code = 0
    try:
        signals.child_setup(parent_pid)
        gc.freeze()   # what the parent built stays shared: our collections won't touch it
        if setup is not None:
            setup()
        hooks.process_init()   # worker_process_init: after the fork, before the first task
        _loop(table, outbox, done, runner, parent_pid, max_tasks, max_memory)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        outbox.reason = CRASHED
        code = 1
    finally:
        try:
            hooks.process_shutdown(code)
        except BaseException:
            traceback.print_exc()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _loop(table, outbox, done, runner, parent_pid, max_tasks, max_memory) -> None:
    current = [0]          # seq of the job inside runner.execute, 0 outside

    def raise_soft() -> None:
        # the supervisor names its target first, so a signal that lands after the job ended
        # (or on the next job) is ignored instead of hitting the wrong task
        seq = current[0]
        if seq and outbox.target == seq:
            outbox.target = 0
            raise SoftTimeLimitExceeded("soft time limit exceeded")

    signals.install_interrupt(raise_soft)
    items, wait_for_offer, release_done = table.items, table.wait_for_offer, done.release
    put, put_started, set_running, set_phase = (outbox.put, outbox.put_started,
                                                outbox.set_running, outbox.set_phase)
    load, execute, claim = runner.load, runner.execute, table.claim
    store = getattr(runner, "store", None)
    should_exit = _exit_check(table, outbox)
    turn_words, turn_index = table.turn_word()
    monotonic_ns, wait_turn, has_offer = time.monotonic_ns, table.wait_turn, table.has_offer
    tasks = 0
    while True:
        reason = should_exit()
        if reason:
            if has_offer():
                items.release()      # a token we took may have been for that offer: pass it on
            _exit(outbox, reason)
        # once a supervisor's loop drives the pool (the stamp is set), a job is claimed only
        # while that loop turned lately: after a pause of the supervisor (or of the whole
        # process group) it first takes back what may be no longer its own (Pool.take_back)
        turn = turn_words[turn_index]
        if turn and monotonic_ns() - turn > _LOOP_FRESH_NS and has_offer():
            wait_turn(_LOOP_FRESH_NS, LOOP_FRESH)
            if os.getppid() != parent_pid:
                _exit(outbox, STOPPED)
            continue
        # a busy child goes from one job straight to the next offer: no token, no wait;
        # claims need no token either (one we got, or one left by a child that died before
        # it claimed, only costs a spurious wake-up later)
        slot = claim(outbox)
        if slot < 0:
            if not wait_for_offer(IDLE_CHECK) and os.getppid() != parent_pid:
                _exit(outbox, STOPPED)
            continue
        if should_exit():
            table.unclaim(slot)      # back on offer before we say we hold nothing
            set_phase(shm.IDLE)
            continue                 # the loop top exits
        seq, body, self_store, notify_start = table.read(slot)
        try:
            job = load(body)
        except BaseException as exc:
            job = None
            outcome = Outcome.from_exception("", exc)
        # the supervisor's mark, not the body: limits from the task, the lane or the worker
        # are on the Job it submitted, never in the message (a failed load wakes it too).
        # Other starts are no record at all: the supervisor reads them from our status
        # words (set_running) now and then, or learns of them with the end
        set_running(seq)
        if notify_start or job is None or EAGER_STARTS:
            put_started(seq)
            release_done()   # its clock starts now
        try:
            if job is None:
                raise _LoadFailed
            current[0] = seq
            try:
                outcome = execute(job)
            finally:
                current[0] = 0
        except _LoadFailed:
            pass
        except BaseException as exc:   # a soft limit that landed outside the task's own code
            outcome = Outcome.from_exception("", exc)
        if self_store and store is not None and job is not None:
            # a lone job: its caller may be waiting, and no batch would share the write
            try:
                outcome.stored = store(job, outcome)
            except Exception:
                traceback.print_exc()     # the supervisor stores it (stored stays False)
        put(shm.FINISHED, encode_outcome(seq, outcome))
        set_phase(shm.IDLE)
        release_done()
        outbox.count_done()
        tasks += 1
        if max_tasks and tasks >= max_tasks:
            _exit(outbox, RECYCLED_TASKS)
        if max_memory and _rss_over(outbox, max_memory):
            _exit(outbox, RECYCLED_MEMORY)


def _exit_check(table, outbox) -> Callable[[], int]:
    """The child's "should I leave?" (STOPPED, RETIRED or 0), as a closure over the two
    status words it reads: asked two or three times a job."""
    stop_words, stop_index = table.stop_word()
    flags_words, flags_index = outbox.flags_word()

    def should_exit() -> int:
        if stop_words[stop_index]:
            return STOPPED
        if flags_words[flags_index] & shm.RETIRE:
            return RETIRED
        return 0
    return should_exit


def _exit(outbox, reason: int) -> None:
    outbox.reason = reason
    outbox.set_phase(shm.EXITED)
    raise SystemExit(0)


def _rss_over(outbox, limit_kib: int) -> bool:
    # ru_maxrss (KiB on Linux) is one cheap syscall and never below the current RSS, so the
    # psutil read of the real current figure only happens once the peak passed the limit
    if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss <= limit_kib:
        return False
    import psutil
    rss = psutil.Process().memory_info().rss // 1024
    outbox.rss = rss
    return rss > limit_kib
