"""Producers against a Redis that is out of memory (maxmemory, noeviction): a clear error,
and a bulk send that says exactly which calls were queued (issue 14, item 1)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import msgpack
import pytest
import redis

from engine import embedded
from engine.exceptions import BrokerOutOfMemory, BrokerUnavailable
from tests.apps.basic import echo
from tests.conftest import wait_for

#: small enough to fill in a moment, large enough for Redis's own start-up needs
MAXMEMORY = 4 * 1024 * 1024
FILLER = 16 * 1024


class SmallRedis:
    """A redis-server of this test's own, on a unix socket, that evicts nothing at
    ``maxmemory``; stopped by pid."""

    def __init__(self) -> None:
        # a short path: unix socket paths are limited to about 100 bytes
        self.dir = Path(tempfile.mkdtemp(prefix="engine-oom-"))
        self.socket = self.dir / "redis.sock"
        self.url = f"unix://{self.socket}?db=0"
        args = embedded.server_args(self.dir, socket=self.socket, daemonize=False, aof=False)
        args += ["--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: embedded.ping(self.dir), 30, message="redis-server to answer")
        self.client = redis.Redis(unix_socket_path=str(self.socket))

    def fill(self) -> int:
        """Write fillers until Redis refuses one; returns how many it took."""
        n = 0
        while True:
            try:
                self.client.set(f"filler:{n}", b"x" * FILLER)
            except redis.OutOfMemoryError:
                return n
            n += 1

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def small_redis():
    server = SmallRedis()
    yield server
    server.stop()


@pytest.fixture
def full_app(app, small_redis, monkeypatch):
    """The basic app, sending to the small Redis."""
    monkeypatch.setenv("ENGINE_BROKER_URL", small_redis.url)
    app.close()
    yield app
    app.close()


def queued_ids(server: SmallRedis, app) -> list[str]:
    entries = server.client.xrange(app.broker.keys.queue("default"))
    return [msgpack.unpackb(fields[b"m"])["id"] for _, fields in entries]


def test_delay_under_oom_is_a_clear_error_and_nothing_is_queued(small_redis, full_app):
    # Given a Redis at maxmemory that evicts nothing
    small_redis.fill()
    # When a producer sends one task
    with pytest.raises(BrokerOutOfMemory) as info:
        echo.delay("hello")
    # Then the error says Redis is out of memory, is a BrokerUnavailable (a ConnectionError),
    # and names the one call as not queued
    error = info.value
    assert isinstance(error, BrokerUnavailable) and isinstance(error, ConnectionError)
    assert "out of memory" in str(error) and "maxmemory" in str(error)
    assert "\n" not in str(error)
    assert error.sent == [] and len(error.unsent) == 1 and error.unsent_indexes == [0]
    assert queued_ids(small_redis, full_app) == []
    # And so for a delayed one (its first send to the queue goes through another path)
    with pytest.raises(BrokerOutOfMemory):
        echo.apply_async(("later",), countdown=60)
    assert small_redis.client.zcard(full_app.broker.keys.delayed("default")) == 0


def test_bulk_send_under_oom_says_exactly_which_calls_were_queued(small_redis, full_app):
    # Given a Redis at maxmemory, then a little room made: some calls fit, most do not
    n = small_redis.fill()
    small_redis.client.delete(*[f"filler:{i}" for i in range(n - 6, n)])
    calls = [(f"{i:04d}" + "y" * 2048,) for i in range(500)]
    # When 500 calls are sent in one bulk send (one pipeline: Redis runs every command,
    # refusing those that come once memory is full again)
    with pytest.raises(BrokerOutOfMemory) as info:
        echo.delay_many(calls)
    error = info.value
    # Then it says how many went, and sent/unsent are exactly what the stream holds
    assert "out of memory" in str(error) and "calls were queued" in str(error)
    sent, unsent = [r.id for r in error.sent], [r.id for r in error.unsent]
    assert 0 < len(sent) < 500 and len(sent) + len(unsent) == 500
    assert queued_ids(small_redis, full_app) == sent
    assert not set(sent) & set(unsent)
    assert sorted(error.unsent_indexes) == error.unsent_indexes
    assert len(error.unsent_indexes) == len(unsent)
    # And once memory is freed, resending the unsent calls queues each call exactly once
    small_redis.client.delete(*[f"filler:{i}" for i in range(n)])
    again = echo.delay_many([calls[i] for i in error.unsent_indexes])
    bodies = [msgpack.unpackb(fields[b"m"])["args"][0] for _, fields in
              small_redis.client.xrange(full_app.broker.keys.queue("default"))]
    assert len(again) == len(unsent) and sorted(bodies) == sorted(c[0] for c in calls)


def test_a_bulk_send_stops_after_the_first_refused_pipeline(small_redis, full_app):
    # Given a Redis with no room at all, and a bulk send cut into pipelines of 50
    small_redis.fill()
    bodies = [("default", f"body{i}".encode(), None) for i in range(200)]
    from engine.broker import EnqueueError
    # When it is sent / Then the first pipeline is refused whole and no other is sent
    with pytest.raises(EnqueueError) as info:
        full_app.broker.enqueue_many(bodies, chunk=50)
    assert isinstance(info.value.error, redis.OutOfMemoryError)
    assert info.value.sent == [] and info.value.unsent == list(range(200))
    assert small_redis.client.xlen(full_app.broker.keys.queue("default")) == 0
    # And the queue is registered once Redis takes a message (the refused SADD is resent)
    small_redis.client.flushall()
    full_app.broker.enqueue_many(bodies[:1], chunk=50)
    assert small_redis.client.smembers(full_app.broker.keys.queues) == {b"default"}
