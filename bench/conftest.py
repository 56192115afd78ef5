"""Shared by the benchmarks under bench/ (never collected by the test run: testpaths is
``tests``). One private ``redis-server`` per session on a unix socket in a temp dir, no
persistence, stopped at the end; nothing here touches the embedded Redis or a user's data.

Run: ``tox -e bench`` or ``make bench`` (all), ``pytest bench/test_codec.py`` (one file).
The benchmarks print their rates (``-s`` shows them) and never assert anything about speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # the working tree's engine/ and pools/ are what is measured

from engine import embedded  # noqa: E402


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}?db=0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrivateRedis":
        args = embedded.server_args(self.dir, socket=self.socket, daemonize=False, aof=False)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not embedded.ping(self.dir):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"private redis-server did not start (see {self.dir})")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server():
    with tempfile.TemporaryDirectory(prefix="engine-bench-redis-") as tmp:
        server = PrivateRedis(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session", autouse=True)
def _engine_home(tmp_path_factory):
    # a benchmark never starts or uses the user's embedded Redis under ~/.engine
    home = tmp_path_factory.mktemp("engine-home")
    old = os.environ.get("ENGINE_HOME")
    os.environ["ENGINE_HOME"] = str(home)
    yield home
    embedded.stop(home)
    if old is None:
        os.environ.pop("ENGINE_HOME", None)
    else:
        os.environ["ENGINE_HOME"] = old


@pytest.fixture
def client(redis_server):
    c = redis_server.client()
    yield c
    c.close()


@pytest.fixture
def prefix(client):
    """A key prefix of the benchmark's own, deleted afterwards."""
    from engine.benchmark import cleanup
    name = f"bench-{uuid.uuid4().hex[:10]}"
    yield name
    cleanup(client, name)


def report(name: str, n: int, seconds: float, extra: str = "") -> None:
    """One printed line: rate and time per item."""
    print(f"\n{name}: {n:,} in {seconds:.3f} s = {n / seconds:,.0f}/s, "
          f"{seconds / n * 1e6:.1f} µs each{extra}")
