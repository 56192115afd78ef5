"""A worker paused (SIGSTOP) for longer than ``worker_lost_after`` looks lost: a survivor
reclaims and runs its messages. When it comes back (SIGCONT) it must not start the ones it
had buffered: they are someone else's now."""

from __future__ import annotations

import signal
import time

import pytest

from tests.apps.reliable import logged_sleep
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, rapp, runs  # noqa: F401

TASKS = 16


@pytest.mark.parametrize("pool", ["threads", "prefork", "asyncio"])
def test_a_paused_worker_does_not_run_what_others_took(rapp, run_worker, pool):
    env = {"TEST_LOST_AFTER": "3"}
    # Given a worker that holds a deep buffer (prefetch 8 on two slots, queued in its pool
    # past the lane's buffer), and a survivor
    zombie = run_worker("--pool", pool, "-c", "2", "--prefetch", "8", "-n", "zombie",
                        app=APP, extra_env=env)
    results = [logged_sleep.delay(f"p{i}", 0.4) for i in range(TASKS)]
    stream = rapp.broker.keys.queue("default")

    def pending_on(name: str) -> int:
        for info in rapp.client.xinfo_consumers(stream, "engine"):
            if info["name"].decode() == name:
                return int(info["pending"])
        return 0
    wait_for(lambda: pending_on("zombie") >= 6 and sum(bool(runs(rapp, f"p{i}"))
                                                       for i in range(TASKS)) >= 2,
             message="the first worker to hold a buffer and run")
    survivor = run_worker("--pool", "threads", "-c", "4", "-n", "survivor", app=APP,
                          extra_env=env)
    # When it is paused until the survivor has reclaimed everything it held (the signal
    # stops the supervisor: a prefork pool's children go on with what they run)
    paused = time.time()
    zombie.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: pending_on("zombie") == 0, message="the survivor to reclaim")
    finally:
        zombie.signal(signal.SIGCONT)
    # Then every task completes
    assert rapp.gather(results, timeout=90) == [f"p{i}" for i in range(TASKS)]
    # And the zombie started nothing that the survivor ran too, neither while its loop was
    # stopped (past the moment it stopped: children wait for the loop to turn) nor after it
    # came back (what it was running when paused may run twice: that is at-least-once for
    # running tasks)
    twice = []
    for i in range(TASKS):
        lines = [line.split() for line in runs(rapp, f"p{i}")]
        hosts = [host for _, host, _ in lines]
        late = [line for line in lines if line[1] == "zombie" and float(line[2]) > paused + 0.5]
        if late and "survivor" in hosts:
            twice.append((i, lines))
    assert not twice, (twice, zombie.log)
    assert zombie.proc.poll() is None and survivor.proc.poll() is None
    assert "reclaimed by another worker while this one was paused" in zombie.log
