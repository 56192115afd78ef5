"""Fixtures and helpers shared by the reliability tests (liveness, poison, delays, outages,
retries, revoke, chaos)."""

from __future__ import annotations

import os

import pytest

from engine.testing import private_redis
from tests.conftest import app_fixture

APP = "tests.apps.reliable"


rapp = app_fixture("tests.apps.reliable")


@pytest.fixture
def own_redis(env, rapp):
    """A Redis of this test's own (outages and restarts must not hit the shared one); the
    app here and every worker started with ``own_redis.env`` use it."""
    with private_redis(prefix="engine-own-") as server:
        saved = os.environ["ENGINE_BROKER_URL"]
        os.environ["ENGINE_BROKER_URL"] = server.url
        server.env = {"ENGINE_BROKER_URL": server.url}
        rapp.close()
        try:
            yield server
        finally:
            rapp.close()
            os.environ["ENGINE_BROKER_URL"] = saved


def runs(app, key) -> list[str]:
    """What ``logged_sleep`` recorded: one ``"pid host time"`` line per run."""
    return [r.decode() for r in app.client.lrange(f"{app.conf.key_prefix}:runs:{key}", 0, -1)]


def count(app, key) -> int:
    return int(app.client.get(f"{app.conf.key_prefix}:runs:{key}") or 0)


def kill_hard(worker) -> None:
    """SIGKILL a worker and its children (its pool) at once, as a machine crash would."""
    worker.kill_all(close_log=False)
