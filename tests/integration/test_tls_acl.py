"""``rediss://`` with certificate options and ACL users, against a real TLS redis-server:
producer and worker talk TLS (with client certificates), and an ACL password never shows in
the worker's log or in ``engine inspect`` output."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import pytest
import redis

from tests.apps.basic import add
from tests.conftest import ROOT, wait_for
from tests.integration.production_servers import (ServerProcess, free_port, make_certs,
                                                  plain_args, tls_binary)

USER, PASSWORD = "engine-app", "pw-Zq81-never-printed"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """One server: a plain port (for the ACL test) and a TLS port that wants client certs."""
    binary = tls_binary()
    d = tmp_path_factory.mktemp("tls")
    certs = make_certs(d)
    port, tls_port = free_port(), free_port()
    server = ServerProcess(binary, d / "data", port, [
        *plain_args(port), "--tls-port", str(tls_port),
        "--tls-cert-file", str(certs["server"]), "--tls-key-file", str(certs["server-key"]),
        "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "yes"])
    server.start()
    admin = redis.Redis(host="127.0.0.1", port=port)
    # what docs/production.md tells operators to grant, for the tests' prefixes (t...):
    # the prefix's keys and channels, no dangerous commands
    admin.execute_command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~t*", "&t*",
                          "+@all", "-@dangerous")
    admin.close()
    server.certs = certs
    server.tls_port = tls_port
    server.tls_url = (f"rediss://{USER}:{quote(PASSWORD)}@127.0.0.1:{tls_port}/0"
                      f"?ssl_ca_certs={certs['ca']}&ssl_certfile={certs['client']}"
                      f"&ssl_keyfile={certs['client-key']}&ssl_cert_reqs=required")
    server.acl_url = f"redis://{USER}:{quote(PASSWORD)}@127.0.0.1:{port}/0"
    yield server
    server.stop()


@pytest.fixture
def on(app, monkeypatch):
    """Point the app in this process (and what it starts) at ``url``."""
    def use(url: str) -> dict:
        monkeypatch.setenv("ENGINE_BROKER_URL", url)
        app.close()
        return {"ENGINE_BROKER_URL": url}
    yield use
    app.close()


def test_producer_and_worker_over_tls_with_client_certificates(tls, app, on, run_worker):
    env = on(tls.tls_url)
    worker = run_worker("--pool", "threads", "-c", "2", extra_env=env)
    assert add.delay(2, 3).get(timeout=60) == 5
    assert [r.get(timeout=60) for r in add.delay_many([(i, i) for i in range(50)])] == \
        [2 * i for i in range(50)]
    assert add.apply_async((1, 1), countdown=0.3).get(timeout=60) == 2   # the mover script
    assert "rediss://" in worker.log and PASSWORD not in worker.log
    # the TLS port really wants TLS and the client certificate the URL names
    plain = redis.Redis(host="127.0.0.1", port=tls.tls_port, socket_connect_timeout=2,
                        socket_timeout=2)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    no_cert = redis.Redis(host="127.0.0.1", port=tls.tls_port, ssl=True, username=USER,
                          password=PASSWORD, ssl_ca_certs=str(tls.certs["ca"]),
                          socket_connect_timeout=2, socket_timeout=2)
    with pytest.raises(redis.ConnectionError):
        no_cert.ping()


def inspect(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "inspect", "-A", "tests.apps.basic",
                           *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_acl_user_password_works_and_is_never_printed(tls, app, on, env, run_worker):
    url_env = on(tls.acl_url)
    worker = run_worker("--pool", "solo", "-n", "acl-w", extra_env=url_env)
    assert add.delay(20, 22).get(timeout=60) == 42
    who = redis.Redis(host="127.0.0.1", port=tls.port)   # the default (admin) user
    assert any(c.get("user") == USER for c in who.client_list())   # really that user
    who.close()
    penv = dict(env, **url_env)
    stats = wait_for(lambda: (lambda out: "acl-w" in out.stdout and out)(
        inspect(penv, "stats", "--json", "-t", "5")), message="stats from the worker")
    human = inspect(penv, "stats", "-t", "5")
    assert human.returncode == 0 and "acl-w" in human.stdout
    for text in (worker.log, stats.stdout, stats.stderr, human.stdout, human.stderr):
        assert PASSWORD not in text and quote(PASSWORD) not in text
    assert f"{USER}:***@" in worker.log
    assert "permission" not in worker.log.lower()   # the documented grant is enough
    # a wrong password: a clear error, and still no password in it
    wrong = dict(penv, ENGINE_BROKER_URL=tls.acl_url.replace(quote(PASSWORD), "wrong-pw-77"))
    refused = inspect(wrong, "ping", "-t", "1")
    assert refused.returncode == 1
    assert "error: the broker" in refused.stderr and "Traceback" not in refused.stderr
    assert "wrong-pw-77" not in refused.stdout + refused.stderr
