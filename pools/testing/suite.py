"""``PoolTests``: the conformance cases every pool must pass, as a pytest mixin for authors.

Owns the cases and the knobs a subclass sets (``pool_class``, ``concurrency``, the declared
exemptions); the supervisor's side is ``pools.testing.harness`` and the work it submits is
``pools.testing.tasks``. No case asserts on timings: deadlines only turn hangs into failures.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from engine.exceptions import NotSupported
from pools.base import FAILURE, Pool, PoolOptions
from pools.testing.harness import Harness, assert_time_limit, value
from pools.testing.tasks import SampleError, touch


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

    @staticmethod
    def declares_or_refuses(harness: Harness, verb: str) -> bool:
        """True if the pool declares ``verb``; if not, asking for it must raise NotSupported."""
        if verb in harness.capabilities:
            return True
        with pytest.raises(NotSupported):
            harness.call(verb, 1)
        return False

    def assert_overlap(self, harness: Harness, n: int) -> None:
        """Run ``n`` rendezvous jobs, each waiting for all ``n``: proves ``n`` ran at once."""
        meeting = harness.workdir / "meeting"
        meeting.mkdir()
        jobs = [harness.run("sample.rendezvous", str(meeting), n, f"j{i}",
                            limit=self.wait_timeout) for i in range(n)]
        harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), f"{n} rendezvous")
        for job in jobs:
            assert value(harness.outcome(job))["seen"] >= n
        harness.check()

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
        # When N tasks each wait until N of them have arrived
        # Then all of them saw the others: N jobs really ran at once
        self.assert_overlap(harness, self.concurrency)

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
        touch(gate)
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
        opener = threading.Timer(0.2, touch, (gate,))
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
        if not self.declares_or_refuses(harness, "grow"):
            return
        # Given a pool of N slots
        before = harness.call("free_slots")
        # When grown by 2
        harness.call("grow", 2)
        harness.wait_for(lambda: harness.call("free_slots") >= before + 2, "two more slots")
        # Then N + 2 jobs run at once
        self.assert_overlap(harness, self.concurrency + 2)

    def test_shrink_removes_slots_or_is_not_supported(self, harness):
        if not self.declares_or_refuses(harness, "shrink"):
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
