"""Redis out of memory (``maxmemory`` with ``noeviction``): the worker keeps its heartbeat
(PEXPIRE of its key, which Redis allows), stops fetching, retries what it owes with backoff,
logs a line now and then, and finishes everything by itself once memory is back."""

from __future__ import annotations

import random
import time

import pytest
import redis

from engine.broker import GROUP, Broker

from tests.apps.reliable import nap
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, own_redis, rapp  # noqa: F401

FILLER = 8_000_000


def fill(client, key: str) -> None:
    """Write a big key, then cap memory below what is used: every write that may grow
    memory is refused from now on (reads, acks, DEL and PEXPIRE still go through)."""
    # built in Redis (SETRANGE pads with zeros): no big request whose buffer would count
    # in used_memory for a while and then be freed
    client.setrange(key, FILLER - 1, b"x")
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used - FILLER // 2)


def refused(client) -> bool:
    try:
        client.set("probe", "1")
    except Exception as exc:
        return "maxmemory" in str(exc)
    return False


def _lost_consumers(broker, stream: str) -> list[bytes]:
    """Two lost workers on ``stream``: ``lost-a`` with two messages pending, then (XINFO
    lists consumers by name) ``lost-b`` with none, left in the group. Returns a's ids."""
    client = broker.client
    for i in range(3):
        client.xadd(stream, {"m": b"body %d" % i})
    [(_, taken)] = broker.fetch("lost-a", {stream: ">"}, count=2, block_ms=None)
    [(_, [(done, _)])] = broker.fetch("lost-b", {stream: ">"}, count=1, block_ms=None)
    broker.ack({stream: [done]})
    return [entry_id for entry_id, _ in taken]


def _pending_on(client, stream: str, consumer: str) -> list[bytes]:
    return [p["message_id"] for p in client.xpending_range(stream, GROUP, "-", "+", 100,
                                                           consumer)]


def test_a_reclaim_out_of_memory_hands_over_what_it_claimed(rapp, own_redis):
    """Out of memory Redis refuses XGROUP DELCONSUMER (the claim script's first write for a
    lost worker with nothing pending): the claim of that one must not fail, or the messages
    just claimed from another lost worker stay pending on the live claimer, never run."""
    broker, client = rapp.broker, rapp.client
    broker.ensure_groups(["default"])
    stream = broker.keys.queue("default")
    lost = _lost_consumers(broker, stream)
    filler = f"{rapp.conf.key_prefix}:filler"
    fill(client, filler)
    try:
        assert refused(client)
        claimed = broker.claim_from_dead("survivor", ["default"], alive=set(), count=10)
        assert [entry_id for _, entries, _ in claimed for entry_id, _ in entries] == lost
        assert _pending_on(client, stream, "survivor") == lost
    finally:
        client.delete(filler)
    # the empty lost consumer goes in a later round, once Redis takes it
    assert broker.claim_from_dead("survivor", ["default"], alive=set(), count=10) == []
    assert [c["name"] for c in client.xinfo_consumers(stream, GROUP)] == [b"survivor"]


def test_a_claim_that_fails_midway_hands_over_what_it_claimed(rapp, own_redis):
    """A claim round that meets an error after claiming (here: a claimer whose ACL lets it
    read lost-a's heartbeat key but not lost-b's) returns what it claimed, not the error."""
    broker = rapp.broker
    broker.ensure_groups(["default"])
    stream = broker.keys.queue("default")
    lost = _lost_consumers(broker, stream)
    prefix = broker.keys.prefix
    rapp.client.acl_setuser("claimer", enabled=True, nopass=True, commands=["+@all"],
                            keys=[f"{prefix}:q:*", f"{prefix}:worker:lost-a"])
    limited = Broker(redis.Redis.from_url(own_redis.url, username="claimer"), prefix=prefix)
    claimed = limited.claim_from_dead("survivor", ["default"], alive=set(), count=10)
    assert [entry_id for _, entries, _ in claimed for entry_id, _ in entries] == lost
    assert _pending_on(rapp.client, stream, "survivor") == lost
    # lost-b's claim did fail: it is still there
    assert b"lost-b" in [c["name"] for c in rapp.client.xinfo_consumers(stream, GROUP)]
    with pytest.raises(redis.ResponseError):   # and with nothing claimed before, it raises
        limited.claim_from_dead("survivor", ["default"], alive=set(), count=10)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_worker_rides_out_redis_out_of_memory(rapp, own_redis, run_worker, pool):
    env = dict(own_redis.env, TEST_LOST_AFTER="3")
    worker = run_worker("--pool", pool, "-c", "2", app=APP, extra_env=env)
    client = rapp.client
    [name] = [n.decode() for n in client.zrange(rapp.broker.keys.workers, 0, -1)]
    heartbeat = rapp.broker.keys.worker(name)
    # Given tasks sent while Redis has room (sending is refused under OOM)
    results = nap.delay_many([(0.05, i) for i in range(120)])
    wait_for(lambda: sum(r.state == "SUCCESS" for r in results[:10]) >= 3,
             message="the first tasks to finish")
    # When Redis runs out of memory while the worker works
    filler = f"{rapp.conf.key_prefix}:filler"
    fill(client, filler)
    assert refused(client)
    oom_began = time.monotonic()
    wait_for(lambda: "out of memory and refuses writes" in worker.log,
             message="the worker to notice")
    # Then it stays alive with its heartbeat key present, for longer than the key's TTL
    ttl = 3 * 0.75

    def rode_out() -> bool:
        assert worker.proc.poll() is None, worker.log
        assert client.exists(heartbeat), "the heartbeat key lapsed under OOM"
        return time.monotonic() - oom_began > 3 * ttl
    wait_for(rode_out, message="OOM to last three heartbeat lifetimes")
    lines = worker.log.count("out of memory and refuses writes")
    # one line every few seconds, not one per refused attempt
    assert lines <= (time.monotonic() - oom_began) / 5 + 2, worker.log
    # When memory comes back
    client.delete(filler)
    # Then every task completes and the queue is empty, with no one's help
    assert rapp.gather(results, timeout=120) == list(range(120))
    wait_for(lambda: rapp.broker.depth("default") == {"waiting": 0, "unacked": 0, "delayed": 0,
                                                      "dead": 0}, message="an empty queue")
    wait_for(lambda: "takes writes again" in worker.log, message="the recovery line")
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.log, worker.log


@pytest.mark.slow
def test_chaos_out_of_memory_with_workers_killed(rapp, own_redis, run_worker, capsys):
    """Redis runs out of memory and gets it back while whole workers are SIGKILLed: no task
    is lost, every worker left is alive, every task runs; the duplicates are reported."""
    from tests.apps.reliable import bump_patient
    from tests.integration.reliability_helpers import kill_hard
    tasks = 1500
    rng = random.Random()
    env = dict(own_redis.env, TEST_LOST_AFTER="3", TEST_MAX_DELIVERIES="1000")
    counters = f"{rapp.conf.key_prefix}:chaos"
    client = rapp.client
    filler = f"{rapp.conf.key_prefix}:filler"

    def start():
        return run_worker("--pool", rng.choice(["prefork", "threads"]), "-c", "2",
                          "--prefetch", "4", app=APP, extra_env=env)

    workers = [start() for _ in range(3)]
    began = time.monotonic()
    results = bump_patient.delay_many([(str(i),) for i in range(tasks)])
    killed = oom_rounds = 0
    oom_since = None

    def done() -> int:
        return client.hlen(counters)

    while done() < tasks * 0.9 or oom_since is not None:
        time.sleep(rng.uniform(0.2, 0.5))   # pacing of the chaos, not synchronisation
        if oom_since is None and oom_rounds < 2 and done() > tasks * (0.2 + 0.35 * oom_rounds):
            fill(client, filler)
            oom_since = time.monotonic()
            oom_rounds += 1
        elif oom_since is not None and time.monotonic() - oom_since > 4:
            client.delete(filler)   # memory is back
            oom_since = None
        elif rng.random() < 0.3 and len(workers) > 1:
            victim = rng.choice(workers)
            kill_hard(victim)
            killed += 1
            workers.remove(victim)
            if oom_since is None:   # a worker cannot come online while Redis refuses writes
                workers.append(start())
        if time.monotonic() - began > 45:
            if oom_since is not None:
                client.delete(filler)
            break
    while len(workers) < 3:
        workers.append(start())
    try:
        values = rapp.gather(results, timeout=120)
    except TimeoutError as exc:   # say which, and where they are, for whoever reads the log
        missing = [(i, r) for i, r in enumerate(results) if not r.ready()][:10]
        ran = client.hmget(counters, [str(i) for i, _ in missing]) if missing else []
        raise AssertionError(
            f"{exc}: {[(i, r.id, r.state) for i, r in missing]}; their runs {ran}; "
            f"queue {rapp.broker.depth('default')}; pending "
            f"{client.xpending(rapp.broker.keys.queue('default'), GROUP)}") from None
    assert values == [str(i) for i in range(tasks)]
    wait_for(lambda: rapp.broker.depth("default") == {"waiting": 0, "unacked": 0, "delayed": 0,
                                                      "dead": 0}, message="an empty queue")
    counts = {int(k): int(v) for k, v in client.hgetall(counters).items()}
    assert sorted(counts) == list(range(tasks)) and min(counts.values()) >= 1
    for worker in workers:
        assert worker.proc.poll() is None, worker.log
    assert oom_rounds >= 1
    duplicates = sum(1 for n in counts.values() if n > 1)
    with capsys.disabled():
        print(f"\n[chaos-oom] {tasks} tasks in {time.monotonic() - began:.1f} s; Redis out of "
              f"memory {oom_rounds} time(s); killed {killed} workers; 0 lost; {duplicates} ran "
              f"more than once (extra runs: {sum(counts.values()) - tasks})")
