"""Lanes: several pools under one supervisor, a gevent lane in a child process of its own.

Every test runs a real ``engine run --lane ...`` and asks the tasks themselves where they
ran (worker name, pid, parent pid, thread, gevent patching).
"""

from __future__ import annotations

import os
import signal
import uuid

import psutil
import pytest

from engine import control
from tests.conftest import DEADLINE, wait_for, wait_started


@pytest.fixture
def lanes_app(env):
    from tests.apps.lanes import app
    app.close()   # connections are remade with this test's environment
    yield app
    app.close()


def _name() -> str:
    return f"lanes-{uuid.uuid4().hex[:8]}"


def _stats(app, name: str) -> dict:
    # retried: a worker that just logged "ready" may not have subscribed to control yet
    replies = wait_for(lambda: control.broadcast(app, "stats", destination=[name], timeout=10),
                       message=f"stats from {name}")
    return replies[0]["reply"]


def _lane(stats: dict, lane: str) -> dict:
    return next(entry for entry in stats["lanes"] if entry["name"] == lane)


def _lane_process(app, name: str, lane: str) -> dict:
    """pool_info of an isolated lane once its process has sent a snapshot."""
    return wait_for(lambda: (lambda info: info if info.get("child_pool") else None)(
        _lane(_stats(app, name), lane)["pool_info"]), message=f"lane {lane} figures")


def _gone(procs: list[psutil.Process]) -> bool:
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_each_lane_runs_its_queues_in_its_own_pool(lanes_app, run_worker):
    # Given a worker with a prefork, a gevent, a solo and a threads lane
    from tests.apps.lanes import where
    name = _name()
    worker = run_worker("--lane", "cpu=prefork:2", "--lane", "io,mail=gevent:20",
                        "--lane", "legacy=solo:1", "--lane", "th=threads:2", "-n", name,
                        app="tests.apps.lanes")

    # When a task goes to each queue
    ran = {q: where.apply_async(queue=q).get(timeout=DEADLINE)
           for q in ("cpu", "io", "mail", "legacy", "th")}

    # Then each ran in its lane's pool
    assert ran["cpu"]["hostname"] == name
    assert ran["cpu"]["ppid"] == worker.pid and not ran["cpu"]["gevent"]
    for q in ("io", "mail"):
        assert ran[q]["hostname"] == f"{name}.io+mail"
        assert ran[q]["gevent"], "the gevent lane's process is monkey-patched"
        assert ran[q]["ppid"] == worker.pid, "the lane process is the supervisor's child"
    assert ran["io"]["pid"] == ran["mail"]["pid"]
    assert ran["legacy"]["pid"] == worker.pid and ran["legacy"]["thread"] == "MainThread"
    assert not ran["legacy"]["gevent"], "the supervisor itself is never monkey-patched"
    assert ran["th"]["pid"] == worker.pid and ran["th"]["thread"] != "MainThread"

    # and inspect stats shows every lane, the isolated one with its process's figures
    info = _lane_process(lanes_app, name, "io,mail")
    assert info["isolated"] and info["pid"] == ran["io"]["pid"]
    wait_for(lambda: _lane(_stats(lanes_app, name), "io,mail")["processed"] >= 2,
             message="the gevent lane's processed count")
    stats = _stats(lanes_app, name)
    assert [lane["name"] for lane in stats["lanes"]] == ["cpu", "io,mail", "legacy", "th"]
    assert _lane(stats, "cpu")["processed"] >= 1

    # and pool-grow by lane name reaches the lane process
    replies = control.broadcast(lanes_app, "pool-grow", destination=[name], timeout=10,
                                n=3, lane="io,mail")
    assert replies and replies[0]["reply"].get("concurrency") == 23
    wait_for(lambda: _lane(_stats(lanes_app, name), "io,mail")["pool_info"]
             ["child_pool"]["concurrency"] == 23, message="the lane process to grow")

    # and a warm stop ends the lane process too
    children = worker.children()
    assert worker.stop() == 0
    wait_for(lambda: _gone(children), message="the lane processes to end")


def test_a_blocked_gevent_lane_does_not_slow_the_prefork_lane(lanes_app, run_worker, tmp_path):
    # Given a gevent lane whose hub is blocked by a CPU-bound task
    from tests.apps.lanes import burn, where
    name = _name()
    run_worker("--lane", "cpu=prefork:2", "--lane", "io=gevent:10", "-n", name,
               app="tests.apps.lanes")
    marker = tmp_path / "burning"
    blocker = burn.apply_async((40,), {"marker": str(marker)}, queue="io")
    wait_for(marker.exists, message="the blocking task to start")

    # When tasks go to the prefork lane
    results = [where.apply_async(queue="cpu") for _ in range(10)]

    # Then they all finish while the gevent lane is still blocked
    assert all(r.get(timeout=DEADLINE)["hostname"] == name for r in results)
    assert not blocker.ready()


def test_a_killed_lane_process_comes_back_and_loses_nothing(lanes_app, run_worker):
    # Given a gevent lane process running tasks
    from tests.apps.lanes import nap, where
    name = _name()
    run_worker("--lane", "cpu=prefork:1", "--lane", "io=gevent:20", "-n", name,
               app="tests.apps.lanes")
    first = _lane_process(lanes_app, name, "io")["pid"]
    results = [nap.apply_async((1.5,), queue="io") for _ in range(40)]
    wait_started(lanes_app, results[0].id)

    # When its process is killed
    os.kill(first, signal.SIGKILL)

    # Then a new process of the same name takes over and every task completes
    assert all(r.get(timeout=DEADLINE) for r in results)
    info = wait_for(lambda: (lambda i: i if i["pid"] != first and i["restarts"] >= 1 else None)(
        _lane(_stats(lanes_app, name), "io")["pool_info"]), message="the restarted lane")
    again = where.apply_async(queue="io").get(timeout=DEADLINE)
    assert again["pid"] == info["pid"] != first
    assert again["hostname"] == f"{name}.io"


def test_warm_shutdown_drains_every_lane(lanes_app, run_worker):
    # Given every lane busy, with more waiting behind
    from tests.apps.lanes import nap
    name = _name()
    lanes = ("--lane", "cpu=prefork:2", "--lane", "io=gevent:10", "--lane", "legacy=solo:1")
    worker = run_worker(*lanes, "-n", name, app="tests.apps.lanes")
    sent = {q: [nap.apply_async((1.5,), queue=q) for _ in range(n)]
            for q, n in (("cpu", 6), ("io", 40), ("legacy", 3))}
    for q, results in sent.items():
        wait_started(lanes_app, results[0].id)

    # When the supervisor gets SIGTERM
    children = worker.children()
    worker.signal(signal.SIGTERM)

    # Then it exits 0 with every lane process gone, the started tasks finished
    assert worker.wait() == 0
    wait_for(lambda: _gone(children), message="every lane process to end")
    for q, results in sent.items():
        assert results[0].state == "SUCCESS", f"the running task of lane {q} finished"

    # and whatever had not run was given back: a new worker runs all of it
    run_worker(*lanes, "-n", _name(), app="tests.apps.lanes")
    for results in sent.values():
        assert all(r.get(timeout=DEADLINE) for r in results)


def test_a_memory_bloated_gevent_lane_is_recycled_without_losing_a_task(lanes_app, run_worker):
    # Given a gevent lane with max-memory, and a task that makes its process grow past it
    from tests.apps.lanes import bloat, nap, where
    name = _name()
    run_worker("--lane", "cpu=prefork:1", "--lane", "io=gevent:10,max-memory=150000",
               "-n", name, app="tests.apps.lanes")
    first = _lane_process(lanes_app, name, "io")["pid"]
    fat = bloat.apply_async((200,), queue="io")
    naps = [nap.apply_async((0.5,), queue="io") for _ in range(60)]

    # Then the process is drained and replaced, and every task completes
    assert fat.get(timeout=DEADLINE) == first
    assert all(r.get(timeout=DEADLINE) for r in naps)
    info = wait_for(lambda: (lambda i: i if i["recycles"] >= 1 else None)(
        _lane(_stats(lanes_app, name), "io")["pool_info"]), message="the recycle")
    assert info["pid"] != first and info["restarts"] == 0
    assert where.apply_async(queue="io").get(timeout=DEADLINE)["pid"] == info["pid"]


def test_killing_the_supervisor_leaves_no_lane_process_behind(lanes_app, run_worker):
    # Given a worker with a prefork and a gevent lane
    from tests.apps.lanes import where
    worker = run_worker("--lane", "cpu=prefork:2", "--lane", "io=gevent:10", "-n", _name(),
                        app="tests.apps.lanes")
    assert where.apply_async(queue="io").get(timeout=DEADLINE)["gevent"]
    children = worker.children()
    assert len(children) >= 3

    # When the supervisor is killed outright
    worker.proc.kill()
    worker.proc.wait()

    # Then its children die with it (parent-death signal), the lane process included
    wait_for(lambda: _gone(children), message="the children to die with the supervisor")


def test_a_threads_lane_with_max_memory_runs_in_a_process_of_its_own(lanes_app, run_worker):
    # Given a threads lane with max-memory (threads cannot recycle one slot at a time)
    from tests.apps.lanes import where
    name = _name()
    worker = run_worker("--lane", "cpu=prefork:1", "--lane", "th=threads:4,max-memory=500000",
                        "-n", name, app="tests.apps.lanes")

    # When a task goes to its queue
    ran = where.apply_async(queue="th").get(timeout=DEADLINE)

    # Then it ran on a thread of a child process that the supervisor can recycle whole
    assert ran["hostname"] == f"{name}.th" and ran["ppid"] == worker.pid
    assert ran["thread"] != "MainThread" and not ran["gevent"]
    assert _lane_process(lanes_app, name, "th")["max_memory"] == 500000
