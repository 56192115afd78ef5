"""Malformed and unknown messages land in engine:dlq:{Q} while the worker goes on."""

import msgpack
import pytest

from tests.apps.basic import add
from tests.conftest import wait_for

GOOD = {"v": 1, "id": "x", "task": "tests.apps.basic.add", "args": [1, 2], "kwargs": {},
        "retries": 0}


@pytest.mark.parametrize("raw, reason", [
    (b"\xc1not msgpack", "undecodable"),
    (msgpack.packb({k: v for k, v in GOOD.items() if k != "task"}), "missing required key 'task'"),
    (msgpack.packb(dict(GOOD, task="tests.apps.basic.nope")), "unknown task"),
    (msgpack.packb(dict(GOOD, args="not a list")), "'args' must be list"),
])
def test_bad_message_goes_to_dead_letters_and_worker_goes_on(app, run_worker, raw, reason):
    # Given a worker and a bad message on its queue, followed by a good task
    worker = run_worker("--pool", "solo")
    keys = app.broker.keys
    app.client.xadd(keys.queue("default"), {"m": raw})
    r = add.delay(2, 2)
    # Then the good task runs
    assert r.get(timeout=60) == 4
    # And the bad one is in the dead-letter stream, with its original bytes and the reason
    entries = wait_for(lambda: app.client.xrange(keys.dlq("default")), message="a dead letter")
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"m"] == raw
    assert reason in fields[b"reason"].decode()
    assert fields[b"queue"] == b"default" and float(fields[b"at"]) > 0
    # And it is acknowledged: nothing stays pending, and it was logged once
    wait_for(lambda: app.broker.depth("default")["unacked"] == 0, message="acked")
    assert worker.log.count("dead letter") == 1


def test_entry_without_m_field_is_dead_lettered(app, run_worker):
    run_worker("--pool", "solo")
    app.client.xadd(app.broker.keys.queue("default"), {"x": b"1"})
    assert add.delay(1, 1).get(timeout=60) == 2
    entries = wait_for(lambda: app.client.xrange(app.broker.keys.dlq("default")))
    assert b"no 'm' field" in entries[0][1][b"reason"]
