"""The conformance suite on the gevent pool, which needs a monkey-patched process.

Collected normally (unpatched), this module holds one test that re-runs this very file in a
fresh interpreter patched by ``gevent.monkey.patch_all()`` first thing; there, the suite and
the gevent-only cases below are defined and run.
"""

import os
import subprocess
import sys

import gevent.monkey
import pytest

from engine.exceptions import ConfigurationError
from pools.gevent import GeventPool
from pools.testing import Harness, PoolTests, SampleRunner, sample_task, value

PATCHED = gevent.monkey.is_module_patched("socket")
BOOT = ("from gevent import monkey; monkey.patch_all()\n"
        "import sys, pytest\n"
        "sys.exit(pytest.main(sys.argv[1:]))\n")


if not PATCHED:

    def test_conformance_in_monkey_patched_process():
        # Given a fresh interpreter patched before anything else is imported
        command = [sys.executable, "-c", BOOT, __file__, "-q", "-p", "no:cacheprovider",
                   "--noconftest", "-rfEs"]
        # When the suite runs there (subprocess.run kills only that child if it hangs)
        proc = subprocess.run(command, capture_output=True, text=True, timeout=280,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                  os.path.abspath(__file__)))))
        # Then it passes, and it did run the suite
        report = proc.stdout[-6000:] + proc.stderr[-3000:]
        assert proc.returncode == 0, report
        assert " passed" in proc.stdout and "failed" not in proc.stdout.splitlines()[-1], report

    def test_start_refuses_an_unpatched_process():
        # Given a process that was not monkey-patched
        pool = GeventPool(4, lambda outcome: None, runner=SampleRunner())
        # When the pool starts, Then it refuses with a clear ConfigurationError
        with pytest.raises(ConfigurationError, match="monkey"):
            pool.start()

else:
    import gevent.event

    class TestGeventPool(PoolTests):
        pool_class = GeventPool
        concurrency = 50

    _arrivals = {"count": 0}
    _everyone_here = gevent.event.Event()

    @sample_task("gevent.barrier")
    def barrier(n, limit=60.0):
        _arrivals["count"] += 1
        if _arrivals["count"] >= n:
            _everyone_here.set()
        return _everyone_here.wait(limit)

    @sample_task("gevent.block_hub")
    def block_hub(seconds):
        gevent.monkey.get_original("time", "sleep")(seconds)   # C call, hub frozen
        return "unblocked"

    def test_a_thousand_greenlets_run_at_once(tmp_path):
        # Given a gevent pool of 1000
        harness = Harness(GeventPool, 1000, tmp_path).start()
        try:
            # When 1000 tasks each wait for all 1000 to have arrived
            jobs = [harness.run("gevent.barrier", 1000) for _ in range(1000)]
            harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "1000 outcomes")
            # Then every one of them saw the barrier open
            assert all(value(harness.outcome(j)) is True for j in jobs)
            harness.check()
        finally:
            harness.close()

    def test_task_blocking_the_hub_is_reported(tmp_path):
        # Given a gevent pool
        harness = Harness(GeventPool, 2, tmp_path).start()
        try:
            # When a task blocks the hub in a C call
            job = harness.run("gevent.block_hub", 1.0)
            assert value(harness.wait_outcome(job)) == "unblocked"
            # Then info() reports it, naming the job
            harness.wait_for(lambda: harness.call("info")["hub_blocked"] >= 1,
                             "the monitor's report")
            blocks = harness.call("info")["recent_hub_blocks"]
            assert job.id in [block["job"] for block in blocks]
            harness.check()
        finally:
            harness.close()
