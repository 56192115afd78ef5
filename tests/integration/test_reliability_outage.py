"""Redis outages: a worker rides out a Redis restart and dropped connections (its fetch,
heartbeat and control threads reconnect; running tasks go on; results and acks are held and
written once Redis is back); a producer gets a clear ConnectionError instead of hanging.
Each test runs its own Redis: the session's server is shared by every test."""

from __future__ import annotations

import pytest

from engine import control
from engine.exceptions import BrokerUnavailable
from tests.apps.reliable import logged_sleep
from tests.conftest import wait_for
from tests.integration.test_metrics import by, metrics_url, scrape
from tests.integration.reliability_helpers import APP, own_redis, rapp, runs  # noqa: F401


def _all_threads_alive(rapp, name: str, since: float) -> None:
    # fetch: a task sent now runs
    assert logged_sleep.delay(f"after-{since}", 0).get(timeout=60) == f"after-{since}"
    # heartbeat: the worker's beat is newer than the outage
    wait_for(lambda: (rapp.client.zscore(rapp.broker.keys.workers, name) or 0) > since,
             message="a heartbeat after the outage")
    # control: the worker answers a broadcast
    wait_for(lambda: control.broadcast(rapp, "ping", timeout=1.0), message="a control reply")


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_worker_rides_out_a_redis_restart(rapp, own_redis, run_worker, pool):
    # Given a worker with four tasks running, whose clients retry a command once (the
    # default six retries, each reconnecting with its own retries, take about a minute to
    # give up on a blocked fetch; what the worker does once they give up is the same)
    worker = run_worker("--pool", pool, "-c", "4", "-n", "rider", "--metrics-port", "0",
                        app=APP, extra_env=dict(own_redis.env, TEST_CONNECTION_RETRIES="1"))
    url = metrics_url(worker)
    tasks = [logged_sleep.delay(f"o{i}", 3) for i in range(4)]
    wait_for(lambda: all(runs(rapp, f"o{i}") for i in range(4)), message="four tasks running")
    # When Redis goes away long enough for the worker's client retries to give up and the
    # tasks to end meanwhile (their results and acks wait; the worker's metrics, served
    # without Redis, say they ended) and then comes back (AOF on)
    own_redis.stop()
    wait_for(lambda: "retrying the write batch" in worker.log and "fetch failed" in worker.log,
             90, message="the worker to hold its writes and retry its fetch")
    wait_for(lambda: by(scrape(url), "engine_tasks_total", "task", "state").get(
        (logged_sleep.name, "SUCCESS")) == 4, 90, message="the four tasks to end in the outage")
    own_redis.start()
    restarted = rapp.client.time()[0]
    # Then the tasks finish, their results and acks are written once, none ran twice
    assert rapp.gather(tasks, timeout=90) == [f"o{i}" for i in range(4)]
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="all acked")
    assert all(len(runs(rapp, f"o{i}")) == 1 for i in range(4))
    # And every thread of the worker came back
    _all_threads_alive(rapp, "rider", restarted)
    assert worker.proc.poll() is None


def test_worker_rides_out_dropped_connections(rapp, own_redis, run_worker):
    worker = run_worker("--pool", "threads", "-c", "4", "-n", "dropped", app=APP,
                        extra_env=own_redis.env)
    tasks = [logged_sleep.delay(f"c{i}", 2) for i in range(4)]
    wait_for(lambda: all(runs(rapp, f"c{i}") for i in range(4)), message="four tasks running")
    # When every connection is dropped (normal and pubsub), twice
    for _ in range(2):
        rapp.client.client_kill_filter(_type="pubsub")
        rapp.client.client_kill_filter(_type="normal", skipme=True)
    assert rapp.gather(tasks, timeout=90) == [f"c{i}" for i in range(4)]
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="all acked")
    assert all(len(runs(rapp, f"c{i}")) == 1 for i in range(4))
    _all_threads_alive(rapp, "dropped", rapp.client.time()[0])
    assert worker.proc.poll() is None


def test_producer_fails_with_a_clear_connection_error(rapp, own_redis):
    # Given a producer whose Redis is gone (retrying a command once: each retry reconnects
    # with retries of its own, so two took seconds a send)
    rapp.conf.update(broker_connection_retries=1)
    try:
        rapp.close()
        own_redis.stop()
        # When it sends, Then it gets a ConnectionError after its retries, not a hang
        with pytest.raises(ConnectionError, match="cannot reach the broker") as info:
            logged_sleep.delay("nowhere", 0)
        assert isinstance(info.value, BrokerUnavailable)
        with pytest.raises(ConnectionError):
            logged_sleep.delay_many([("a", 0), ("b", 0)])
    finally:
        rapp.conf._layers["update"].pop("broker_connection_retries", None)
        own_redis.start()
