"""Signed messages (``security_key``) with real workers: forged, unsigned and rotated keys,
delayed and retried bodies, and control commands."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import msgpack
import pytest

from engine import control
from tests.apps.basic import add, flaky
from tests.conftest import wait_for

KEY = "k-new"
OLD = "k-old"


def body(task: str = "tests.apps.basic.add", args=(1, 2)) -> tuple[str, bytes]:
    task_id = str(uuid.uuid4())
    return task_id, msgpack.packb({"v": 1, "id": task_id, "task": task, "args": list(args),
                                   "kwargs": {}, "retries": 0})


def hand_signed(key: str, raw: bytes) -> bytes:
    """What a producer in another language computes: hex HMAC-SHA256 of the body bytes."""
    return hmac.new(key.encode(), raw, hashlib.sha256).hexdigest().encode()


@pytest.fixture
def signed(app, monkeypatch):
    """The app in this process with ``KEY`` (so it signs), and the env for workers."""
    monkeypatch.setenv("ENGINE_SECURITY_KEY", KEY)
    app.close()   # the signer is read again on next use
    yield app
    monkeypatch.delenv("ENGINE_SECURITY_KEY")
    app.close()


def dead_letters(app) -> list[dict]:
    return [fields for _, fields in app.client.xrange(app.broker.keys.dlq("default"))]


def test_forged_and_unsigned_messages_are_dead_lettered(signed, run_worker):
    worker = run_worker("--pool", "solo", extra_env={"ENGINE_SECURITY_KEY": KEY})
    stream = signed.broker.keys.queue("default")
    _, forged = body(args=(5, 5))
    _, unsigned = body(args=(6, 6))
    signed.client.xadd(stream, {"m": forged, "s": hand_signed("not the key", forged)})
    signed.client.xadd(stream, {"m": unsigned})
    # a signed task sent by the app runs
    assert add.delay(2, 2).get(timeout=60) == 4
    letters = wait_for(lambda: len(dead_letters(signed)) == 2 and dead_letters(signed),
                       message="two dead letters")
    assert {f[b"m"] for f in letters} == {forged, unsigned}
    assert {f[b"reason"] for f in letters} == {b"bad signature"}
    wait_for(lambda: signed.broker.depth("default")["unacked"] == 0, message="acked")
    assert worker.log.count("bad signature") == 2
    assert "signing : on (1 key" in worker.log and KEY not in worker.log


def test_a_hand_signed_message_runs_and_the_stream_entry_carries_s(signed, run_worker):
    run_worker("--pool", "solo", extra_env={"ENGINE_SECURITY_KEY": KEY})
    task_id, raw = body(args=(20, 22))
    signed.client.xadd(signed.broker.keys.queue("default"), {"m": raw, "s": hand_signed(KEY, raw)})
    assert signed.AsyncResult(task_id).get(timeout=60) == 42
    assert dead_letters(signed) == []


def test_rotation_old_key_still_verifies_new_one_signs(signed, run_worker, monkeypatch):
    # the worker verifies with both; the app in this process signs with the first
    run_worker("--pool", "solo", extra_env={"ENGINE_SECURITY_KEY": f"{KEY},{OLD}"})
    old_id, old_raw = body(args=(1, 1))
    stray_id, stray_raw = body(args=(3, 3))
    stream = signed.broker.keys.queue("default")
    signed.client.xadd(stream, {"m": old_raw, "s": hand_signed(OLD, old_raw)})
    signed.client.xadd(stream, {"m": stray_raw, "s": hand_signed("retired long ago", stray_raw)})
    assert signed.AsyncResult(old_id).get(timeout=60) == 2
    assert add.delay(4, 4).get(timeout=60) == 8
    # the app's own messages are signed with the first key
    monkeypatch.setenv("ENGINE_SECURITY_KEY", f"{KEY},{OLD}")
    signed.close()
    assert signed.signer.sign(b"x") == hand_signed(KEY, b"x")
    letters = wait_for(lambda: dead_letters(signed), message="the stray one filed")
    assert [f[b"m"] for f in letters] == [stray_raw]


def test_delayed_and_retried_bodies_keep_their_signature(signed, run_worker):
    # countdown: the body waits in the delayed zset (enveloped) and the mover re-adds s;
    # a retry is re-signed by the worker
    run_worker("--pool", "threads", "-c", "2", extra_env={"ENGINE_SECURITY_KEY": KEY})
    r = add.apply_async((7, 8), countdown=1.0)
    members = signed.client.zrange(signed.broker.keys.delayed("default"), 0, -1)
    assert r.get(timeout=60) == 15
    assert members and all(m.startswith(b"S") for m in members)
    assert flaky.delay(f"{signed.conf.key_prefix}:flaky").get(timeout=60) == 3
    assert dead_letters(signed) == []


def test_worker_without_a_key_runs_signed_messages(signed, run_worker):
    worker = run_worker("--pool", "solo", extra_env={"ENGINE_SECURITY_KEY": ""})
    assert add.delay(1, 2).get(timeout=60) == 3
    assert "signing : off" in worker.log


def test_unsigned_control_commands_are_ignored_and_logged_once(signed, run_worker):
    worker = run_worker("--pool", "solo", "-n", "signed-w",
                        extra_env={"ENGINE_SECURITY_KEY": KEY})
    # signed commands are heard (ready is logged before the subscription is surely active)
    wait_for(lambda: control.broadcast(signed, "ping", timeout=1.0), message="a signed ping")
    channel = signed.broker.keys.control
    for _ in range(3):
        signed.client.publish(channel, msgpack.packb({"cmd": "shutdown"}))
    forged = control.encode({"cmd": "shutdown"}, None)
    signed.client.publish(channel, b"S" + hand_signed("wrong", forged) + forged)
    # commands on one channel arrive in order: once this one answers, the others were seen
    replies = control.broadcast(signed, "ping", timeout=10.0)
    assert replies == [{"worker": "signed-w", "reply": {"ok": "pong"}}]
    assert worker.proc.poll() is None
    assert worker.log.count("ignored a control command") == 1


def test_dashboard_requeue_signs_the_copy_but_not_a_forgery(signed):
    from engine.dashboard import fleet
    keys = signed.broker.keys
    _, raw = body()
    _, forged = body(args=(9, 9))
    signed.client.xadd(keys.dlq("default"), {"m": raw, "reason": "unknown task 'x'"})
    signed.client.xadd(keys.dlq("default"), {"m": forged, "reason": "bad signature"})
    (good_id, _), (forged_id, _) = signed.client.xrange(keys.dlq("default"))
    assert fleet.requeue_dead_letter(signed, "default", good_id.decode()) == ""
    refusal = fleet.requeue_dead_letter(signed, "default", forged_id.decode())
    assert "bad signature" in refusal
    ((_, fields),) = signed.client.xrange(keys.queue("default"))
    assert fields == {b"m": raw, b"s": hand_signed(KEY, raw)}


def test_beat_sends_signed_messages(signed, env, tmp_path):
    from engine.testing import EngineProcess
    from tests.conftest import ROOT
    beat = EngineProcess("beat", ["-A", "tests.apps.beat"],
                         env=dict(env, ENGINE_SECURITY_KEY=KEY), log_path=tmp_path / "beat.log",
                         cwd=ROOT)
    try:
        stream = signed.broker.keys.queue("default")
        entries = wait_for(lambda: signed.client.xrange(stream), message="beat to send")
    finally:
        beat.kill_all()
    for _, fields in entries:
        assert fields[b"s"] == hand_signed(KEY, fields[b"m"])


def test_an_isolated_lane_runs_signed_messages_and_hears_signed_commands(env, run_worker,
                                                                         monkeypatch):
    # the lane process is an `engine run` of its own: it verifies bodies and the
    # commands its supervisor forwards with the same key
    from tests.apps.lanes import app as lanes_app, where
    monkeypatch.setenv("ENGINE_SECURITY_KEY", KEY)
    lanes_app.close()
    try:
        name = f"signed-lanes-{uuid.uuid4().hex[:6]}"
        run_worker("--lane", "io=gevent:5", "-n", name, app="tests.apps.lanes",
                   extra_env={"ENGINE_SECURITY_KEY": KEY})
        assert where.apply_async(queue="io").get(timeout=60)["gevent"]

        def lane_concurrency():
            replies = control.broadcast(lanes_app, "stats", destination=[name], timeout=5)
            lane = replies[0]["reply"]["lanes"][0] if replies else {}
            child = (lane.get("pool_info") or {}).get("child_pool") or {}
            return child.get("concurrency")

        wait_for(lane_concurrency, message="the lane's figures")
        replies = control.broadcast(lanes_app, "pool-grow", destination=[name], timeout=10,
                                    n=2, lane="io")
        assert replies[0]["reply"].get("concurrency") == 7
        wait_for(lambda: lane_concurrency() == 7, message="the lane process to grow")
    finally:
        lanes_app.close()
