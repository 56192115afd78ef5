"""Nothing one task or message does ends the worker: retries at a datetime (Celery's
spelling), retries at times that cannot be, and bodies that are hostile each settle their
own message (a retry, a FAILURE, a dead letter) while the worker goes on."""

from __future__ import annotations

import pytest

from tests.apps.reliable import hostile_retry, retry_at
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, count, rapp  # noqa: F401


@pytest.mark.parametrize("pool", ["prefork", "threads"])
@pytest.mark.parametrize("when", ["naive", "aware"])
def test_retry_at_a_datetime_runs_again(rapp, run_worker, pool, when):
    worker = run_worker("--pool", pool, "-c", "2", app=APP)
    r = retry_at.delay(f"dt-{pool}-{when}", when)
    assert r.get(timeout=60) == "again"
    assert r.retries == 1 and count(rapp, f"dt-{pool}-{when}") == 2
    assert worker.proc.poll() is None


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_hostile_tasks_and_bodies_never_end_the_worker(rapp, run_worker, pool):
    worker = run_worker("--pool", pool, "-c", "2", app=APP)
    kinds = ["nan-eta", "inf-countdown", "huge-countdown", "text-eta", "text-countdown",
             "list-eta"]
    results = [hostile_retry.delay(kind) for kind in kinds]
    # bodies that decode but carry numbers no clock can use
    from engine import message
    stream = rapp.broker.keys.queue("default")
    ids = []
    for extra in ({"soft": float("nan")}, {"hard": float("-inf")}, {"eta": float("nan")},
                  {"expires": float("nan")}, {"soft": 1e308, "hard": 1e308}):
        # built by hand, as a producer in another language could: encode_message refuses
        # these at send time now, the worker must still survive them
        raw = message.dumps({"v": 1, "id": "hostile-" + "-".join(extra), "args": [],
                             "task": "tests.apps.reliable.host", "kwargs": {}, "retries": 0,
                             **extra})
        rapp.client.xadd(stream, {"m": raw})
        ids.append("hostile-" + "-".join(extra))
    for kind, r in zip(kinds, results):
        wait_for(lambda: r.state == "FAILURE", message=f"{kind} to fail")
        # the FAILURE says why: the retry asked for a time that is not one
        assert isinstance(r.result, ValueError) and "retry" in str(r.result), (kind, r.result)
    # the worker is alive and still runs a plain task to the end
    from tests.apps.reliable import host
    assert host.delay().get(timeout=60)
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0
             and rapp.broker.depth("default")["waiting"] == 0, message="an empty queue")
    assert worker.proc.poll() is None, worker.log
    # and every hostile body was settled one way or the other: run to an end, or refused
    # to the dead-letter stream with its reason (the decoder checks its numbers)
    dead = {message.loads(fields[b"m"])["id"]
            for _, fields in rapp.client.xrange(rapp.broker.keys.dlq("default"))}
    assert all(i in dead or rapp.AsyncResult(i).state in ("SUCCESS", "FAILURE") for i in ids)


def test_an_outcome_that_cannot_be_settled_fails_its_task_only(rapp, run_worker):
    # Given a pool that reports garbage for some jobs (an unknown state, no exception type)
    worker = run_worker("--pool", "tests.apps.hostile_pool:GarblingPool", "-c", "2", app=APP)
    from tests.apps.reliable import host
    garbled = [host.apply_async(task_id=f"garble-{i}") for i in range(3)]
    # Then each of those tasks is a FAILURE naming the error, its message is acked
    for r in garbled:
        wait_for(lambda: r.state == "FAILURE", message="the garbled outcome to be a FAILURE")
        assert "could not settle" in str(r.result)
    # And the worker is alive and runs the next task as usual
    assert host.delay().get(timeout=60)
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="every ack")
    assert worker.proc.poll() is None, worker.log


@pytest.mark.parametrize("levels", [False, True])
def test_a_queue_deleted_under_the_worker_is_made_again(rapp, run_worker, levels):
    # Given a worker that serves the default queue (and, with levels, one priority level)
    from tests.apps.reliable import host
    worker = run_worker("--pool", "threads", "-c", "2", app=APP)
    if levels:
        assert host.apply_async(priority=5).get(timeout=60)
    assert host.delay().get(timeout=60)
    # When the queue's stream is deleted, consumer group and all (an operator's DEL, a
    # FLUSHDB of the wrong database)
    stream = rapp.broker.keys.queue("default")
    rapp.client.delete(stream)
    # Then its fetch thread makes the group again and tasks sent after it still run
    assert host.delay().get(timeout=60)
    assert rapp.client.xinfo_groups(stream)
    assert worker.proc.poll() is None, worker.log
