"""The pool conformance suite: pytest test methods every pool must pass, shipped for plugin authors.

Subclass ``PoolTests`` in a test module and name your pool (as with huey's ``StorageTests``)::

    from pools.testing import PoolTests
    class TestMyPool(PoolTests):
        pool_class = MyPool
        concurrency = 4

or run ``python -m pools.testing mypkg.mod:MyPool [-c N] [--gevent] [pytest args]``.
The suite plays the supervisor (``Harness``) and brings its own tasks (``SampleRunner``); it
checks the promises written in ``pools.base`` and never asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import msgpack
import pytest

from engine.exceptions import NotSupported, SoftTimeLimitExceeded, TimeLimitExceeded
from engine.limits import HARD, SOFT, Deadlines
from pools.base import FAILURE, REJECTED, RETRY, SUCCESS, Job, Outcome, Pool, PoolOptions

STATES = {SUCCESS, FAILURE, RETRY, REJECTED}
#: how often sample tasks and the harness look at the world while waiting (not a sync point)
POLL = 0.005


# --------------------------------------------------------------------------- sample tasks

class SampleError(Exception):
    """What ``sample.fail`` raises, so a FAILURE can be told from an accident."""


#: task name -> function; ``sample_task`` adds more (the gevent tests add a hub blocker)
TASKS: dict[str, Callable] = {}


def sample_task(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        TASKS[name] = fn
        return fn
    return register


def _touch(path: str) -> None:
    Path(path).touch()


@sample_task("sample.ok")
def ok():
    return "ok"


@sample_task("sample.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@sample_task("sample.fail")
def fail(message="boom"):
    raise SampleError(message)


@sample_task("sample.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@sample_task("sample.whoami")
def whoami():
    return {"pid": os.getpid(), "thread": threading.get_ident()}


@sample_task("sample.hold")
def hold(started, gate, limit=60.0):
    """Runs until the file ``gate`` exists; ``started`` and ``started.end`` mark its life."""
    _touch(started)
    give_up = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > give_up:
            raise TimeoutError("the gate never opened")
        time.sleep(POLL)
    _touch(started + ".end")
    return "released"


@sample_task("sample.catch_soft")
def catch_soft(started, limit=60.0):
    """Waits for its soft limit, catches it and returns normally."""
    give_up = time.monotonic() + limit
    try:
        _touch(started)
        while time.monotonic() < give_up:
            time.sleep(POLL)
    except SoftTimeLimitExceeded:
        return "caught"
    raise TimeoutError("no soft time limit arrived")


@sample_task("sample.stubborn")
def stubborn(started, limit=60.0):
    """Swallows every soft limit (touching ``started.soft``) while sleeping in short steps."""
    give_up = time.monotonic() + limit
    swallowed, announced = 0, False
    while True:
        # Everything after the marker sits inside the try: the supervisor interrupts as soon
        # as it sees the marker, and the soft limit must not land outside the handler.
        try:
            if not announced:
                announced = True
                _touch(started)
            while time.monotonic() < give_up:
                time.sleep(POLL)
            return swallowed
        except SoftTimeLimitExceeded:
            swallowed += 1
            _touch(started + ".soft")


@sample_task("sample.spin")
def spin(started, limit=60.0):
    """A pure-Python busy loop that swallows soft limits; only a preemptive kill ends it."""
    give_up = time.monotonic() + limit
    spins, announced = 0, False
    while True:
        try:
            if not announced:
                announced = True
                _touch(started)
            while True:
                for _ in range(10_000):
                    spins += 1
                if time.monotonic() > give_up:
                    return spins
        except SoftTimeLimitExceeded:
            _touch(started + ".soft")


@sample_task("sample.block")
def block(started, seconds=60.0):
    """One long blocking call (time.sleep): no Python bytecode runs until it returns."""
    _touch(started)
    time.sleep(seconds)
    return "slept"


@sample_task("sample.rendezvous")
def rendezvous(directory, n, name, limit=60.0):
    """Arrives in ``directory`` and waits for ``n`` arrivals: proves ``n`` jobs overlap."""
    _touch(os.path.join(directory, name))
    give_up = time.monotonic() + limit
    while True:
        seen = len(os.listdir(directory))
        if seen >= n:
            return {"seen": seen, "pid": os.getpid(), "thread": threading.get_ident()}
        if time.monotonic() > give_up:
            raise TimeoutError(f"only {seen} of {n} jobs ever ran at once")
        time.sleep(POLL)


def encode_body(job_id: str, task: str, args=(), kwargs=None, *, soft=None, hard=None) -> bytes:
    """A message body as the wire protocol of CONTRACT.md spells it."""
    body = {"v": 1, "id": job_id, "task": task, "args": list(args), "kwargs": kwargs or {},
            "retries": 0}
    if soft is not None:
        body["soft"] = soft
    if hard is not None:
        body["hard"] = hard
    return msgpack.packb(body)


class SampleRunner:
    """A Runner (``pools.base.Runner``) over ``TASKS``; picklable, usable after fork or spawn."""

    def load(self, body: bytes) -> Job:
        data = msgpack.unpackb(body)
        return Job(id=data["id"], task=data["task"], args=list(data.get("args", [])),
                   kwargs=dict(data.get("kwargs", {})), body=body,
                   retries=data.get("retries", 0), soft_limit=data.get("soft"),
                   hard_limit=data.get("hard"))

    def execute(self, job: Job) -> Outcome:
        start = time.perf_counter()
        try:
            fn = TASKS[job.task]
            value = fn(*job.args, **job.kwargs)
            return Outcome(job.id, SUCCESS, msgpack.packb(value),
                           runtime=time.perf_counter() - start)
        except Exception as exc:   # SoftTimeLimitExceeded and TimeLimitExceeded included
            return Outcome.from_exception(job.id, exc, runtime=time.perf_counter() - start)


# --------------------------------------------------------------------------- the harness

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
            _touch(gate)

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
                if job_id in self.submitted and job_id not in self.started:
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


# --------------------------------------------------------------------------- the suite

class PoolTests:
    """The conformance suite. Subclass, set ``pool_class``; override the rest if needed."""

    #: the Pool subclass under test
    pool_class: type[Pool] | None = None
    #: slots to start with; at least 2 exercises the "next job keeps running" cases
    concurrency = 4
    pool_options = PoolOptions()
    #: a ceiling on every wait: only turns a hang into a failure, never a timing assertion
    wait_timeout = 30.0
    #: seconds the blocking sample call lasts (a thread pool's killed thread lives this long)
    blocking_seconds = 60.0
    #: False if the pool enforces no time limits at all (it then fails nothing limit-related,
    #: but must still raise NotSupported for interrupt and kill)
    enforces_limits = True
    #: None: read the pool class's attribute of the same name, else False. True for a pool
    #: that runs jobs inside ``maintain()`` (solo): cases that hold a job open are skipped.
    runs_jobs_in_maintain: bool | None = None
    #: None: read the pool class's attribute of the same name, else True. False for a pool
    #: that cannot preempt a pure-Python busy loop (gevent).
    preempts_busy_loops: bool | None = None

    # -- fixtures and helpers
    def _attr(self, name: str, default: bool) -> bool:
        own = getattr(self, name)
        return own if own is not None else bool(getattr(self.pool_class, name, default))

    @pytest.fixture
    def make_harness(self, tmp_path):
        if self.pool_class is None:
            pytest.skip("set pool_class on the PoolTests subclass")
        made: list[Harness] = []

        def make(*, options: PoolOptions | None = None, concurrency: int | None = None,
                 start: bool = True) -> Harness:
            workdir = tmp_path / f"h{len(made)}"
            workdir.mkdir()
            harness = Harness(self.pool_class, concurrency or self.concurrency, workdir,
                              options=self.pool_options if options is None else options,
                              wait_timeout=self.wait_timeout)
            made.append(harness)
            return harness.start() if start else harness

        yield make
        for harness in made:
            harness.close()
        for harness in made:
            if harness.running:
                harness.call("terminate")      # idempotent, by contract
            harness.check()

    @pytest.fixture
    def harness(self, make_harness) -> Harness:
        return make_harness()

    def require(self, harness: Harness, *capabilities: str) -> None:
        missing = [c for c in capabilities if c not in harness.capabilities]
        if missing:
            pytest.skip(f"pool declares no {', '.join(missing)} capability")

    def require_held_jobs(self, minimum: int = 1) -> None:
        if self._attr("runs_jobs_in_maintain", False):
            pytest.skip("jobs run inside maintain(): the supervisor cannot act while one runs")
        if self.concurrency < minimum:
            pytest.skip(f"needs concurrency of at least {minimum}")

    def require_limits(self) -> None:
        if not self.enforces_limits:
            pytest.skip("pool declares that it enforces no time limits")

    # -- lifecycle and plain running
    def test_started_pool_has_free_slots_and_json_info(self, harness):
        # Given a started pool
        # When asked for capacity and figures
        free = harness.call("free_slots")
        info = harness.call("info")
        # Then it can take work and its figures are JSON
        assert free >= 1
        assert isinstance(info, dict)
        json.dumps(info)

    def test_success(self, harness):
        # Given a started pool
        # When a task that returns its arguments runs
        job = harness.run("sample.echo", 1, "two", three=3)
        outcome = harness.wait_outcome(job)
        # Then it succeeds with the encoded value, after on_start
        assert value(outcome) == {"args": [1, "two"], "kwargs": {"three": 3}}
        assert outcome.exc_type == ""
        assert job.id in harness.started
        harness.check()

    def test_task_that_raises_is_failure_naming_the_type(self, harness):
        # Given a started pool
        # When a task raises SampleError("boom")
        outcome = harness.wait_outcome(harness.run("sample.fail", "boom"))
        # Then the outcome is FAILURE naming the type, the message and a traceback
        assert outcome.state == FAILURE
        assert outcome.exc_type == f"{SampleError.__module__}.SampleError"
        assert outcome.exc_message == "boom"
        assert "SampleError" in outcome.traceback
        harness.check()

    def test_many_tasks_get_exactly_one_outcome_each(self, harness):
        # Given a started pool
        # When many tasks, some failing, are submitted as fast as slots free up
        jobs = []
        for i in range(200):
            jobs.append(harness.run("sample.fail", str(i)) if i % 7 == 0
                        else harness.run("sample.echo", i))
        harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "all 200 outcomes")
        # Then each job has exactly one outcome, with its own result
        assert sorted(harness.outcomes) == sorted(j.id for j in jobs)
        for i, job in enumerate(jobs):
            outcome = harness.outcome(job)
            if i % 7 == 0:
                assert (outcome.state, outcome.exc_message) == (FAILURE, str(i))
            else:
                assert value(outcome)["args"] == [i]
        harness.check()

    def test_concurrency_is_reached(self, harness):
        # Given a pool of N slots
        n = self.concurrency
        meeting = harness.workdir / "meeting"
        meeting.mkdir()
        # When N tasks each wait until N of them have arrived
        jobs = [harness.run("sample.rendezvous", str(meeting), n, f"j{i}",
                            limit=self.wait_timeout) for i in range(n)]
        harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), f"{n} rendezvous")
        # Then all of them saw the others: N jobs really ran at once
        for job in jobs:
            assert value(harness.outcome(job))["seen"] >= n
        harness.check()

    # -- time limits
    def test_soft_limit_caught_by_task_returns_success(self, harness):
        self.require_limits()
        # Given a task that catches SoftTimeLimitExceeded and returns
        # When it runs with a soft limit (fired by the harness or by the pool's own timer)
        job = harness.run("sample.catch_soft", harness.path("soft"), limit=self.wait_timeout,
                          soft=0.5)
        outcome = harness.wait_outcome(job)
        # Then the exception reached the task, which returned normally
        assert value(outcome) == "caught"
        harness.check()

    def test_interrupt_raises_soft_limit_inside_task(self, harness):
        self.require(harness, "interrupt")
        self.require_held_jobs()
        # Given a running task that catches SoftTimeLimitExceeded
        marker = harness.path("soft")
        job = harness.run("sample.catch_soft", marker, limit=self.wait_timeout)
        harness.wait_file(marker)
        # When the supervisor interrupts it
        harness.call("interrupt", job.id)
        # Then the task caught it and returned SUCCESS
        assert value(harness.wait_outcome(job)) == "caught"
        harness.check()

    def test_hard_limit_ends_task_ignoring_soft_limit_and_next_job_runs(self, harness):
        self.require_limits()
        # Given a task that swallows its soft limit
        job = harness.run("sample.stubborn", harness.path("stubborn"), limit=self.wait_timeout,
                          soft=0.3, hard=1.0)
        # When its hard limit passes
        outcome = harness.wait_outcome(job)
        # Then it is FAILURE with TimeLimitExceeded, and the pool goes on with the next job
        assert_time_limit(outcome)
        assert value(harness.wait_outcome(harness.run("sample.ok"))) == "ok"
        harness.check()

    def test_hard_limit_ends_blocking_call(self, harness):
        self.require_limits()
        # Given a task stuck in one long blocking call
        job = harness.run("sample.block", harness.path("block"), self.blocking_seconds,
                          hard=0.5)
        # When its hard limit passes
        outcome = harness.wait_outcome(job)
        # Then it is FAILURE with TimeLimitExceeded and the next job still runs
        assert_time_limit(outcome)
        assert value(harness.wait_outcome(harness.run("sample.ok"))) == "ok"
        harness.check()

    def test_kill_after_ignored_interrupt_leaves_next_job_running(self, harness):
        self.require(harness, "interrupt", "kill")
        self.require_held_jobs(2)
        # Given a task that ignores its soft limit, and a second job running beside it
        gate = harness.gate()
        marker, other = harness.path("stubborn"), harness.path("other")
        stubborn_job = harness.run("sample.stubborn", marker, limit=self.wait_timeout)
        other_job = harness.run("sample.hold", other, gate, limit=self.wait_timeout)
        harness.wait_file(marker)
        harness.wait_file(other)
        harness.call("interrupt", stubborn_job.id)
        harness.wait_file(marker + ".soft")
        # When the supervisor kills it
        harness.call("kill", stubborn_job.id)
        # Then it is FAILURE with TimeLimitExceeded
        assert_time_limit(harness.wait_outcome(stubborn_job))
        # And the other job is still running, untouched, and ends normally once released
        assert harness.outcome(other_job) is None
        assert not os.path.exists(other + ".end")
        _touch(gate)
        assert value(harness.wait_outcome(other_job)) == "released"
        harness.check()

    def test_kill_frees_the_slot(self, harness):
        self.require(harness, "kill")
        self.require_held_jobs()
        # Given every slot busy with a held job
        gate = harness.gate()
        held = [harness.run("sample.hold", harness.path(f"held{i}"), gate,
                            limit=self.wait_timeout) for i in range(self.concurrency)]
        harness.wait_started(*held)
        busy_free = harness.call("free_slots")
        # When one is killed
        harness.call("kill", held[0].id)
        assert_time_limit(harness.wait_outcome(held[0]))
        # Then a slot comes back and a new job runs while the others are still held
        harness.wait_for(lambda: harness.call("free_slots") > busy_free, "a freed slot")
        assert value(harness.wait_outcome(harness.run("sample.ok"))) == "ok"
        assert all(harness.outcome(job) is None for job in held[1:])
        harness.check()

    def test_kill_pure_python_busy_loop(self, harness):
        self.require(harness, "kill")
        self.require_held_jobs()
        if not self._attr("preempts_busy_loops", True):
            pytest.skip("pool declares it cannot preempt a busy loop")
        # Given a task spinning in pure Python
        marker = harness.path("spin")
        job = harness.run("sample.spin", marker, limit=self.wait_timeout)
        harness.wait_file(marker)
        # When the supervisor kills it
        harness.call("kill", job.id)
        # Then it is FAILURE with TimeLimitExceeded and the pool goes on
        assert_time_limit(harness.wait_outcome(job))
        assert value(harness.wait_outcome(harness.run("sample.ok"))) == "ok"
        harness.check()

    def test_interrupt_and_kill_of_unknown_jobs_are_ignored(self, harness):
        # Given a started pool and a job that already ended
        done = harness.run("sample.ok")
        harness.wait_outcome(done)
        # When the supervisor interrupts or kills jobs that are not running
        # Then nothing happens (or NotSupported, for a capability the pool does not declare)
        for verb in ("interrupt", "kill"):
            for job_id in ("no-such-job", done.id):
                if verb in harness.capabilities:
                    harness.call(verb, job_id)
                else:
                    with pytest.raises(NotSupported):
                        harness.call(verb, job_id)
        assert len(harness.outcomes[done.id]) == 1
        assert value(harness.wait_outcome(harness.run("sample.ok"))) == "ok"
        harness.check()

    # -- stopping
    def test_stop_returns_jobs_that_never_started(self, harness):
        # Given a pool filled with held jobs, as far as free_slots() allows
        in_maintain = self._attr("runs_jobs_in_maintain", False)
        gate = harness.gate()
        jobs = []
        while harness.call("free_slots") > 0 and len(jobs) < 4 * self.concurrency + 4:
            jobs.append(harness.submit(harness.job(
                "sample.hold", harness.path(f"held{len(jobs)}"), gate, limit=self.wait_timeout),
                wait=False))
        if not in_maintain:
            harness.wait_for(lambda: len(harness.started) >= min(self.concurrency, len(jobs)),
                             "the held jobs to start")
        # When stopped warm, the gate opening only once stop() is under way
        opener = threading.Timer(0.2, _touch, (gate,))
        opener.start()
        try:
            returned = harness.call("stop", self.wait_timeout)
        finally:
            opener.cancel()
        with harness.cond:
            harness.returned_by_stop.update(returned)
        # Then it hands back exactly the jobs that never started, and they get no outcome
        assert set(returned) <= {j.id for j in jobs}
        assert len(set(returned)) == len(returned)
        for job in jobs:
            if job.id in returned:
                assert job.id not in harness.started
                assert harness.outcome(job) is None
            else:
                assert job.id in harness.started, f"{job.id} neither started nor handed back"
        # And every job that started ended normally with one outcome
        ran = [j for j in jobs if j.id not in returned]
        harness.wait_for(lambda: all(harness.outcome(j) for j in ran), "the running jobs",
                         tick=False)
        assert all(value(harness.outcome(j)) == "released" for j in ran)
        if in_maintain:
            assert returned == [j.id for j in jobs]
        harness.check()

    def test_terminate_is_idempotent_and_reports_nothing_for_running_jobs(self, harness):
        # Given running (or queued) jobs that cannot end on their own yet
        gate = harness.gate()
        held = [harness.run("sample.hold", harness.path("held"), gate, limit=self.wait_timeout)]
        if not self._attr("runs_jobs_in_maintain", False):
            harness.wait_started(*held)
        # When terminated twice
        harness.call("terminate")
        harness.call("terminate")
        # Then no outcome was reported for them, and the pool still answers info()
        assert harness.outcome(held[0]) is None
        json.dumps(harness.call("info"))
        harness.check()

    # -- capacity
    def test_grow_adds_slots_or_is_not_supported(self, harness):
        if "grow" not in harness.capabilities:
            with pytest.raises(NotSupported):
                harness.call("grow", 1)
            return
        # Given a pool of N slots
        before = harness.call("free_slots")
        # When grown by 2
        harness.call("grow", 2)
        harness.wait_for(lambda: harness.call("free_slots") >= before + 2, "two more slots")
        # Then N + 2 jobs run at once
        n = self.concurrency + 2
        meeting = harness.workdir / "meeting"
        meeting.mkdir()
        jobs = [harness.run("sample.rendezvous", str(meeting), n, f"j{i}",
                            limit=self.wait_timeout) for i in range(n)]
        harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), f"{n} rendezvous")
        assert all(value(harness.outcome(j))["seen"] >= n for j in jobs)
        harness.check()

    def test_shrink_removes_slots_or_is_not_supported(self, harness):
        if "shrink" not in harness.capabilities:
            with pytest.raises(NotSupported):
                harness.call("shrink", 1)
            return
        # Given a pool with some free slots
        before = harness.call("free_slots")
        # When shrunk by one, then asked to go below one
        harness.call("shrink", 1)
        if self.concurrency > 1:
            harness.wait_for(lambda: harness.call("free_slots") < before, "one slot fewer")
        harness.call("shrink", 10_000)
        # Then it keeps at least one slot, and jobs still run
        harness.wait_for(lambda: harness.call("free_slots") >= 1, "the last slot")
        jobs = [harness.run("sample.echo", i) for i in range(20)]
        harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "20 outcomes")
        assert [value(harness.outcome(j))["args"] for j in jobs] == [[i] for i in range(20)]
        harness.check()

    def test_recycle_or_not_supported(self, make_harness):
        options = PoolOptions(max_tasks_per_child=2)
        harness = make_harness(options=options, start=False)
        if "recycle" not in harness.capabilities:
            # Given a pool that cannot recycle, When started with max_tasks_per_child,
            # Then it refuses with NotSupported rather than ignoring the option
            with pytest.raises(NotSupported):
                harness.start()
            return
        # Given a pool recycling every two tasks
        harness.start()
        # When many tasks run
        jobs = [harness.run("sample.whoami") for _ in range(4 * self.concurrency + 2)]
        harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "every outcome")
        # Then all succeed, each once
        assert all(value(harness.outcome(j)) for j in jobs)
        harness.check()

    def test_info_is_json_while_busy(self, harness):
        # Given a pool running a job (or with one queued)
        gate = harness.gate()
        job = harness.run("sample.hold", harness.path("held"), gate, limit=self.wait_timeout)
        if not self._attr("runs_jobs_in_maintain", False):
            harness.wait_started(job)
        # When asked for figures, Then they are a JSON-safe dict naming the pool
        info = harness.call("info")
        assert json.loads(json.dumps(info)) == info
        assert "pool" in info


# --------------------------------------------------------------------------- command line

_MODULE = '''\
from pools import resolve
from pools.testing import PoolTests


class TestConformance(PoolTests):
    pool_class = resolve({path!r})
    concurrency = {concurrency!r}
    wait_timeout = {wait_timeout!r}
'''

_GEVENT_BOOT = ("from gevent import monkey; monkey.patch_all()\n"
                "import sys, pytest\n"
                "sys.exit(pytest.main(sys.argv[1:]))\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m pools.testing pkg.mod:Class``: run the suite on a pool; pytest's exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m pools.testing",
        description="Run the pool conformance suite against a pool class. "
                    "Arguments not listed here are passed to pytest.")
    parser.add_argument("pool", help="package.module:Class, a pool alias, or 'custom'")
    parser.add_argument("-c", "--concurrency", type=int, default=PoolTests.concurrency)
    parser.add_argument("--wait-timeout", type=float, default=PoolTests.wait_timeout,
                        help="ceiling of every wait, seconds (default %(default)s)")
    parser.add_argument("--gevent", action="store_true",
                        help="run pytest in a gevent monkey-patched interpreter")
    args, pytest_args = parser.parse_known_args(argv)
    from pools import resolve
    from engine.exceptions import ConfigurationError
    try:
        pool_class = resolve(args.pool)   # one clear line for a bad path, before pytest starts
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    if pool_class.needs_own_process and not args.gevent:
        print(f"note: {pool_class.__name__} needs a process of its own "
              "(for a gevent pool, add --gevent)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pool-conformance-") as tmp:
        module = Path(tmp) / "test_pool_conformance.py"
        module.write_text(_MODULE.format(path=args.pool, concurrency=args.concurrency,
                                         wait_timeout=args.wait_timeout))
        command = [str(module), "-p", "no:cacheprovider", "--rootdir", tmp, *pytest_args]
        if args.gevent:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
            return subprocess.call([sys.executable, "-c", _GEVENT_BOOT, *command], env=env)
        return int(pytest.main(command))


if __name__ == "__main__":
    sys.exit(main())
