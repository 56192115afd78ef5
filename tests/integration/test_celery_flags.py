"""Celery's worker flags on a real ``engine run``: their nearest meaning, or one log line
saying they do nothing; a combination we cannot honour is one clear line and exit 2."""

from __future__ import annotations

import pytest

from tests.apps.basic import add
from tests.conftest import wait_for
from tests.integration.test_cli import engine


def _stopped_cleanly(worker) -> None:
    assert worker.stop() == 0, worker.tail()
    assert "Traceback" not in worker.log


def test_no_op_flags_each_say_so_in_one_line(run_worker, app):
    worker = run_worker("--pool", "threads", "-O", "fair", "-E", "--without-gossip",
                        "--without-mingle", "--without-heartbeat", "--prefetch-multiplier",
                        "3", "-n", "celeryish")
    assert add.delay(2, 3).get(timeout=60) == 5
    log = worker.log
    for line in ("-O fair: no-op", "-E: no-op", "--without-gossip: no-op",
                 "--without-mingle: no-op", "--without-heartbeat: no-op",
                 "--prefetch-multiplier 3: read as --prefetch 3"):
        assert log.count(line) == 1, line
    _stopped_cleanly(worker)


def test_autoscale_runs_max_slots_and_c_wins(run_worker, app):
    worker = run_worker("--pool", "threads", "--autoscale", "3,1", "-n", "scaled")
    inspect = app.control.inspect(timeout=5)
    wait_for(inspect.ping, message="the worker to answer")
    assert inspect.stats()["scaled"]["pool"]["max-concurrency"] == 3
    assert "--autoscale 3,1: no autoscaling here; running 3 slots" in worker.log
    _stopped_cleanly(worker)
    other = run_worker("--pool", "threads", "--autoscale", "3,1", "-c", "2", "-n", "fixed")
    wait_for(lambda: (inspect.stats() or {}).get("fixed"), message="fixed to answer")
    assert inspect.stats()["fixed"]["pool"]["max-concurrency"] == 2
    _stopped_cleanly(other)


def test_purge_deletes_what_waited_before_the_worker_started(run_worker, app):
    stale = [add.delay(1, 1) for _ in range(3)] + [add.apply_async((1, 1), countdown=600)]
    worker = run_worker("--pool", "threads", "--purge")
    assert "--purge: deleted 4 waiting message(s) of default" in worker.log
    assert add.delay(2, 2).get(timeout=60) == 4
    assert all(r.state == "PENDING" for r in stale)
    _stopped_cleanly(worker)


def test_exclude_queues_takes_them_out_of_q(run_worker, app):
    worker = run_worker("--pool", "threads", "-Q", "a,b,c", "-X", "b", "-n", "picky")
    inspect = app.control.inspect(timeout=5)
    wait_for(inspect.ping, message="the worker to answer")
    assert [q["name"] for q in inspect.active_queues()["picky"]] == ["a", "c"]
    assert "-X b: consuming a, c" in worker.log
    assert add.apply_async((1, 2), queue="c").get(timeout=60) == 3
    _stopped_cleanly(worker)


@pytest.mark.parametrize("args, text", [
    (["--pool", "threads", "--max-tasks-per-child", "5"],
     "the threads pool cannot recycle its slots"),
    (["--pool", "solo", "--max-tasks-per-child", "5"], "the solo pool cannot recycle"),
    (["-Q", "a", "-X", "a"], "-X a excludes every queue of this worker (a)"),
    (["--lane", "a=threads:2", "-X", "a"], "-X works with -Q or the default queue"),
    (["-E", "--no-events"], "-E and --no-events contradict each other"),
    (["--autoscale", "ten"], "expected MAX,MIN"),
    (["--prefetch-multiplier", "-1"], "expected a whole number"),
    (["-O", "fastest"], "invalid choice"),
])
def test_what_cannot_be_honoured_is_one_line_and_exit_2(env, args, text):
    result = engine("run", "-A", "tests.apps.basic", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
