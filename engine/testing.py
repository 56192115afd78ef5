"""Test support: starts and owns a private redis-server (on a unix socket, or a free loopback
port, in a temp dir) and ``python -m engine ...`` processes such as ``engine run`` workers, each
in a session of its own, killed by pid, its children never outliving it. Used by tests/, bench/,
the dashboard tests and ``engine bench``; their fixtures, tasks and measurements stay with them.
pytest is imported only by ``shared_fixtures``, which a conftest calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import psutil
import redis

from engine import embedded

#: the folder holding engine/ and pools/ (the checkout, in an editable install): put first on
#: PYTHONPATH so that child processes run this code
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
#: seconds a wait gives a condition before failing (generous: CI machines are busy)
DEADLINE = 60.0
#: seconds a warm stop is given before ``close`` kills what is left
GRACE = 15.0

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = DEADLINE, interval: float = 0.02,
             message: str = "") -> T:
    """Poll ``condition`` until it returns something truthy (returned); AssertionError after
    ``timeout``. The deadline only turns a hang into a failure: it is never a measurement."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def temp_log(prefix: str) -> Path:
    """A new empty file for a process's log, in the temp dir; its owner removes it."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(path)


def engine_env(values: Mapping[str, str], *, root: Path = PACKAGE_ROOT,
               base: Mapping[str, str] | None = None, drop: Iterable[str] = ()) -> dict[str, str]:
    """The environment of an engine process: ``base`` (default ``os.environ``) without the
    variables in ``drop``, with ``values``, and ``root`` first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    for name in drop:
        env.pop(name, None)
    env.update(values)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


class RedisServer:
    """A private redis-server keeping its files in ``directory``: on the unix socket
    ``directory/redis.sock``, or with ``tcp`` on a free port of 127.0.0.1 (for clients that
    cannot use a socket). AOF persistence unless ``aof`` is False."""

    def __init__(self, directory: Path, *, aof: bool = True, tcp: bool = False) -> None:
        self.dir = Path(directory)
        self.aof = aof
        self.socket: Path | None = None if tcp else self.dir / "redis.sock"
        self.port = free_port() if tcp else 0
        self.url = (f"redis://127.0.0.1:{self.port}/0" if tcp
                    else f"unix://{self.socket}?db=0")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = embedded.server_args(self.dir, socket=self.socket, port=self.port,
                                    daemonize=False, aof=self.aof)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: self.answers() or self.proc.poll() is not None, 30,
                 message="redis-server to answer")
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {self.proc.returncode}: "
                               + self._log_tail())

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no redis.log)"


def stop_process(proc: "subprocess.Popen | None", grace: float = GRACE) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, and reap: a process we started."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def private_redis(*, prefix: str = "engine-redis-", aof: bool = True,
                  tcp: bool = False) -> Iterator[RedisServer]:
    """A started RedisServer in a new temp dir (short: a unix socket path is limited to about
    100 characters); stopped, and the dir removed, on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as tmp:
        server = RedisServer(Path(tmp), aof=aof, tcp=tcp)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def engine_home(directory: Path) -> Iterator[Path]:
    """``ENGINE_HOME`` set to ``directory`` meanwhile, so that nothing started then starts or
    uses the user's embedded Redis under ~/.engine; on exit an embedded Redis started there is
    stopped and the old value put back."""
    old = os.environ.get("ENGINE_HOME")
    os.environ["ENGINE_HOME"] = str(directory)
    try:
        yield Path(directory)
    finally:
        embedded.stop(Path(directory))
        if old is None:
            os.environ.pop("ENGINE_HOME", None)
        else:
            os.environ["ENGINE_HOME"] = old


def shared_fixtures(*, redis_prefix: str,
                    aof: bool = True) -> tuple[Callable, Callable, Callable]:
    """The fixtures tests/ and bench/ share, made for one conftest, which assigns them to
    their names: ``redis_server, client, _engine_home = shared_fixtures(redis_prefix=...)``.
    ``redis_server`` is the session's ``private_redis``, ``client`` a redis-py client on it
    (per test), ``_engine_home`` (autouse) an ENGINE_HOME of the session's own."""
    import pytest   # here, not at the top: ``engine bench`` imports this module, pytest-free

    @pytest.fixture(scope="session")
    def redis_server():
        with private_redis(prefix=redis_prefix, aof=aof) as server:
            yield server

    @pytest.fixture
    def client(redis_server):
        """A redis-py client on the session's server (``redis_server``)."""
        c = redis_server.client()
        yield c
        c.close()

    @pytest.fixture(scope="session", autouse=True)
    def _engine_home(tmp_path_factory):
        with engine_home(tmp_path_factory.mktemp("engine-home")) as home:
            yield home

    return redis_server, client, _engine_home


class EngineProcess:
    """``python -m engine COMMAND ARGS`` as a real process, started at construction, its
    stdout and stderr in ``log_path``.

    It runs in a session of its own, so that a signal meant for the caller (a terminal's
    Ctrl-C) does not reach it and its process group can be killed whole. Whoever made it owns
    it: ``kill_all`` or ``close`` ends it and every process under it, by pid.
    """

    def __init__(self, command: str, args: Sequence[str], *, env: Mapping[str, str],
                 log_path: Path, cwd: Path | None = None) -> None:
        self.args = list(args)
        self.log_path = Path(log_path)
        self.log_file = open(self.log_path, "wb")
        self.started_at = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", command, *self.args],
                                     env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid

    @property
    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, nbytes: int = 3000) -> str:
        """The last ``nbytes`` of the log (for an error message)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - nbytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        """Every process under it now (none once it has exited: its pid may then be reused)."""
        if self.proc.poll() is not None:
            return []
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = DEADLINE) -> int:
        """Warm stop: SIGTERM, then its exit code (TimeoutExpired if none within ``timeout``)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill_all(self, *, close_log: bool = True) -> None:
        """SIGKILL it, its process group and every process under it, by pid."""
        procs = self.children()
        if self.proc.poll() is None:
            self.proc.kill()
        self._kill_group()   # before the wait: an unreaped leader keeps the group id ours
        self.proc.wait()
        for child in procs:   # those that left its group (a lane in a session of its own)
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if close_log:
            self.log_file.close()

    def close(self, grace: float = GRACE) -> None:
        """Warm stop given ``grace`` seconds, then ``kill_all`` for whatever is left."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill_all()

    def remove_log(self) -> None:
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    def _kill_group(self) -> None:
        # The group id is the leader's pid. Once the leader is reaped, a live process with
        # that pid is a newcomer (pid_max may be 32768), and the group is its own, not ours.
        if self.proc.returncode is not None and psutil.pid_exists(self.pid):
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)   # stragglers whose parent is gone
        except (ProcessLookupError, PermissionError):
            pass


class Worker(EngineProcess):
    """A real ``engine run ARGS`` worker."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        super().__init__("run", args, env=env, log_path=log_path, cwd=cwd)

    def wait_ready(self, timeout: float = DEADLINE) -> "Worker":
        """Wait for its ``ready:`` log line (needs ``-l info`` or lower); fails if it exits."""
        wait_for(lambda: "ready:" in self.log or self.proc.poll() is not None, timeout,
                 message=f"worker {self.args} to be ready")
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{self.log}")
        return self
