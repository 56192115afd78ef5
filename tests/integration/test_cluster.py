"""``redis+cluster://``: the engine on a 3-master Redis Cluster (one replica each) started
from the project's redis-server, with queues on every shard: round trips, canvas, delays,
retries, rate limits, priorities, beat, control, reclaim, and (slow) a master failover."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis

from engine import chord, embedded, message
from engine.cluster import ClusterWire, shard_of, slot_of
from engine.testing import EngineProcess, engine_env, wait_for
from engine.exceptions import TaskRevokedError
from tests.conftest import ROOT, wait_started
from tests.integration.canvas_helpers import capp  # noqa: F401
from tests.integration.production_servers import ClusterTopology

#: queue names whose slots three masters split between them (0-5460, 5461-10922, 10923-)
SHARDED = ("b", "default", "q3")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    topo = ClusterTopology(embedded.redis_server_binary(),
                           tmp_path_factory.mktemp("cluster")).start()
    yield topo
    topo.stop()


@pytest.fixture
def env(cluster, prefix):
    """The conftest's ``env`` on the cluster: every app and worker of these tests uses it."""
    values = {"ENGINE_BROKER_URL": cluster.url, "ENGINE_KEY_PREFIX": prefix}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield engine_env({}, root=ROOT)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_the_test_queues_live_on_three_shards(cluster, app):
    # the premise of every test below: one queue per master
    shards = {shard_of(app.client, f"{{{q}}}")[1] for q in SHARDED}
    assert len(shards) == 3
    assert [slot_of(f"{app.conf.key_prefix}:q:{{{q}}}") for q in SHARDED] == \
        [slot_of(f"{{{q}}}") for q in SHARDED]


def test_round_trip_over_queues_on_every_shard(app, run_worker):
    from tests.apps.basic import add
    assert isinstance(app.broker.wire, ClusterWire)
    run_worker("--pool", "threads", "-c", "4", "-Q", ",".join(SHARDED))
    results = [add.apply_async((i, i), queue=q) for i in range(40) for q in SHARDED]
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(40) for _ in SHARDED]
    # acked entries are deleted on every shard; nothing waits, nothing is dead
    for q in SHARDED:
        assert app.broker.depth(q) == {"waiting": 0, "unacked": 0, "delayed": 0, "dead": 0}
    # many at once (one pipeline over three nodes), and a failing task's error comes back
    handles = app.tasks["tests.apps.basic.add"].delay_many([(i, 1) for i in range(300)])
    assert sum(h.get(timeout=60) for h in handles) == sum(range(300)) + 300
    from tests.apps.basic import fail
    with pytest.raises(Exception, match="nope"):
        fail.apply_async(("nope",), queue="q3").get(timeout=60)


def test_countdown_and_retries(app, run_worker):
    from tests.apps.basic import add, flaky
    run_worker("--pool", "threads", "-c", "4", "-Q", ",".join(SHARDED))
    began = time.time()
    later = add.apply_async((20, 1), countdown=1.0, queue="q3")
    assert later.get(timeout=60) == 21
    assert time.time() - began >= 1.0
    # a task that retries twice (each retry waits in the queue's delayed set)
    assert flaky.apply_async((f"{app.conf.key_prefix}:flaky",), queue="b").get(timeout=60) == 3


def test_a_chord_body_gets_every_member_once(run_worker, capp):
    from tests.apps.canvas import add, tsum
    from tests.integration.canvas_helpers import APP
    run_worker("--pool", "threads", "-c", "4", app=APP)
    r = chord((add.s(i, i) for i in range(60)), tsum.s()).delay()
    assert r.get(timeout=60) == sum(2 * i for i in range(60))
    assert r.parent.get(timeout=60) == [2 * i for i in range(60)]


def test_rate_limit_and_priorities(run_worker):
    from tests.apps.flow import app as fapp, key, limited, ordered
    from tests.integration.test_flow import most_in_a_second, starts
    fapp.close()
    try:
        # priorities: queued before any worker, lowest first; one slot runs highest first
        sent = [ordered.apply_async((f"{level}-{i}",), priority=level)
                for level in (0, 9, 5) for i in range(3)]
        worker = run_worker("--pool", "threads", "-c", "1", "--prefetch", "1",
                            app="tests.apps.flow")
        assert len({r.get(timeout=60) for r in sent}) == 9
        order = [t.decode() for t in fapp.client.lrange(key("order"), 0, -1)]
        assert order == [f"{level}-{i}" for level in (9, 5, 0) for i in range(3)]
        worker.kill_all()
        # a rate limit of 5/s for the fleet holds on the cluster too
        run_worker("--pool", "threads", "-c", "4", app="tests.apps.flow")
        results = [limited.delay(i) for i in range(15)]
        assert [r.get(timeout=60) for r in results] == list(range(15))
        assert most_in_a_second(starts(fapp)) <= 10
    finally:
        fapp.close()


def test_beat_sends_on_the_cluster(env, app, tmp_path):
    beat = EngineProcess("beat", ["-A", "tests.apps.beat"], env=env,
                         log_path=tmp_path / "beat.log", cwd=ROOT)
    try:
        stream = f"{app.conf.key_prefix}:q:{{default}}"
        wait_for(lambda: app.client.xlen(stream) >= 2, message="two beat runs")
        bodies = [message.decode_message(f[b"m"]) for _, f in app.client.xrange(stream)]
        assert {b["task"] for b in bodies} == {"tests.apps.beat.tick"}
        # the lock and the state share one slot (the claim script touches both)
        prefix = app.conf.key_prefix
        assert app.client.get(f"{prefix}:{{beat}}:lock") is not None
        assert app.client.hkeys(f"{prefix}:{{beat}}:state") == [b"every-second"]
        assert beat.proc.poll() is None
    finally:
        beat.kill_all()


def test_control_inspect_and_revoke(app, run_worker, engine):
    from engine import control
    from tests.apps.basic import sleep
    run_worker("--pool", "threads", "-c", "2", "-n", "one")
    run_worker("--pool", "threads", "-c", "2", "-n", "two")
    # every worker hears a broadcast (PUBLISH counts the subscribers of the channel's node)
    def answered() -> list[str]:
        return sorted(r["worker"].split("@")[0] for r in control.broadcast(app, "ping",
                                                                             timeout=5))
    wait_for(lambda: answered() == ["one", "two"], message="both to answer")
    long = sleep.delay(30)
    wait_started(app, long.id)
    long.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        long.get(timeout=60)
    done = engine("inspect", "-A", "tests.apps.basic", "ping")
    assert done.returncode == 0, done.stderr
    assert "one" in done.stdout and "two" in done.stdout


def test_a_killed_workers_messages_run_on_a_live_one(run_worker, env):
    from tests.apps.reliable import app as rapp, logged_sleep
    from tests.integration.reliability_helpers import APP, kill_hard, runs
    rapp.close()
    try:
        doomed = run_worker("--pool", "threads", "-c", "3", "-n", "doomed", app=APP)
        for i in range(3):
            logged_sleep.delay(f"k{i}", 30)
        wait_for(lambda: all(len(runs(rapp, f"k{i}")) == 1 for i in range(3)),
                 message="three tasks running on the doomed worker")
        survivor = run_worker("--pool", "threads", "-c", "3", "-n", "survivor", app=APP)
        kill_hard(doomed)
        wait_for(lambda: all(len(runs(rapp, f"k{i}")) == 2 for i in range(3)), 90,
                 message="the tasks to run again elsewhere")
        assert all(" survivor " in runs(rapp, f"k{i}")[1] for i in range(3))
        assert "reclaimed 3 message(s) of a lost worker" in survivor.log
    finally:
        rapp.close()


def test_broker_status_shows_the_shard_of_each_queue(engine, app):
    app.broker.ensure_groups(list(SHARDED))
    done = engine("broker", "status", "--queue", "not-yet-used")
    assert done.returncode == 0, done.stderr
    for q in SHARDED:
        slot, node = shard_of(app.client, f"{{{q}}}")
        assert f"{q}" in done.stdout and str(slot) in done.stdout and node in done.stdout
    slot, node = shard_of(app.client, "{not-yet-used}")
    assert f"not-yet-used" in done.stdout and str(slot) in done.stdout


def test_a_pipeline_over_three_nodes_keeps_the_callers_order(app):
    wire = app.broker.wire
    prefix = app.conf.key_prefix
    keys = [f"{prefix}:order:{{{q}}}" for q in SHARDED] * 3
    replies = wire.pipeline([("INCR", k) for k in keys])
    assert replies == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    # an error reply stays in its place
    app.client.set(f"{prefix}:text:{{b}}", "x")
    out = wire.pipeline([("INCR", keys[0]), ("INCR", f"{prefix}:text:{{b}}"),
                         ("INCR", keys[1])], raise_on_error=False)
    assert out[0] == 4 and isinstance(out[1], redis.ResponseError) and out[2] == 4


def test_a_bad_cluster_url_is_one_clear_line(env):
    done = subprocess.run([sys.executable, "-m", "engine", "broker", "status"],
                          env=dict(env, ENGINE_BROKER_URL="redis+cluster:///"), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "needs at least one node" in done.stderr + done.stdout


@pytest.mark.slow
def test_a_master_killed_mid_run_loses_only_what_redis_lost(app, run_worker, tmp_path,
                                                             monkeypatch, capsys):
    from tests.apps.basic import add
    # Given a cluster of its own (this one loses a master) and a worker on three shards
    topo = ClusterTopology(embedded.redis_server_binary(), tmp_path / "failover").start()
    try:
        monkeypatch.setenv("ENGINE_BROKER_URL", topo.url)
        app.close()
        worker = run_worker("--pool", "threads", "-c", "8", "-Q", ",".join(SHARDED),
                            extra_env={"ENGINE_BROKER_URL": topo.url})
        total = 5000
        sent = [add.apply_async((i, 0), queue=SHARDED[i % 3]) for i in range(total)]
        ids = [r.id for r in sent]
        backend = app.backend

        def finished() -> int:
            try:
                return sum(1 for raw in backend.peek_many(ids) if raw)
            except (redis.RedisError, OSError):
                return -1   # the cluster is failing over: ask again
        wait_for(lambda: finished() >= total // 4, 120, message="a quarter of the run")
        # When the master of the default queue's slot dies hard, mid-run
        victim = topo.node_for_slot(slot_of("{default}"))
        replica = topo.replica_of(victim)
        victim.kill()
        killed_at = time.monotonic()
        wait_for(lambda: topo.roles().get(replica.port) == "master", 60,
                 message="the replica to take over")
        promoted = time.monotonic() - killed_at
        wait_for(topo.healthy, 60, message="the cluster to be ok again")
        # Then the run completes on the same worker and the same producer...
        try:
            wait_for(lambda: finished() == total, 180, message="every task")
        except AssertionError:
            pass    # what is missing is counted and explained below
        values = backend.peek_many(ids)
        missing = [i for i, raw in enumerate(values) if not raw]
        # ...and whatever is missing had its message or its result on the dead master
        victim_slots = topo.slots_of(replica)
        unexplained = [i for i in missing
                       if SHARDED[i % 3] != "default"
                       and slot_of(backend.result_key(ids[i])) not in victim_slots]
        with capsys.disabled():
            print(f"\n[cluster failover] {total} tasks, master SIGKILLed after "
                  f"{total // 4}+ were done; replica promoted in {promoted:.1f} s; "
                  f"missing afterwards: {len(missing)} "
                  f"({len(missing) - len(unexplained)} on the dead master's slots)")
            if missing:
                print(worker.tail(4000))
        assert unexplained == []
        assert len(missing) <= total // 100
        assert add.apply_async((2, 2), queue="default").get(timeout=60) == 4
        done = [i for i, raw in enumerate(values) if raw]
        assert [sent[i].get(timeout=60) for i in done[::97]] == done[::97]
    finally:
        app.close()
        topo.stop()


def test_exporter_monitor_events_and_dashboard_reads(app, run_worker):
    from engine import monitor
    from engine.dashboard import fleet
    from engine.exporter import read
    from tests.apps.basic import add
    run_worker("--pool", "threads", "-c", "2", "-n", "seen", "-Q", ",".join(SHARDED))
    assert [add.apply_async((1, i), queue=q).get(timeout=60) for i, q in
            enumerate(SHARDED)] == [1, 2, 3]
    # the exporter's figures: every queue, and the live worker
    figures = read(app.client, app.broker.keys, lost_after=app.conf.worker_lost_after)
    assert {q.name for q in figures.queues} >= set(SHARDED)
    assert figures.workers_online == 1
    # the monitor's and the dashboard's view of the fleet
    state = monitor.FleetState()
    wait_for(lambda: (state.poll(app), "seen" in " ".join(state.workers))[1],
             message="the monitor to see the worker")
    assert any(w["name"].startswith("seen") for w in fleet.workers(app))
    assert {q["name"] for q in fleet.queues(app)} >= set(SHARDED)
    # a dead letter on the q3 shard, requeued from the dashboard, runs
    raw = message.encode_message("dl-1", "tests.apps.basic.add", [20, 22], {})
    app.client.xadd(app.broker.keys.dlq("q3"), {"m": raw, "reason": "test", "queue": "q3"})
    [letter] = fleet.dead_letters(app, "q3")["letters"]
    assert letter["id"] == "dl-1"
    assert fleet.requeue_dead_letter(app, "q3", letter["entry"]) == ""
    assert app.AsyncResult("dl-1").get(timeout=60) == 42
    # the reader of `engine events` (and the monitor): the events of a task sent now
    from engine import events
    sent = add.apply_async((0, 0), queue="b")
    assert sent.get(timeout=60) == 0
    deadline = time.monotonic() + 60
    for _, event in events.read(app.new_client(), app.broker.keys.events, last_id="0",
                                block_ms=200):
        if event.get("type") == "task-succeeded" and event.get("id") == sent.id:
            break
        assert time.monotonic() < deadline, "no task-succeeded event for the task"


def test_the_async_producer_on_the_cluster(run_worker):
    import asyncio
    from tests.apps.aio import aadd, add, app as aio
    aio.close()
    try:
        run_worker("--pool", "threads", "-c", "4", app="tests.apps.aio")

        async def main():
            one = await add.adelay(2, 3)
            later = await aadd.aapply_async((4, 5), countdown=0.5)
            many = [await add.adelay(i, i) for i in range(20)]
            assert await one.aget(timeout=60) == 5
            assert await later.aget(timeout=60) == 9
            return await aio.agather(many, timeout=60)
        assert asyncio.run(main()) == [2 * i for i in range(20)]
    finally:
        aio.close()


def test_round_trip_on_a_current_redis_cluster(app, run_worker, tmp_path, monkeypatch):
    # the Debian redis-server (7.x; installed with apt-get when missing, as the TLS tests
    # do) besides the embedded 6.2
    from tests.apps.basic import add
    from tests.integration.production_servers import tls_binary
    topo = ClusterTopology(tls_binary(), tmp_path / "redis7", replicas=0).start()
    try:
        monkeypatch.setenv("ENGINE_BROKER_URL", topo.url)
        app.close()
        assert app.client.info("server")["redis_version"] >= "7"
        run_worker("--pool", "threads", "-c", "4", "-Q", ",".join(SHARDED),
                   extra_env={"ENGINE_BROKER_URL": topo.url})
        results = [add.apply_async((i, i), queue=q) for i in range(20) for q in SHARDED]
        assert [r.get(timeout=60) for r in results] == [2 * i for i in range(20)
                                                          for _ in SHARDED]
        assert add.apply_async((1, 1), countdown=0.5, queue="q3").get(timeout=60) == 2
    finally:
        app.close()
        topo.stop()


def test_purge_and_requeue_keep_their_one_slot_transactions(app):
    from tests.apps.basic import add
    broker = app.broker
    broker.ensure_groups(["q3"])
    for i in range(5):
        add.apply_async((i, i), queue="q3")
    add.apply_async((9, 9), queue="q3", countdown=600)
    # requeue (MULTI on the stream's slot): fetched entries go back as fresh copies
    got = broker.fetch("c1", {broker.keys.queue("q3"): ">"}, count=2, block_ms=None)
    [(stream, entries)] = got
    broker.requeue(stream.decode(), [(e[0], e[1][1]) for e in entries])
    assert broker.depth("q3") == {"waiting": 5, "unacked": 0, "delayed": 1, "dead": 0}
    # purge (MULTI over the stream and the delayed set: both {q3})
    assert broker.purge("q3") == 6
    assert broker.depth("q3") == {"waiting": 0, "unacked": 0, "delayed": 0, "dead": 0}
