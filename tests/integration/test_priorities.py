"""Priorities within a queue: level N (1-9) is the stream ``P:q:{Q}:pN`` beside the queue's
own (priority 0); higher levels are fetched first, and delays and retries keep the level."""

from __future__ import annotations

import pytest

from engine import message
from tests.conftest import wait_for
from tests.integration.test_flow import APP, fapp  # noqa: F401


def test_higher_priorities_run_first_with_one_slot(fapp, run_worker):
    from tests.apps.flow import key, ordered
    # Given tasks at three levels queued before any worker, lowest first
    sent = []
    for level in (0, 9, 5):
        sent += [ordered.apply_async((f"{level}-{i}",), priority=level) for i in range(4)]
    # When one slot with prefetch 1 runs them
    run_worker("--pool", "threads", "-c", "1", "--prefetch", "1", app=APP)
    assert len({r.get(timeout=60) for r in sent}) == 12
    wait_for(lambda: fapp.client.llen(key("order")) == 12, message="all twelve to run")
    # Then every level ran in turn, highest first, in order within a level
    order = [t.decode() for t in fapp.client.lrange(key("order"), 0, -1)]
    assert order == [f"{level}-{i}" for level in (9, 5, 0) for i in range(4)]


def test_a_delayed_message_comes_back_at_its_level(fapp):
    # Given a body with priority 7 due now in the queue's delayed set (countdowns and
    # retries wait there)
    keys = fapp.broker.keys
    body = message.encode_message("d1", "tests.apps.flow.ordered", ["x"], {}, priority=7)
    fapp.client.zadd(keys.delayed("pq"), {body: 1.0})
    # When the mover runs
    assert fapp.broker.move_due(["pq"]) == 1
    # Then it is in level 7's stream, not the queue's own
    assert fapp.client.xlen(keys.queue("pq", 7)) == 1
    assert fapp.client.xlen(keys.queue("pq")) == 0


def test_countdown_keeps_the_priority(fapp, run_worker, engine):
    from tests.apps.flow import ordered
    keys = fapp.broker.keys
    # Given a worker serving a paused queue (its housekeeping still moves due messages)
    assert engine("control", "-A", APP, "pause", "pq", "-t", "1").returncode == 0
    run_worker("--pool", "threads", "-c", "1", "-Q", "pq", app=APP)
    # When a task with priority 7 is sent with a countdown
    ordered.apply_async(("later",), priority=7, countdown=0.2, queue="pq")
    # Then it comes back into level 7's stream
    wait_for(lambda: fapp.client.xlen(keys.queue("pq", 7)) == 1, message="the move")
    assert fapp.client.xlen(keys.queue("pq")) == 0


@pytest.mark.parametrize("bad", [-1, 10, 2.5, "9", True])
def test_a_bad_priority_is_refused_at_send(fapp, bad):
    from tests.apps.flow import ordered
    with pytest.raises(ValueError, match="priority"):
        ordered.apply_async(("x",), priority=bad)
