"""A fetch whose reply is lost: Redis moved the entries to the worker's pending list, then
the connection dropped before the reply reached the worker. The worker is alive, so no
survivor reclaims them; the worker itself must take them in, or they wait for ever."""

from __future__ import annotations

import uuid

from engine import message
from engine.broker import GROUP

from tests.apps.reliable import bump_patient
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, own_redis, rapp  # noqa: F401


def _blocked_fetch(client) -> int | None:
    """The id of the one connection blocked in XREADGROUP (the lane's fetch thread)."""
    ids = [c["id"] for c in client.client_list()
           if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")]
    return ids[0] if len(ids) == 1 else None


def test_a_fetch_whose_reply_is_lost_still_runs(rapp, own_redis, run_worker):
    # Given a worker whose fetch thread waits in XREADGROUP
    worker = run_worker("--pool", "threads", "-c", "1", app=APP, extra_env=own_redis.env)
    [name] = [n.decode() for n in rapp.client.zrange(rapp.broker.keys.workers, 0, -1)]
    client = rapp.client
    stream = rapp.broker.keys.queue("default")
    for _ in range(5):
        fetcher = wait_for(lambda: _blocked_fetch(client), message="a blocked fetch")
        # When a message arrives and, in the same turn of Redis's event loop (one pipeline
        # from one client), the fetch connection is killed: Redis hands the entry to the
        # worker's consumer (it is pending there) but the reply never leaves
        task_id = str(uuid.uuid4())
        body = message.encode_message(task_id, bump_patient.name, ["lost"], {})
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(*rapp.broker.push_command("default", body))
        pipe.execute_command("CLIENT", "KILL", "ID", fetcher)
        pipe.execute()
        pending = client.xpending_range(stream, GROUP, "-", "+", 10)
        if [p["consumer"].decode() for p in pending] == [name]:
            break   # delivered, reply lost
        # the fetch was between two reads: it gets this one the ordinary way; again
        assert rapp.AsyncResult(task_id).get(timeout=60) == "lost"
        wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="its ack")
        client.hdel(f"{rapp.conf.key_prefix}:chaos", "lost")
    else:
        raise AssertionError("the fetch was never caught blocked")
    # Then the worker still runs it and acks it (it is alive: nobody reclaims from it)
    assert rapp.AsyncResult(task_id).get(timeout=60) == "lost"
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="the entry acked")
    assert int(client.hget(f"{rapp.conf.key_prefix}:chaos", "lost")) == 1
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.log, worker.log
