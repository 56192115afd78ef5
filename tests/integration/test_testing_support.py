"""``engine.testing``: the private Redis and the processes it owns leave nothing behind."""

from __future__ import annotations

import signal

import psutil
import pytest
import redis

from engine.testing import DEADLINE, private_redis, wait_for
from tests.apps.basic import leave_sleepers, sleep
from tests.conftest import wait_started


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_private_redis_on_a_loopback_port_is_stopped_on_exit():
    # Given a private Redis asked for on TCP (for clients that cannot use a unix socket)
    with private_redis(prefix="engine-tcp-", aof=False, tcp=True) as server:
        # Then it answers on 127.0.0.1 at its own port, with no socket file
        assert server.url == f"redis://127.0.0.1:{server.port}/0" and server.port > 0
        assert server.socket is None
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=2)
        assert client.ping()
        client.close()
        process = psutil.Process(server.proc.pid)
    # When the block ends, Then the server process is gone and the port refuses
    assert _gone(process)
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=2).ping()


def test_kill_all_leaves_no_process_behind(app, run_worker):
    # Given a worker that left one process in a session of its own (outside its group) and
    # one orphan in its group (no longer under it)
    worker = run_worker("--pool", "solo")
    pids = leave_sleepers.delay(300).get(timeout=DEADLINE)
    sleepers = [psutil.Process(pids["detached"]), psutil.Process(pids["orphan"])]
    try:
        under = {child.pid for child in worker.children()}
        assert pids["detached"] in under and pids["orphan"] not in under
        # When the worker is killed with kill_all
        worker.kill_all()
        # Then both went with it: the first as a descendant, the second by its group
        assert worker.proc.returncode == -signal.SIGKILL
        wait_for(lambda: all(_gone(p) for p in sleepers), message="the sleepers to be killed")
    finally:
        for process in sleepers:   # ours: never leave them running if the test failed
            if not _gone(process):
                process.kill()


def test_close_kills_a_worker_that_does_not_stop_within_its_grace(app, run_worker):
    # Given a worker busy with a long task (a warm stop waits for it)
    worker = run_worker("--pool", "prefork", "-c", "1")
    result = sleep.delay(300)
    wait_started(app, result.id)
    children = worker.children()
    assert children
    # When closed with a short grace
    worker.close(grace=0.5)
    # Then it was killed, and its pool child with it; the log is closed
    assert worker.proc.returncode == -signal.SIGKILL
    wait_for(lambda: all(_gone(c) for c in children), message="the pool child to die")
    assert worker.log_file.closed
