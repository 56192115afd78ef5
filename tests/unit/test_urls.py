"""engine.urls: which client each URL scheme makes, and URLs shown without passwords."""

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from engine import urls
from engine.app import connect
from engine.config import Config
from engine.exceptions import ConfigurationError


@pytest.mark.parametrize("url, shown", [
    ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://:s3cret@host/0", "redis://:***@host/0"),
    ("rediss://u:p%40ss@host:6380/0?ssl_ca_certs=/ca.pem", "rediss://u:***@host:6380/0?ssl_ca_certs=/ca.pem"),
    ("redis://host:6379/0?password=s3cret&db=1", "redis://host:6379/0?password=***&db=1"),
    ("redis+sentinel://u:s3cret@s1:26379,s2:26379/mymaster/0",
     "redis+sentinel://u:***@s1:26379,s2:26379/mymaster/0"),
    ("sentinel://:s3cret@s1:26379;sentinel://:s3cret@s2:26379",
     "sentinel://:***@s1:26379;sentinel://:***@s2:26379"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("unix:///tmp/r.sock?db=0", "unix:///tmp/r.sock?db=0"),
])
def test_redact_hides_every_password(url, shown):
    assert urls.redact(url) == shown
    assert "s3cret" not in urls.redact(url)


def test_rediss_takes_redis_py_certificate_options():
    client = connect("rediss://u:pw@127.0.0.1:6380/2?ssl_ca_certs=/etc/ca.pem"
                     "&ssl_certfile=/etc/c.pem&ssl_keyfile=/etc/k.pem&ssl_cert_reqs=required")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"],
            kwargs["ssl_cert_reqs"]) == ("/etc/ca.pem", "/etc/c.pem", "/etc/k.pem", "required")
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("u", "pw", 2)


def test_redis_sentinel_url_makes_a_master_client():
    client = connect("redis+sentinel://u:pw@10.0.0.1:26379,10.0.0.2/mymaster/3")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    assert pool.is_master
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["host"] == "10.0.0.1"
    assert [s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels] \
        == [26379, 26379]
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "pw")
    assert kwargs["retry"] is not None   # the engine's retry policy rides failovers


@pytest.mark.parametrize("flag, tls", [("true", True), ("false", False)])
def test_sentinel_url_with_ssl_makes_tls_master_connections(flag, tls):
    from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
    client = connect(f"redis+sentinel://s1:26379/m/0?ssl={flag}&ssl_ca_certs=/ca.pem")
    wanted = SentinelManagedSSLConnection if tls else SentinelManagedConnection
    assert client.connection_pool.connection_class is wanted


def test_celery_sentinel_url_takes_the_master_from_transport_options():
    conf = Config(broker_transport_options={"master_name": "cache"})
    client = connect("sentinel://:pw@s1:26379/1;sentinel://s2:26380", conf=conf)
    pool = client.connection_pool
    assert pool.service_name == "cache" and pool.connection_kwargs["db"] == 1
    assert pool.connection_kwargs["password"] == "pw"
    assert len(pool.sentinel_manager.sentinels) == 2


@pytest.mark.parametrize("url, message", [
    ("sentinel://s1:26379", "master_name"),
    ("redis+sentinel://s1:26379", "master's name"),
    ("redis+sentinel://:pw@s1:26379/mymaster/notanumber", "must be a number"),
    ("redis+sentinel://:pw@s1:port/mymaster/0", "bad sentinel port"),
])
def test_bad_sentinel_urls_are_clear_errors_without_the_password(url, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        connect(url)
    assert ":pw@" not in str(info.value)


def test_cluster_urls_take_seed_nodes_and_refuse_what_a_cluster_cannot_be():
    from engine.urls import make_client
    with pytest.raises(ConfigurationError, match="needs at least one node"):
        make_client("redis+cluster:///")
    with pytest.raises(ConfigurationError, match="database 0 only"):
        make_client("redis+cluster://127.0.0.1:1/3")
    with pytest.raises(ConfigurationError, match="bad cluster node port"):
        make_client("redis+cluster://127.0.0.1:x/")
