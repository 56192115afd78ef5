"""A second message with the id of a running task waits aside; its lane goes on (issue 14:
a duplicate at the head of the buffer used to stop the lane with slots free)."""

from __future__ import annotations

from tests.apps.reliable import logged_sleep
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, rapp, runs  # noqa: F401


def test_a_duplicate_of_a_running_id_does_not_hold_up_the_tasks_behind_it(rapp, run_worker):
    # Given a worker with free slots running a long task X
    worker = run_worker("--pool", "threads", "-c", "4", app=APP)
    long = logged_sleep.delay("long", 600)
    wait_for(lambda: runs(rapp, "long"), message="the long task to start")
    # When a copy of X arrives first, followed by quick tasks
    copy = logged_sleep.apply_async(("long", 0), task_id=long.id)
    quick = [logged_sleep.delay(f"quick{i}", 0) for i in range(6)]
    # Then the quick tasks run while X still runs (before the fix they waited for X)
    assert [r.get(timeout=60) for r in quick] == [f"quick{i}" for i in range(6)]
    assert long.state == "STARTED" or not long.ready()
    # And once X ends (revoked), its copy is settled too, and the worker is alive
    long.revoke(terminate=True)
    wait_for(lambda: copy.state == "REVOKED", message="the copy to be settled")
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="all acked")
    assert len(runs(rapp, "long")) == 1
    assert worker.proc.poll() is None
