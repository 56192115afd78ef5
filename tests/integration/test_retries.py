"""Retries: self.retry(countdown=, exc=, max_retries=), autoretry_for, backoff with jitter
and a cap, max_retries; the result shows the retry count and the final state."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.exceptions import MaxRetriesExceededError
from tests.apps.reliable import (always_retry, autoretried, retry_limit_override,
                                 retry_past_expiry, succeed_on_third)
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, count, rapp  # noqa: F401


@pytest.fixture
def worker(rapp, run_worker):
    return run_worker("--pool", "threads", "-c", "4", app=APP)


def test_retry_until_it_succeeds_shows_the_count(rapp, worker):
    r = succeed_on_third.delay("third")
    assert r.get(timeout=60) == {"runs": 3, "retries": 2}
    assert r.state == "SUCCESS" and r.retries == 2


def test_retry_past_max_retries_raises_the_given_exception(rapp, worker):
    # Given a task that always asks to retry with exc=ValueError, max_retries=2
    r = always_retry.delay("always")
    # Then it runs three times and ends in FAILURE with that exception, after 2 retries
    with pytest.raises(ValueError, match="attempt 2"):
        r.get(timeout=60)
    assert r.state == "FAILURE" and r.retries == 2
    assert count(rapp, "always") == 3


def test_max_retries_given_to_retry_wins(rapp, worker):
    r = retry_limit_override.delay("override")
    with pytest.raises(MaxRetriesExceededError):
        r.get(timeout=60)
    assert r.retries == 1 and count(rapp, "override") == 2


def test_autoretry_for_with_backoff(rapp, worker):
    r = autoretried.delay("auto")
    with pytest.raises(KeyError):
        r.get(timeout=60)
    assert r.state == "FAILURE" and r.retries == 3
    assert count(rapp, "auto") == 4


def test_interim_state_is_retry(rapp, worker):
    from tests.apps.reliable import retry_once_later
    r = retry_once_later.delay("interim")
    wait_for(lambda: r.state == "RETRY", message="the RETRY state")
    assert r.retries == 1 and not r.ready()
    # And the retry waits in Redis, not in the worker (the status, the delayed copy and the
    # ack go in one pipelined batch: a read may land between its commands)
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="the ack")
    assert rapp.broker.depth("default")["delayed"] == 1


def test_a_retry_due_after_expires_is_revoked_not_run(rapp, worker):
    # Given a task that expires 1 s after it is sent and retries 1.5 s later
    r = retry_past_expiry.delay("expiring")
    # Then the retry is never run: the result is REVOKED
    wait_for(lambda: r.state == "REVOKED", message="the expired retry to be revoked")
    assert count(rapp, "expiring") == 1


def test_backoff_doubles_up_to_the_cap_with_jitter_below_it():
    app = Engine("backoff-unit", broker="redis://unused")

    @app.task(retry_backoff=1.0, retry_backoff_max=10.0, retry_jitter=False)
    def exact():
        pass

    @app.task(retry_backoff=1.0, retry_backoff_max=10.0)
    def jittered():
        pass

    @app.task(default_retry_delay=7.0)
    def plain():
        pass

    assert [exact.backoff(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    for n in range(8):
        assert all(0 <= jittered.backoff(n) <= min(10.0, 2 ** n) for _ in range(50))
    assert len({jittered.backoff(5) for _ in range(20)}) > 1
    assert plain.backoff(4) == 7.0
