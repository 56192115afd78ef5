"""Shared by the benchmarks under bench/ (never collected by the test run: testpaths is
``tests``). One private ``redis-server`` per session on a unix socket in a temp dir, no
persistence, stopped at the end; nothing here touches the embedded Redis or a user's data.

Run: ``tox -e bench`` or ``make bench`` (all), ``pytest bench/test_codec.py`` (one file).
The benchmarks print their rates (``-s`` shows them) and never assert anything about speed.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # the working tree's engine/ and pools/ are what is measured

# the tests' private server and ENGINE_HOME guard, so that a benchmark never starts or uses
# the user's embedded Redis under ~/.engine
from tests.conftest import RedisServer, _engine_home, client  # noqa: E402,F401


@pytest.fixture(scope="session")
def redis_server():
    with tempfile.TemporaryDirectory(prefix="engine-bench-redis-") as tmp:
        server = RedisServer(Path(tmp), aof=False)   # no persistence: nothing to keep
        server.start()
        try:
            yield server
        finally:
            server.stop()


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
