"""The harness: plays the supervisor against a pool under test, by the rules of ``pools.base``.

Owns the supervisor's side (one calling thread, submit only into a free slot, ticks that fire
due limits through ``engine.limits``) and the record of what the pool reported, where every
rule breach is kept until the test's next ``wait_for`` or ``check`` fails it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import msgpack
import pytest

from engine.exceptions import TimeLimitExceeded
from engine.limits import HARD, SOFT, Deadlines
from pools.base import FAILURE, REJECTED, RETRY, SUCCESS, Job, Outcome, Pool, PoolOptions
from pools.testing.tasks import POLL, SampleRunner, encode_body, touch

STATES = {SUCCESS, FAILURE, RETRY, REJECTED}


class Harness:
    """Plays the supervisor: one thread calls the pool; outcomes arrive from any thread.

    Rule breaches seen in callbacks (a second outcome, an outcome for an unknown job, a
    malformed one) are recorded, never raised in the pool's thread, and fail the test at the
    next ``wait_for`` or ``check``.
    """

    def __init__(self, pool_class: type[Pool], concurrency: int, workdir: Path, *,
                 options: PoolOptions = PoolOptions(), wait_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.wait_timeout = wait_timeout
        self.thread = threading.get_ident()
        self.cond = threading.Condition()
        self.submitted: dict[str, Job] = {}
        self.outcomes: dict[str, list[Outcome]] = {}
        self.started: dict[str, float] = {}
        self.violations: list[str] = []
        self.returned_by_stop: set[str] = set()
        self.killed_waiting: set[str] = set()   # kill() before any start was reported
        self.deadlines = Deadlines()
        self._new_starts: list[tuple[str, float]] = []
        self._gates: list[str] = []
        self.pool = pool_class(concurrency, self._on_outcome, runner=SampleRunner(),
                               on_start=self._on_start, options=options)
        self.capabilities = frozenset(pool_class.capabilities)
        self.running = False       # start() returned: stop/terminate are in contract

    # -- the pool's callbacks: cheap, thread-safe, never raise
    def _on_outcome(self, outcome: Outcome) -> None:
        with self.cond:
            if not isinstance(outcome, Outcome):
                self.violations.append(f"on_outcome got {outcome!r}, not an Outcome")
                return
            seen = self.outcomes.setdefault(outcome.job_id, [])
            seen.append(outcome)
            if outcome.began:    # its start, told with its end
                if outcome.job_id in self.started:
                    self.violations.append(f"began set for {outcome.job_id}, whose start "
                                           f"on_start had reported")
                self.started[outcome.job_id] = time.monotonic()
            if outcome.job_id not in self.submitted:
                self.violations.append(f"outcome for a job never submitted: {outcome.job_id}")
            elif len(seen) > 1:
                self.violations.append(f"{len(seen)} outcomes for job {outcome.job_id}: "
                                       f"{[o.state for o in seen]}")
            if outcome.job_id in self.returned_by_stop:
                self.violations.append(f"outcome for {outcome.job_id}, handed back by stop()")
            if outcome.state not in STATES:
                self.violations.append(f"outcome state {outcome.state!r} is not one of {STATES}")
            self.cond.notify_all()

    def _on_start(self, job_id: str) -> None:
        with self.cond:
            if job_id in self.started:
                self.violations.append(f"on_start called twice for {job_id}")
            self.started[job_id] = time.monotonic()
            self._new_starts.append((job_id, self.started[job_id]))
            self.cond.notify_all()

    # -- supervisor side
    def call(self, method: str, *args):
        assert threading.get_ident() == self.thread, "the harness calls the pool from one thread"
        if method == "kill":
            with self.cond:
                if args[0] not in self.started:   # a job killed while it waits never starts
                    self.killed_waiting.add(args[0])
        result = getattr(self.pool, method)(*args)
        if method == "free_slots" and (not isinstance(result, int) or result < 0):
            pytest.fail(f"free_slots() returned {result!r}, not a count")
        return result

    def start(self) -> "Harness":
        self.call("start")
        self.running = True
        return self

    def path(self, name: str) -> str:
        return str(self.workdir / name)

    def gate(self) -> str:
        gate = self.path(f"gate-{uuid.uuid4().hex[:8]}")
        self._gates.append(gate)
        return gate

    def open_gates(self) -> None:
        for gate in self._gates:
            touch(gate)

    def job(self, task: str, *args, soft: float | None = None, hard: float | None = None,
            **kwargs) -> Job:
        job_id = f"{task.rpartition('.')[2]}-{uuid.uuid4().hex[:12]}"
        body = encode_body(job_id, task, args, kwargs, soft=soft, hard=hard)
        return Job(id=job_id, task=task, args=list(args), kwargs=kwargs, body=body,
                   soft_limit=soft, hard_limit=hard)

    def submit(self, job: Job, *, wait: bool = True) -> Job:
        """Submit as the supervisor does: only once ``free_slots()`` is above zero (waiting
        for it, ticking, unless ``wait`` is False)."""
        if wait:
            self.wait_for(lambda: self.call("free_slots") > 0, f"a free slot for {job.id}")
        else:
            assert self.call("free_slots") > 0, "the harness submits only into a free slot"
        with self.cond:
            self.submitted[job.id] = job
        self.call("submit", job)
        return job

    def run(self, task: str, *args, **kwargs) -> Job:
        return self.submit(self.job(task, *args, **kwargs))

    def tick(self) -> None:
        """One supervisor tick: maintain, start the clocks of new jobs, fire due limits."""
        self.call("maintain")
        with self.cond:
            starts, self._new_starts = self._new_starts, []
            done = [job_id for job_id in self.outcomes]
        for job_id, at in starts:
            job = self.submitted.get(job_id)
            if job is not None:
                self.deadlines.add(job_id, soft=job.soft_limit, hard=job.hard_limit, start=at)
        for job_id in done:
            self.deadlines.cancel(job_id)
        for job_id, kind in self.deadlines.due():
            if kind == SOFT and "interrupt" in self.capabilities:
                self.call("interrupt", job_id)
            elif kind == HARD and "kill" in self.capabilities:
                self.call("kill", job_id)

    def wait_for(self, predicate: Callable[[], bool], what: str, *, tick: bool = True,
                 timeout: float | None = None) -> None:
        """Wait (ticking) until ``predicate()``; a deadline only turns a hang into a failure."""
        give_up = time.monotonic() + (timeout or self.wait_timeout)
        while True:
            self.check()
            if tick:
                self.tick()
            if predicate():
                return
            if time.monotonic() > give_up:
                pytest.fail(f"gave up waiting for {what}")
            with self.cond:
                self.cond.wait(POLL * 2)

    def outcome(self, job: Job) -> Outcome | None:
        with self.cond:
            found = self.outcomes.get(job.id)
            return found[0] if found else None

    def wait_outcome(self, job: Job, **kwargs) -> Outcome:
        self.wait_for(lambda: self.outcome(job) is not None, f"the outcome of {job.id}", **kwargs)
        return self.outcome(job)

    def wait_started(self, *jobs: Job) -> None:
        self.wait_for(lambda: all(j.id in self.started for j in jobs),
                      f"{len(jobs)} job(s) to start")

    def wait_file(self, path: str) -> None:
        self.wait_for(lambda: os.path.exists(path), f"the file {os.path.basename(path)}")

    def check(self) -> None:
        with self.cond:
            if self.violations:
                pytest.fail("pool broke its contract: " + "; ".join(self.violations))
            for job_id in self.outcomes:
                if job_id in self.submitted and job_id not in self.started \
                        and job_id not in self.killed_waiting:
                    pytest.fail(f"outcome for {job_id} without on_start({job_id!r})")

    def close(self) -> None:
        self.open_gates()
        if self.running:
            self.call("terminate")


def value(outcome: Outcome):
    """The decoded return value of a SUCCESS outcome (with its error shown if it failed)."""
    assert outcome.state == SUCCESS, f"{outcome.state}: {outcome.exc_type}: {outcome.exc_message}"
    return msgpack.unpackb(outcome.result)


def assert_time_limit(outcome: Outcome) -> None:
    assert outcome.state == FAILURE, f"expected FAILURE, got {outcome.state}"
    assert outcome.exc_type.rpartition(".")[2] == TimeLimitExceeded.__name__, outcome.exc_type
