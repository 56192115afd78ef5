"""Chaos: 5,000 tasks, each incrementing its own counter, while prefork children and whole
workers are SIGKILLed at random, Redis restarts once (AOF on), and replacement workers
start. Every task must run at least once and reach SUCCESS; the duplicates are reported."""

from __future__ import annotations

import random
import time

import psutil
import redis

from tests.apps.reliable import bump
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, kill_hard, own_redis, rapp  # noqa: F401

TASKS = 5000
WORKERS = 3
#: the chaos stops once this share of the tasks has run (the rest shows the recovery)
CHAOS_UNTIL = 0.8


def test_chaos(rapp, own_redis, run_worker, capsys):
    rng = random.Random()
    env = dict(own_redis.env, TEST_LOST_AFTER="3", TEST_MAX_DELIVERIES="1000")
    counters = f"{rapp.conf.key_prefix}:chaos"

    def start():
        return run_worker("--pool", "prefork", "-c", "2", "--prefetch", "4", app=APP,
                          extra_env=env)

    workers = [start() for _ in range(WORKERS)]
    began = time.monotonic()
    results = bump.delay_many([(str(i),) for i in range(TASKS)])
    killed_children = killed_workers = 0
    restarted_redis = False

    def done() -> int:
        try:
            return rapp.client.hlen(counters)
        except redis.ConnectionError:
            return 0

    while done() < TASKS * CHAOS_UNTIL:
        time.sleep(rng.uniform(0.2, 0.6))   # pacing of the chaos, not synchronisation
        roll = rng.random()
        if not restarted_redis and done() > TASKS * 0.4:
            own_redis.restart()
            restarted_redis = True
        elif roll < 0.7:
            live = [w for w in workers if w.proc.poll() is None]
            children = [c for w in live for c in w.children()]
            if children:
                try:
                    rng.choice(children).kill()
                    killed_children += 1
                except psutil.NoSuchProcess:
                    pass
        else:
            victim = rng.choice(workers)
            kill_hard(victim)
            killed_workers += 1
            workers.remove(victim)
            workers.append(start())
        if time.monotonic() - began > 75:
            break   # a slow machine: stop the chaos and let the recovery be judged

    chaos_done = done()
    # Then every task reaches SUCCESS, and nothing is left waiting, running or dead
    values = rapp.gather(results, timeout=120)
    assert values == [str(i) for i in range(TASKS)]
    wait_for(lambda: rapp.broker.depth("default") == {"waiting": 0, "unacked": 0, "delayed": 0,
                                                      "dead": 0}, message="an empty queue")
    counts = {int(k): int(v) for k, v in rapp.client.hgetall(counters).items()}
    assert sorted(counts) == list(range(TASKS)) and min(counts.values()) >= 1
    duplicates = sum(1 for n in counts.values() if n > 1)
    elapsed = time.monotonic() - began
    assert restarted_redis
    with capsys.disabled():
        print(f"\n[chaos] {TASKS} tasks in {elapsed:.1f} s; killed {killed_children} prefork "
              f"children and {killed_workers} workers, restarted Redis once; "
              f"{duplicates} ran more than once (extra runs: "
              f"{sum(counts.values()) - TASKS}); chaos ended at {chaos_done} done")
