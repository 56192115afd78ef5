"""Fixtures shared by every test: one private redis-server per session, and real workers.

The server and the ``engine run`` processes come from ``engine.testing`` (a unix socket in a
temp dir, stopped at the end; workers killed with their children by pid at teardown); tests
never touch a Redis they did not start. This module keeps the fixtures and the test helpers.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from engine.testing import DEADLINE, RedisServer, Worker, engine_env, shared_fixtures, wait_for

__all__ = ["DEADLINE", "ROOT", "RedisServer", "Worker", "wait_for", "events_of", "wait_started"]

#: the checkout: workers run here, with it first on PYTHONPATH (tests.apps is imported there)
ROOT = Path(__file__).resolve().parent.parent


# the session's private server, a client on it, and an ENGINE_HOME of its own (no test may
# start or use the user's embedded Redis under ~/.engine)
redis_server, client, _engine_home = shared_fixtures(redis_prefix="engine-test-redis-")


@pytest.fixture
def prefix():
    """A key prefix of this test's own, so tests sharing the server never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def env(redis_server, prefix):
    """Environment for engine processes and for the app in this process."""
    values = {"ENGINE_BROKER_URL": redis_server.url, "ENGINE_KEY_PREFIX": prefix}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield engine_env({}, root=ROOT)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def app(env):
    from tests.apps.basic import app as basic_app
    basic_app.close()   # connections are remade with this test's environment
    basic_app.conf._layers["update"].pop("broker_url", None)
    yield basic_app
    basic_app.close()


@pytest.fixture
def run_worker(env, tmp_path):
    started: list[Worker] = []

    def start(*args: str, app: str = "tests.apps.basic", ready: bool = True,
              extra_env: dict | None = None) -> Worker:
        worker = Worker(["-A", app, *args], env=dict(env, **(extra_env or {})),
                        log_path=tmp_path / f"worker-{len(started)}.log", cwd=ROOT)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.kill_all()


@pytest.fixture
def harnesses(tmp_path):
    """Started ``pools.testing`` harnesses, closed after the test:
    ``harnesses(PoolClass, concurrency, runner=..., options=...)``."""
    from pools.testing import Harness
    made = []

    def start(pool_class, concurrency: int, *, runner=None, **kwargs):
        harness = Harness(pool_class, concurrency, tmp_path, **kwargs)
        if runner is not None:
            harness.pool.runner = runner
        made.append(harness.start())
        return harness

    yield start
    for harness in made:
        harness.close()


@pytest.fixture
def engine(env):
    """Runs the real ``engine`` command line with this test's environment."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "engine", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    return run


def app_fixture(module: str):
    """A fixture giving ``module``'s app, its connections made with the test's environment."""
    @pytest.fixture
    def fixture(env):
        app = importlib.import_module(module).app
        app.close()   # connections are remade with this test's environment
        yield app
        app.close()
    return fixture


def events_of(app, kind: str | None = None) -> list[dict]:
    """Every event in the app's event stream (optionally of one type)."""
    from engine.events import unpack
    found = []
    for _, fields in app.client.xrange(app.broker.keys.events):
        found.extend(e for e in unpack(fields) if kind is None or e["type"] == kind)
    return found


def wait_started(app, task_id: str, timeout: float = DEADLINE) -> None:
    """Wait until a worker reports that the task began running."""
    wait_for(lambda: any(e.get("id") == task_id for e in events_of(app, "task-started")),
             timeout, message=f"task {task_id} to start")
