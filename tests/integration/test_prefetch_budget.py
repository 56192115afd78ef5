"""The prefetch budget holds on every path: a fetch over many queues, a reclaim of a lost
worker's messages, a take-back after a restart. A lane holds at most ``concurrency x
prefetch`` messages (XPENDING of its consumer; plus, for an instant, the acks of tasks that
just ended, written by the writer right after the budget is given back)."""

from __future__ import annotations

import signal

from engine import control
from tests.apps.reliable import nap
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, kill_hard, rapp  # noqa: F401

QUEUES = [f"b{i}" for i in range(60)]


def pending_of(rapp, name: str, queues: list[str]) -> int:
    total = 0
    for queue in queues:
        for info in rapp.client.xinfo_consumers(rapp.broker.keys.queue(queue), "engine"):
            if info["name"].decode() == name:
                total += int(info["pending"])
    return total


def watch(rapp, name, queues, results) -> int:
    """The most the consumer held at once while ``results`` ran to the end."""
    most = 0

    def finished() -> bool:
        nonlocal most
        most = max(most, pending_of(rapp, name, queues))
        return all(r.ready() for r in results)
    wait_for(finished, 120, message="every task to finish")
    return most


def test_a_fetch_over_many_queues_holds_its_budget(rapp, run_worker):
    # Given messages waiting on 60 queues
    results = [nap.apply_async((0.05, i), queue=q) for i, q in enumerate(QUEUES)]
    # When a worker with a budget of 4 (2 slots x prefetch 2) serves all of them
    run_worker("--pool", "threads", "-c", "2", "--prefetch", "2", "-n", "narrow",
               "-Q", ",".join(QUEUES), app=APP)
    # Then it never holds more than its budget (+ the acks of the 2 slots' last tasks)
    most = watch(rapp, "narrow", QUEUES, results)
    assert [r.get(timeout=10) for r in results] == list(range(len(QUEUES)))
    assert most <= 4 + 2, most


def test_a_reclaim_holds_its_budget(rapp, run_worker):
    env = {"TEST_LOST_AFTER": "2"}
    # Given a worker that dies holding 40 messages
    holder = run_worker("--pool", "threads", "-c", "4", "--prefetch", "10", "-n", "holder",
                        app=APP, extra_env=env)
    holder.signal(signal.SIGSTOP)   # fetches nothing more, runs nothing
    results = [nap.delay(0.05, i) for i in range(40)]
    holder.signal(signal.SIGCONT)
    wait_for(lambda: pending_of(rapp, "holder", ["default"]) >= 30, message="a deep buffer")
    kill_hard(holder)
    # When a worker with a budget of 2 reclaims them
    run_worker("--pool", "threads", "-c", "1", "--prefetch", "2", "-n", "small", app=APP,
               extra_env=env)
    most = watch(rapp, "small", ["default"], results)
    # Then it takes them within its budget, a few at a time, and all run
    assert [r.get(timeout=10) for r in results] == list(range(40))
    assert most <= 2 + 1, most


def test_a_take_back_holds_its_budget(rapp, run_worker):
    # Given a worker that dies holding 40 messages
    first = run_worker("--pool", "threads", "-c", "4", "--prefetch", "10", "-n", "again",
                       app=APP)
    first.signal(signal.SIGSTOP)
    results = [nap.delay(0.05, i) for i in range(40)]
    first.signal(signal.SIGCONT)
    wait_for(lambda: pending_of(rapp, "again", ["default"]) >= 30, message="a deep buffer")
    kill_hard(first)
    # When it restarts under its name with a budget of 2
    run_worker("--pool", "threads", "-c", "1", "--prefetch", "2", "-n", "again", app=APP)
    # Then what it held comes back a few at a time, within its budget, and all run
    most = 0

    def finished() -> bool:
        nonlocal most
        for reply in control.broadcast(rapp, "stats", destination=["again"], timeout=2):
            stats = reply["reply"]
            most = max(most, stats["prefetched"] + stats["active"])
        return all(r.ready() for r in results)
    wait_for(finished, 120, message="every task to finish")
    assert [r.get(timeout=10) for r in results] == list(range(40))
    assert 1 <= most <= 2, most
