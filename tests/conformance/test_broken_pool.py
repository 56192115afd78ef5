"""The suite must catch broken pools: each one below breaks one rule of ``pools.base``.

Each runs through ``python -m pools.testing`` in a subprocess (with a short wait ceiling), and
the test asserts that the case guarding that rule failed.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.exceptions import TimeLimitExceeded
from pools.base import Outcome
from pools.solo import SoloPool
from pools.threads import ThreadsPool

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class DropsOutcome(ThreadsPool):
    """Loses every tenth outcome."""

    def _deliver(self, outcome):
        self._delivered = getattr(self, "_delivered", 0) + 1
        if self._delivered % 10:
            super()._deliver(outcome)


class ReportsTwice(ThreadsPool):
    """Reports every outcome twice."""

    def _deliver(self, outcome):
        super()._deliver(outcome)
        super()._deliver(outcome)


class IgnoresInterrupt(ThreadsPool):
    """Declares "interrupt" but never raises anything in the task."""

    def interrupt(self, job_id):
        pass


class KillKeepsSlot(ThreadsPool):
    """Reports the kill but neither ends the task nor frees its slot."""

    def kill(self, job_id):
        self._deliver(Outcome.from_exception(job_id, TimeLimitExceeded("hard time limit")))


class StopLosesQueued(SoloPool):
    """Warm stop drops the queued jobs instead of handing them back."""

    def stop(self, timeout):
        super().stop(timeout)
        return []


class SilentGrow(ThreadsPool):
    """Cannot grow, but ignores grow() instead of raising NotSupported."""

    capabilities = ThreadsPool.capabilities - {"grow"}

    def grow(self, n):
        pass


class SkipsOnStart(ThreadsPool):
    """Never tells the supervisor that a job started."""

    def _execute(self, job):
        return self.runner.execute(job)


CASES = [
    ("DropsOutcome", "many_tasks", "test_many_tasks_get_exactly_one_outcome_each"),
    ("ReportsTwice", "test_success", "test_success"),
    ("IgnoresInterrupt", "interrupt_raises", "test_interrupt_raises_soft_limit_inside_task"),
    ("KillKeepsSlot", "kill_frees", "test_kill_frees_the_slot"),
    ("StopLosesQueued", "stop_returns", "test_stop_returns_jobs_that_never_started"),
    ("SilentGrow", "grow", "test_grow_adds_slots_or_is_not_supported"),
    ("SkipsOnStart", "test_success", "test_success"),
]


@pytest.mark.parametrize("pool, selection, guard", CASES, ids=[c[0] for c in CASES])
def test_suite_fails_on_broken_pool(pool, selection, guard, tmp_path):
    # Given a pool that breaks one rule
    report = tmp_path / "report.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(HERE), str(ROOT), os.environ.get("PYTHONPATH")])))
    # When the conformance suite runs on it
    proc = subprocess.run(
        [sys.executable, "-m", "pools.testing", f"test_broken_pool:{pool}", "-c", "2",
         "--wait-timeout", "3", "-q", "-k", selection, f"--junitxml={report}"],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    output = proc.stdout[-4000:] + proc.stderr[-2000:]
    # Then pytest fails, and the case guarding that rule is among the failures
    assert proc.returncode == 1, output
    failed = {case.get("name") for case in ET.parse(report).iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None}
    assert guard in failed, output
