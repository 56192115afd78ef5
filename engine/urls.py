"""Broker and backend URLs: the schemes we take, the client each makes, and how to show one.

=================================================  ===========================================
URL                                                client
=================================================  ===========================================
``redis://[user:pw@]host:port/db``                 ``redis.Redis.from_url``
``rediss://...?ssl_ca_certs=..&ssl_cert_reqs=..``  the same, over TLS: every query parameter
                                                   redis-py's ``from_url`` takes (``ssl_ca_certs``,
                                                   ``ssl_certfile``, ``ssl_keyfile``,
                                                   ``ssl_cert_reqs``, ``ssl_check_hostname``...)
``unix:///path/redis.sock?db=0``                   the same, on a unix socket
``redis+sentinel://[user:pw@]h1:p1,h2:p2/M/db``    ``Sentinel([...]).master_for(M, db=db)``
``sentinel://h1:p1;sentinel://h2:p2``              Celery's spelling: the master's name from
                                                   ``broker_transport_options["master_name"]``
``redis+sentinel://...?ssl=true&ssl_ca_certs=..``  the master over TLS (sentinels: plain, or
                                                   TLS through ``sentinel_kwargs``)
``redis+cluster://[user:pw@]h1:p1,h2:p2/``         ``RedisCluster(startup_nodes=[...])``: seed
                                                   nodes, the rest found (``engine.cluster``);
                                                   ``rediss+cluster://`` over TLS
=================================================  ===========================================

Credentials in a sentinel URL are the master's (and its replicas'); sentinels that want a
password of their own take it from ``broker_transport_options["sentinel_kwargs"]``. A
sentinel-backed client resolves the master on every new connection (redis-py's
``SentinelConnectionPool``), and ``engine.wire`` makes its connections from that pool's
class and arguments, so after a failover every reconnect reaches the new master.

``redact`` is how every URL is shown (banner, logs, errors, monitor): never with a password.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, to_bool
from redis.sentinel import Sentinel

from engine.cluster import CLUSTER_SCHEMES, make_cluster_client
from engine.exceptions import ConfigurationError

SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")
#: query parameters of a sentinel URL beyond redis-py's: ``ssl=true`` makes the master's
#: connections TLS (with the ``ssl_*`` parameters as for ``rediss://``)
_SENTINEL_QUERY = {"ssl": to_bool}
#: the port of a sentinel given without one
SENTINEL_PORT = 26379


def redact(url: str) -> str:
    """The URL with its passwords (in each authority, or a ``password=`` query) hidden."""
    try:
        urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    # every "scheme://user:secret@" of the URL (Celery's sentinel lists repeat the scheme)
    url = re.sub(r"(://[^/:@;,]*):[^@/;]*@", r"\1:***@", url)
    return re.sub(r"([?&](?:password|ssl_password)=)[^&]*", r"\1***", url)


def make_client(url: str, *, transport_options: Mapping[str, Any] | None = None,
                **options: Any) -> redis.Redis:
    """The client ``url`` names, built with ``options`` (retry policy, timeouts)."""
    scheme = url.partition("://")[0].lower()
    try:
        if scheme in SENTINEL_SCHEMES:
            return _sentinel_client(url, dict(transport_options or {}), options)
        if scheme in CLUSTER_SCHEMES:
            return make_cluster_client(url, options)
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {redact(url)!r}: {exc}") from None


def _sentinel_client(url: str, transport: dict[str, Any], options: dict[str, Any]
                     ) -> redis.Redis:
    if url.lower().startswith("redis+sentinel://"):
        parts = urlsplit(url)
        hosts = _hosts(parts.netloc.rpartition("@")[2])
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// needs the master's name: "
                             "redis+sentinel://host:port,host:port/MASTER/DB")
        master = unquote(path[0])
        db = _db(path[1] if len(path) > 1 else "0")
        username, password = parts.username, parts.password
        query = parts.query
    else:
        # Celery: sentinel://[:pw@]host:port[/db];sentinel://host:port...
        hosts, db, username, password, query = [], 0, None, None, ""
        for piece in filter(None, (p.strip() for p in url.split(";"))):
            parts = urlsplit(piece)
            if parts.scheme.lower() != "sentinel":
                raise ValueError(f"expected sentinel://host:port, got {redact(piece)!r}")
            hosts += _hosts(parts.netloc.rpartition("@")[2])
            username = username or parts.username
            password = password or parts.password
            if parts.path.strip("/"):
                db = _db(parts.path.strip("/"))
            query = query or parts.query
        master = transport.get("master_name")
        if not master:
            raise ValueError("a sentinel:// URL needs broker_transport_options="
                             "{'master_name': ...}")
    kwargs = dict(options)
    for name, value in parse_qsl(query):
        parser = _SENTINEL_QUERY.get(name) or URL_QUERY_ARGUMENT_PARSERS.get(name)
        kwargs[name] = parser(value) if parser else value
    if username:
        kwargs["username"] = unquote(username)
    if password:
        kwargs["password"] = unquote(password)
    sentinel_kwargs = dict(transport.get("sentinel_kwargs") or {})
    sentinel_kwargs.setdefault("socket_connect_timeout", options.get("socket_connect_timeout", 5))
    sentinel_kwargs.setdefault("socket_timeout", 5)
    manager = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs)
    return manager.master_for(master, db=db, **kwargs)


def _hosts(netloc: str) -> list[tuple[str, int]]:
    hosts = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"bad sentinel address {item!r}")
        try:
            hosts.append((host.strip("[]"), int(port) if port else SENTINEL_PORT))
        except ValueError:
            raise ValueError(f"bad sentinel port in {item!r}") from None
    if not hosts:
        raise ValueError("no sentinel given")
    return hosts


def _db(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the database must be a number, got {text!r}") from None


def connect(url: str, *, conf: Any = None) -> redis.Redis:
    """A client that rides out short outages: a command that meets a dropped connection
    or a restarting Redis (or, through Sentinel, a failover) is retried with doubling waits,
    then raises ConnectionError. Every URL scheme of this module.
    No socket timeout: blocking reads (BLMOVE in ``get``, XREADGROUP) wait longer."""
    if conf is None:
        from engine.config import Config   # the defaults (config imports nothing of ours)
        conf = Config()
    retry = Retry(ExponentialBackoff(cap=float(conf.broker_connection_backoff_max), base=0.1),
                  int(conf.broker_connection_retries))
    return make_client(url, transport_options=conf.broker_transport_options,
                            socket_connect_timeout=5, retry=retry,
                            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
