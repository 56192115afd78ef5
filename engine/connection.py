"""Whether the broker can be reached: one quick probe, and the worker's wait at start.

A client made by ``engine.app.connect`` retries each command for a while (it rides out a
restarting Redis), which leaves a person waiting seconds for a traceback when no Redis is
there at all. This module asks once, without retries, and turns the answer into one line:
commands of the CLI probe before they talk to the broker; a starting worker probes again
and again with a doubling wait (Celery's ``broker_connection_retry`` and
``broker_connection_max_retries``), logging one line per failed attempt, and gives up with
``BrokerUnavailable``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
import time

import redis
from redis.retry import Retry
from redis.backoff import NoBackoff

from engine.cluster import is_cluster, topology
from engine.exceptions import BrokerUnavailable
from engine.urls import make_client, redact

log = logging.getLogger("engine.worker")

#: seconds a probe waits for the connection and for the PING answer
PROBE_TIMEOUT = 3.0
#: seconds before the first retry at start; each later wait doubles, up to RETRY_MAX_WAIT
RETRY_FIRST_WAIT = 1.0
RETRY_MAX_WAIT = 30.0

#: errors that mean "the broker is not there" (a bad host name is an OSError inside redis-py)
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


def reason(exc: BaseException) -> str:
    """The part of a connection error a person needs: redis-py's text, on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.rstrip(".")


def _client(url: str, timeout: float, transport_options: dict | None) -> redis.Redis:
    """A client that asks once (no retries) and waits at most ``timeout``."""
    return make_client(url, transport_options=transport_options,
                       socket_connect_timeout=timeout, socket_timeout=timeout,
                       retry=Retry(NoBackoff(), 0))


def probe(url: str, *, timeout: float = PROBE_TIMEOUT,
          transport_options: dict | None = None) -> None:
    """PING the broker at ``url`` once; BrokerUnavailable (one line, password hidden) if it
    does not answer. ``transport_options``: ``broker_transport_options`` (sentinel://)."""
    client = _client(url, timeout, transport_options)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise BrokerUnavailable(f"the broker at {redact(url)} refused the login: "
                                f"{reason(exc)}") from None
    except UNREACHABLE as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {redact(url)}: "
                                f"{reason(exc)}") from None
    finally:
        client.close()


def server_info(url: str, *, timeout: float = PROBE_TIMEOUT, prefix: str = "engine",
                queues: tuple[str, ...] = ()) -> dict:
    """``broker status`` of a configured broker: its redacted URL, version, pid and uptime
    (on a Redis Cluster: of one node, and ``cluster``: its masters and each queue's slot
    and master, ``engine.cluster.topology``); BrokerUnavailable when it does not answer."""
    probe(url, timeout=timeout)
    client = _client(url, timeout, None)
    try:
        server = client.info("server")
        shards = topology(client, prefix, queues) if is_cluster(client) else None
    except UNREACHABLE as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {redact(url)}: "
                                f"{reason(exc)}") from None
    finally:
        client.close()
    info = {"broker": redact(url), "configured": True, "running": True,
            "version": server.get("redis_version"), "pid": server.get("process_id"),
            "uptime_s": server.get("uptime_in_seconds")}
    if shards is not None:
        info["cluster"] = shards
    return info


def next_wait(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th failed try (1, 2, 4, ... up to 30)."""
    return min(RETRY_FIRST_WAIT * 2 ** (attempt - 1), RETRY_MAX_WAIT)


def wait_for_broker(url: str, *, retry: bool = True, max_retries: int | None = 100,
                    stopping: threading.Event | None = None,
                    transport_options: dict | None = None) -> None:
    """Return once the broker answers. Each failed attempt logs one warning with the URL
    and when the next attempt is; after ``max_retries`` retries (0 or None: forever) or
    with ``retry`` off, raise BrokerUnavailable. ``stopping`` set ends the wait too."""
    attempt = 0
    while True:
        try:
            probe(url, transport_options=transport_options)
            if attempt:
                log.info("connected to the broker at %s after %d retr%s", redact(url), attempt,
                         "y" if attempt == 1 else "ies")
            return
        except BrokerUnavailable as exc:
            if not retry:
                raise
            attempt += 1
            if max_retries and attempt > max_retries:
                raise BrokerUnavailable(f"{exc} (gave up after {max_retries} "
                                        f"retr{'y' if max_retries == 1 else 'ies'})") from None
            wait = next_wait(attempt)
            at = time.strftime("%H:%M:%S", time.localtime(time.time() + wait))
            of = f"/{max_retries}" if max_retries else ""
            log.warning("%s; retry %d%s in %g s (at %s)", exc, attempt, of, wait, at)
        if stopping is not None:
            if stopping.wait(wait):
                raise BrokerUnavailable(f"stopped while waiting for the broker at {redact(url)}")
        else:
            time.sleep(wait)


def wait_for_app(app: Any) -> None:
    """``wait_for_broker`` with the app's settings (``broker_connection_retry``,
    ``broker_connection_max_retries``, ``broker_transport_options``)."""
    conf = app.conf
    wait_for_broker(app.broker_url, retry=bool(conf.broker_connection_retry),
                    max_retries=conf.broker_connection_max_retries or None,
                    transport_options=conf.get("broker_transport_options"))
