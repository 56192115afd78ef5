"""Liveness: a dead worker's messages run elsewhere within worker_lost_after, never while
their worker lives; a restarted worker takes back its own; poison messages are filed."""

from __future__ import annotations

import threading
import time

from engine.broker import Broker
from tests.apps.reliable import logged_sleep, poison
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, kill_hard, own_redis, rapp, runs  # noqa: F401


def test_dead_workers_messages_run_on_a_live_worker(rapp, run_worker, capsys):
    # Given a worker running three long tasks, and a second, idle worker beside it
    doomed = run_worker("--pool", "threads", "-c", "3", "-n", "doomed", app=APP)
    for i in range(3):
        logged_sleep.delay(f"k{i}", 30)
    wait_for(lambda: all(len(runs(rapp, f"k{i}")) == 1 for i in range(3)),
             message="three tasks running on the doomed worker")
    survivor = run_worker("--pool", "threads", "-c", "3", "-n", "survivor", app=APP)
    # When the first worker dies without a word
    killed_at = time.time()
    kill_hard(doomed)
    # Then every one of its tasks starts again on the survivor
    wait_for(lambda: all(len(runs(rapp, f"k{i}")) == 2 for i in range(3)), 90,
             message="the tasks to run again elsewhere")
    restarts = [float(runs(rapp, f"k{i}")[1].split()[2]) for i in range(3)]
    assert all(" survivor " in runs(rapp, f"k{i}")[1] for i in range(3))
    assert "reclaimed 3 message(s) of a lost worker" in survivor.log
    with capsys.disabled():
        print(f"\n[liveness] SIGKILL -> running elsewhere: {max(restarts) - killed_at:.2f} s "
              f"(worker_lost_after={rapp.conf.worker_lost_after:g} s)")


def test_a_long_task_is_never_taken_from_its_live_worker(rapp, run_worker):
    # Given two workers that count each other lost after 2 s of silence
    env = {"TEST_LOST_AFTER": "2"}
    busy = run_worker("--pool", "threads", "-c", "1", "-n", "busy", app=APP, extra_env=env)
    r = logged_sleep.delay("long", 10)
    wait_for(lambda: runs(rapp, "long"), message="the long task to start")
    other = run_worker("--pool", "threads", "-c", "2", "-n", "other", app=APP, extra_env=env)
    # When the task runs for five times worker_lost_after
    assert r.get(timeout=90) == "long"
    # Then it ran once, on its own worker, and nobody claimed it
    assert len(runs(rapp, "long")) == 1 and " busy " in runs(rapp, "long")[0]
    assert "reclaimed" not in other.log and "reclaimed" not in busy.log
    assert rapp.broker.depth("default")["unacked"] == 0


def test_restarted_worker_takes_back_its_own_pending_first(rapp, run_worker):
    # Given a worker (counted lost only after a minute) holding running and prefetched tasks
    env = {"TEST_LOST_AFTER": "60"}
    first = run_worker("--pool", "threads", "-c", "2", "--prefetch", "2", "-n", "phoenix",
                       app=APP, extra_env=env)
    tasks = [logged_sleep.delay(f"p{i}", 2) for i in range(4)]
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 4 and runs(rapp, "p0"),
             message="four tasks held by the worker")
    # When it is killed and started again under the same name (long before it counts lost)
    kill_hard(first)
    second = run_worker("--pool", "threads", "-c", "2", "-n", "phoenix", app=APP, extra_env=env)
    # Then it takes its messages back at once and runs them all
    assert "taking back 4 message(s)" in second.log
    assert rapp.gather(tasks, timeout=90) == [f"p{i}" for i in range(4)]
    assert rapp.broker.depth("default")["unacked"] == 0


def test_two_live_workers_never_claim_the_same_message(rapp):
    # Given 300 messages pending on a consumer whose heartbeat key does not exist
    broker = rapp.broker
    broker.ensure_groups(["race"])
    for i in range(300):
        broker.enqueue("race", f"body{i}".encode())
    stream = broker.keys.queue("race")
    assert len(broker.fetch("gone", {stream: ">"}, count=300, block_ms=None)[0][1]) == 300
    # When eight live claimers (their heartbeat keys exist) race for them
    for i in range(8):
        rapp.client.set(broker.keys.worker(f"c{i}"), b"1", ex=120)
    got: dict[str, list] = {}

    def claim(name: str) -> None:
        mine = Broker(rapp.new_client(), prefix=broker.keys.prefix)
        got[name] = []
        for _ in range(20):
            for _, entries, _ in mine.claim_from_dead(name, ["race"], alive={name}, count=40):
                got[name].extend(entry_id for entry_id, _ in entries)
        mine.client.close()

    threads = [threading.Thread(target=claim, args=(f"c{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Then each message went to exactly one of them, and the PEL agrees
    claimed = [entry_id for ids in got.values() for entry_id in ids]
    assert len(claimed) == 300 and len(set(claimed)) == 300
    owners = {}
    for name, ids in got.items():
        for entry_id in ids:
            owners[entry_id] = name
    for row in rapp.client.xpending_range(stream, "engine", "-", "+", 300):
        assert owners[row["message_id"]] == row["consumer"].decode()


def test_a_live_heartbeat_blocks_the_claim(rapp):
    # Given a message pending on a consumer whose heartbeat key exists
    broker = rapp.broker
    broker.ensure_groups(["alive"])
    broker.enqueue("alive", b"x")
    broker.fetch("busy", {broker.keys.queue("alive"): ">"}, count=1, block_ms=None)
    rapp.client.set(broker.keys.worker("busy"), b"1", ex=60)
    # When another worker thinks it is dead (a stale view of the worker list)
    # Then the script still refuses
    assert broker.claim_from_dead("thief", ["alive"], alive=set()) == []
    rapp.client.delete(broker.keys.worker("busy"))
    assert len(broker.claim_from_dead("thief", ["alive"], alive=set())[0][1]) == 1


def test_poison_that_kills_its_child_goes_to_dead_letters(rapp, run_worker):
    # Given a prefork worker, and a task that ends its process every time it runs
    worker = run_worker("--pool", "prefork", "-c", "1", app=APP,
                        extra_env={"TEST_MAX_DELIVERIES": "3"})
    r = poison.delay()
    # Then after three deliveries it fails and lands in the dead letters with the reason
    wait_for(lambda: r.state == "FAILURE", 90, message="the poison task to fail")
    letters = rapp.client.xrange(rapp.broker.keys.dlq("default"))
    assert len(letters) == 1
    assert b"died in each of 3 deliveries" in letters[0][1][b"reason"]
    assert worker.log.count("lost its process; delivering it again") == 2
    # And the worker goes on
    assert logged_sleep.delay("after", 0).get(timeout=60) == "after"
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="all acked")


def test_poison_that_kills_whole_workers_goes_to_dead_letters(rapp, run_worker):
    # Given a task that some outside force kills along with its worker, each time it runs
    env = {"TEST_MAX_DELIVERIES": "3"}
    r = logged_sleep.delay("doom", 60)
    for attempt in range(1, 4):
        worker = run_worker("--pool", "threads", "-c", "1", "-n", "victim", app=APP,
                            extra_env=env)
        wait_for(lambda: len(runs(rapp, "doom")) == attempt, 90, message=f"run {attempt}")
        kill_hard(worker)
    # When the fourth worker (same name: it takes the message back at once) gets it
    last = run_worker("--pool", "threads", "-c", "1", "-n", "victim", app=APP, extra_env=env)
    # Then it is not run again: it is filed as a dead letter and the task fails
    wait_for(lambda: r.state == "FAILURE", 60, message="the task to fail")
    assert len(runs(rapp, "doom")) == 3
    letters = rapp.client.xrange(rapp.broker.keys.dlq("default"))
    assert b"delivered 4 times" in letters[0][1][b"reason"]
    assert "dead letter" in last.log
    assert rapp.broker.depth("default")["unacked"] == 0


def test_idempotent_task_runs_once_per_id(rapp, run_worker):
    from tests.apps.reliable import charge
    from tests.integration.reliability_helpers import count
    run_worker("--pool", "prefork", "-c", "2", app=APP)
    # Given an idempotent task that ran to the end
    first = charge.apply_async(args=("order",), task_id="order-1")
    assert first.get(timeout=60) == 1
    # When the same message comes again (a redelivery after a lost ack), twice
    stream = rapp.broker.keys.queue("default")
    body = rapp._body(charge.name, ("order",), {}, task=charge, task_id="order-1")[1]
    rapp.client.xadd(stream, {"m": body})
    rapp.client.xadd(stream, {"m": body})
    # Then its body does not run again, and the stored value is its result
    wait_for(lambda: rapp.broker.depth("default") == {"waiting": 0, "unacked": 0,
                                                      "delayed": 0, "dead": 0},
             10, message=f"the copies handled: {rapp.broker.depth('default')} {count(rapp, 'order')}")
    assert count(rapp, "order") == 1
    assert rapp.AsyncResult("order-1").get(timeout=10) == 1
    # And another id runs as usual
    assert charge.apply_async(args=("order",), task_id="order-2").get(timeout=60) == 2
