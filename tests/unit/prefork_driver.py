"""Driving the prefork pool directly in tests (no Redis): the tasks its children run, a
small Runner, and ``Driver``, which plays the supervisor (``driver`` fixture: one with a
reader thread, one polled, as under the worker's WakeInbox). It waits by polling conditions
with generous deadlines and kills only the processes it started."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid

import msgpack
import psutil
import pytest

from engine.exceptions import SoftTimeLimitExceeded
from pools.base import SUCCESS, Job, Outcome
from pools.prefork import PreforkPool, shm

WAIT = 30.0
POLL = 0.005
_HOG: list[bytes] = []


# --------------------------------------------------------------------------- tasks

def t_echo(*args):
    return list(args)


def t_pid():
    return os.getpid()


def t_big(size):
    return "x" * size


def t_catch_soft(marker):
    # the marker is written inside the try: the test interrupts as soon as it sees it, and
    # the soft limit must not land before the handler is in place
    try:
        open(marker, "w").close()
        while True:
            time.sleep(POLL)
    except SoftTimeLimitExceeded:
        return "caught"


def t_sleep(marker, seconds):
    open(marker, "w").close()
    time.sleep(seconds)
    return "slept"


def t_spin(marker):
    open(marker, "w").close()
    n = 0
    while True:
        try:
            n += 1
        except SoftTimeLimitExceeded:
            pass


def t_recv(marker):
    a, b = socket.socketpair()
    open(marker, "w").close()
    a.recv(1)            # blocks in C forever: nobody writes to b
    return "received"


def t_hold(marker, gate):
    open(marker, "w").close()
    while not os.path.exists(gate):
        time.sleep(POLL)
    return os.getpid()


def t_exit(marker):
    open(marker, "w").close()
    os._exit(3)


def t_segfault():
    import ctypes
    ctypes.string_at(0)


def t_hog(mib):
    _HOG.append(b"\1" * (mib * 1024 * 1024))
    return os.getpid()


def t_modules(name):
    return name in sys.modules


TASKS = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("t_")}


class MiniRunner:
    def load(self, body: bytes) -> Job:
        data = msgpack.unpackb(body)
        return Job(data["id"], data["task"], data["args"], body=body)

    def execute(self, job: Job) -> Outcome:
        try:
            return Outcome(job.id, SUCCESS, msgpack.packb(TASKS[job.task](*job.args)))
        except Exception as exc:
            return Outcome.from_exception(job.id, exc)


class StoringRunner(MiniRunner):
    """A runner that can store results itself (``Runner.store``): it says so by the pid."""

    def store(self, job: Job, outcome: Outcome) -> bool:
        outcome.result = msgpack.packb(["stored by", os.getpid()])
        return True


# --------------------------------------------------------------------------- harness

class Driver:
    """Plays the supervisor: one thread calls the pool; outcomes arrive on the pool's reader
    thread, or (``polled``, as under the worker's WakeInbox) on this thread, from ``poll``
    after the children post the waker."""

    def __init__(self, tmp_path, concurrency=2, polled=False, runner=None, **kwargs):
        self.tmp = tmp_path
        self.cond = threading.Condition()
        self.outcomes: dict[str, list[Outcome]] = {}
        self.started: list[str] = []
        self.pool = PreforkPool(concurrency, self._on_outcome, runner=runner or MiniRunner(),
                                on_start=self._on_start, **kwargs)
        self.waker = None
        if polled:
            self.waker = shm._ctx.Semaphore(0)
            self.pool.attach_waker(self.waker)
        self.pool.start()
        assert (self.pool._reader is None) == polled
        self.pids = set(self.pool.info()["pids"])

    def _on_outcome(self, outcome):
        with self.cond:
            self.outcomes.setdefault(outcome.job_id, []).append(outcome)
            if outcome.began:      # its start, told with its end (Outcome.began)
                self.started.append(outcome.job_id)
            self.cond.notify_all()

    def _on_start(self, job_id):
        with self.cond:
            self.started.append(job_id)
            self.cond.notify_all()

    def path(self, name):
        return str(self.tmp / name)

    def submit(self, task, *args, soft_limit=None, hard_limit=None):
        """Submit ``task(*args)``; limits go on the Job only, never into the body (as the
        supervisor does with those it resolved from the task, the lane or the worker)."""
        job_id = f"{task}-{uuid.uuid4().hex[:10]}"
        body = msgpack.packb({"id": job_id, "task": task, "args": list(args)})
        self.wait(lambda: self.pool.free_slots() > 0, "a free slot")
        self.pool.submit(Job(job_id, task, list(args), body=body, soft_limit=soft_limit,
                             hard_limit=hard_limit))
        return job_id

    def wait(self, predicate, what, timeout=WAIT):
        give_up = time.monotonic() + timeout
        while not predicate():
            self.pool.maintain()
            self.pids |= set(self.pool.info()["pids"])
            if time.monotonic() > give_up:
                pytest.fail(f"gave up waiting for {what}")
            if self.waker is not None:
                if self.waker.acquire(True, POLL):
                    while self.waker.acquire(False):
                        pass
                self.pool.poll()
            else:
                with self.cond:
                    self.cond.wait(POLL)

    def outcome(self, job_id) -> Outcome:
        self.wait(lambda: job_id in self.outcomes, f"the outcome of {job_id}")
        with self.cond:
            assert len(self.outcomes[job_id]) == 1, self.outcomes[job_id]
            return self.outcomes[job_id][0]

    def value(self, job_id):
        outcome = self.outcome(job_id)
        assert outcome.state == SUCCESS, (outcome.exc_type, outcome.exc_message)
        return msgpack.unpackb(outcome.result)

    def wait_file(self, path):
        self.wait(lambda: os.path.exists(path), path)

    def close(self):
        self.pool.terminate()
        for pid in self.pids:
            assert not _alive(pid), f"child {pid} outlived terminate()"


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(params=["reader", "polled"])
def driver(request, tmp_path):
    made = []

    def make(**kwargs):
        d = Driver(tmp_path, polled=request.param == "polled", **kwargs)
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()
