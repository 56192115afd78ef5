"""Fixtures shared by every test: one private redis-server per session, and real workers.

The server runs on a unix socket in a temp dir and is stopped at the end; tests never touch
a Redis they did not start. ``run_worker`` starts ``engine run`` as a real process and kills
it (and its children) by pid at teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis

from engine import embedded

ROOT = Path(__file__).resolve().parent.parent

#: seconds tests wait for a condition before failing (generous: CI machines are busy)
DEADLINE = 60.0


def wait_for(condition, timeout: float = DEADLINE, interval: float = 0.02, message: str = ""):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server on a unix socket in ``directory`` (AOF on unless ``aof``)."""

    def __init__(self, directory: Path, *, aof: bool = True) -> None:
        self.dir = directory
        self.aof = aof
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}?db=0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = embedded.server_args(self.dir, socket=self.socket, daemonize=False, aof=self.aof)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: embedded.ping(self.dir), 30, message="redis-server to answer")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server():
    with tempfile.TemporaryDirectory(prefix="engine-test-redis-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def client(redis_server):
    """A redis-py client on the session's server (this directory's ``redis_server``)."""
    c = redis_server.client()
    yield c
    c.close()


@pytest.fixture(scope="session", autouse=True)
def _engine_home(tmp_path_factory):
    # no test may start or use the user's embedded Redis under ~/.engine
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
def prefix():
    """A key prefix of this test's own, so tests sharing the server never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def env(redis_server, prefix):
    """Environment for engine processes and for the app in this process."""
    values = {"ENGINE_BROKER_URL": redis_server.url, "ENGINE_KEY_PREFIX": prefix}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
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


class Worker:
    """A real ``engine run`` process."""

    def __init__(self, args: list[str], env: dict, log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "run", *args], env=env,
                                     cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    @property
    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def wait_ready(self, timeout: float = DEADLINE) -> "Worker":
        wait_for(lambda: "ready:" in self.log or self.proc.poll() is not None, timeout,
                 message=f"worker {self.args} to be ready")
        assert self.proc.poll() is None, f"worker exited early:\n{self.log}"
        return self

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill_all(self, *, close_log: bool = True) -> None:
        """SIGKILL the worker and every process under it, by pid."""
        procs = self.children()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for child in procs:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if close_log:
            self.log_file.close()


@pytest.fixture
def run_worker(env, tmp_path):
    started: list[Worker] = []

    def start(*args: str, app: str = "tests.apps.basic", ready: bool = True,
              extra_env: dict | None = None) -> Worker:
        worker = Worker(["-A", app, *args], dict(env, **(extra_env or {})),
                        tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.kill_all()


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
