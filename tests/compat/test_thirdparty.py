"""The two third-party-shaped task modules of tests/compat/thirdparty on a real worker:
they run with only their import changed. Their URLs come from the environment, as a
deployment of them would set it (tests/compat/README.md)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for

TIMEOUT = 30


@pytest.fixture
def backend_env(env, redis_server, monkeypatch):
    """Where the modules' own URLs point elsewhere (amqp://, localhost): the engine's
    variables, which win over URLs set in code, for the worker and for this process."""
    monkeypatch.setenv("ENGINE_RESULT_BACKEND", redis_server.url)
    monkeypatch.setenv("CELERY_BROKER_URL", redis_server.url)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", redis_server.url)
    return {"ENGINE_RESULT_BACKEND": redis_server.url, "CELERY_BROKER_URL": redis_server.url,
            "CELERY_RESULT_BACKEND": redis_server.url}


def test_flower_example_tasks_run_unchanged(backend_env, run_worker):
    from tests.compat.thirdparty import monitor_examples as m
    m.app.close()
    try:
        run_worker("--pool", "threads", "-c", "2", extra_env=backend_env,
                   app="tests.compat.thirdparty.monitor_examples:app")
        assert m.add.delay(2, 3).get(timeout=TIMEOUT) == 5
        assert m.echo.delay("hi").get(timeout=TIMEOUT) == "hi"
        assert m.echo.delay("hi", timestamp=True).get(timeout=TIMEOUT).endswith(": hi")
        assert m.sleep.delay(0.1).get(timeout=TIMEOUT) is None
        failed = m.error.delay("boom")
        with pytest.raises(Exception, match="boom"):
            failed.get(timeout=TIMEOUT)
        assert failed.state == "FAILURE"
    finally:
        m.app.close()


def test_fastapi_tutorial_worker_reports_progress(backend_env, run_worker):
    from tests.compat.thirdparty import progress_worker as w
    w.celery.close()
    try:
        run_worker("--pool", "threads", extra_env=backend_env,
                   app="tests.compat.thirdparty.progress_worker:celery")
        result = w.create_task.delay(4)
        wait_for(lambda: result.state == "PROGRESS" and result.info["current"] >= 1,
                 message="PROGRESS with a step")
        assert result.info["total"] == 4
        assert result.get(timeout=TIMEOUT) is True
        # the web side of that project sends by name
        assert w.celery.send_task("create_task", args=[1]).get(timeout=TIMEOUT) is True
    finally:
        w.celery.close()
