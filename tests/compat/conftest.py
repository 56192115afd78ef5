"""A real worker for the ported Celery cases: ``engine run -A tests.compat.celeryapp`` on
the queue ``celery`` with one thread slot, as Celery's integration worker has one, named
``celery@compat`` (Celery's node names are ``name@host``)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for

APP = "tests.compat.celeryapp"
NODENAME = "celery@compat"


@pytest.fixture
def celery_app(env):
    from tests.compat.celeryapp import app
    app.close()   # connections are remade with this test's environment
    yield app
    app.close()


@pytest.fixture
def manager(celery_app, run_worker):
    """Celery's ``manager`` fixture gives the app with a worker running: so does this one
    (``manager.app``), the worker being ``manager.worker``."""
    worker = run_worker("--pool", "threads", "-c", "1", "-n", NODENAME, app=APP)
    # ready is logged before the control subscription is surely active
    wait_for(lambda: celery_app.control.inspect(timeout=5).ping(), message="the worker")

    class Manager:
        app = celery_app
    Manager.worker = worker
    return Manager
