"""engine.wire: the raw command path the hot commands take, against the real Redis."""

import os
import threading
import time

import pytest
import redis

from engine.app import connect
from engine.wire import Wire, fields_get


@pytest.fixture
def wire(redis_server, prefix):
    client = connect(redis_server.url)
    w = Wire(client)
    yield w, client, prefix
    w.close()
    client.close()


def test_call_returns_raw_replies_and_raises_error_replies(wire):
    w, client, prefix = wire
    assert w.call("SET", f"{prefix}:k", b"\x00v") == b"OK"
    assert w.call("GET", f"{prefix}:k") == b"\x00v"
    assert w.call("INCRBY", f"{prefix}:n", 5) == 5
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        w.call("LPUSH", f"{prefix}:k", b"x")
    # the connection is still in step after an error reply
    assert w.call("GET", f"{prefix}:k") == b"\x00v"


def test_pipeline_keeps_replies_in_order_and_in_step_after_errors(wire):
    w, client, prefix = wire
    client.set(f"{prefix}:s", b"x")
    commands = [("INCR", f"{prefix}:c"), ("LPUSH", f"{prefix}:s", b"y"), ("INCR", f"{prefix}:c")]
    replies = w.pipeline(commands, raise_on_error=False)
    assert replies[0] == 1 and replies[2] == 2
    assert isinstance(replies[1], redis.ResponseError)
    with pytest.raises(redis.ResponseError):
        w.pipeline(commands)          # raised once every reply is read ...
    assert w.call("GET", f"{prefix}:c") == b"4"    # ... so the next call reads its own


def test_stream_replies_are_resp2_whatever_the_client_speaks(redis_server, prefix):
    client = redis.Redis.from_url(redis_server.url, protocol=3)
    w = Wire(client)
    try:
        stream = f"{prefix}:q"
        w.call("XGROUP", "CREATE", stream, "g", "0", "MKSTREAM")
        w.call("XADD", stream, "*", "m", b"body", "other", b"1")
        reply = w.call("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", stream, ">")
        [[name, [[entry_id, fields]]]] = reply
        assert name == stream.encode() and entry_id.endswith(b"-0")
        assert fields_get(fields, b"m") == b"body"
        assert fields_get(fields, b"other") == b"1"
        assert fields_get(fields, b"missing") is None
        assert fields_get(None, b"m") is None
        assert fields_get({b"m": b"d"}, b"m") == b"d"
    finally:
        w.close()
        client.close()


def test_blocking_calls_outlast_the_socket_timeout(redis_server, prefix):
    # redis-py's default socket timeout (5 s here shortened to 0.3 s) must not cut a
    # longer block short: the wait says how long Redis may hold the reply
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    w = Wire(client)
    key = f"{prefix}:l"
    try:
        started = time.monotonic()
        assert w.call("BLPOP", key, 0.8, block=0.8) is None
        assert time.monotonic() - started >= 0.7

        def push():
            time.sleep(0.8)
            redis_server.client().rpush(key, b"late")
        pusher = threading.Thread(target=push)
        pusher.start()
        assert w.call("BLPOP", key, 0, forever=True) == [key.encode(), b"late"]
        pusher.join()
    finally:
        w.close()
        client.close()


def test_connections_are_reused_and_closed(wire):
    w, client, prefix = wire
    for _ in range(20):
        w.call("PING")
    assert len(w._idle) == 1           # one at a time: one connection, reused
    conn = w._idle[0]
    assert conn._sock is not None
    w.close()
    assert conn._sock is None and w._idle == []


def test_a_forked_child_never_uses_the_parents_connection(wire):
    w, client, prefix = wire
    w.call("SET", f"{prefix}:who", b"parent")
    parent_conn = w._idle[0]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            w.call("SET", f"{prefix}:who", b"child")
            code = 0 if w._idle and w._idle[0] is not parent_conn else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's connection still works: the child neither used nor shut it
    assert w._idle[0] is parent_conn
    assert w.call("GET", f"{prefix}:who") == b"child"


def test_a_dropped_connection_is_remade_and_the_command_retried(redis_server, prefix):
    client = connect(redis_server.url)
    w = Wire(client)
    killer = redis_server.client()
    key, name = f"{prefix}:r", f"wire-{prefix}"

    def kill_ours():
        w.call("CLIENT", "SETNAME", name)
        ids = [c["id"] for c in killer.client_list() if c.get("name") == name]
        assert len(ids) == 1
        killer.client_kill_filter(_id=ids[0])

    try:
        w.call("SET", key, b"1")
        kill_ours()
        assert w.call("GET", key) == b"1"          # retried on a fresh connection
        kill_ours()
        with pytest.raises(redis.ConnectionError):
            w.call("GET", key, retry=False)        # asked not to retry: the error, at once
        assert w.call("GET", key) == b"1"
    finally:
        w.close()
        client.close()
        killer.close()
