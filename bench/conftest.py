"""Shared by the benchmarks under bench/ (never collected by the test run: testpaths is
``tests``). One private ``redis-server`` per session on a unix socket in a temp dir, no
persistence, stopped at the end; nothing here touches the embedded Redis or a user's data.

Run: ``tox -e bench`` or ``make bench`` (all), ``pytest bench/test_codec.py`` (one file).
The benchmarks print their rates (``-s`` shows them) and never assert anything about speed.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # the working tree's engine/ and pools/ are what is measured

from engine.testing import shared_fixtures  # noqa: E402


# as the tests: a private server (no persistence: nothing to keep), a client on it, and an
# ENGINE_HOME of the session's own, so that a benchmark never uses the user's embedded Redis
redis_server, client, _engine_home = shared_fixtures(redis_prefix="engine-bench-redis-",
                                                     aof=False)


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
