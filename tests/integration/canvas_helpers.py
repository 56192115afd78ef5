"""Fixtures and helpers shared by the canvas tests."""

from __future__ import annotations

import pytest

from engine import message

APP = "tests.apps.canvas"


@pytest.fixture
def capp(env):
    from tests.apps.canvas import app
    app.close()   # connections are remade with this test's environment
    yield app
    app.close()


def key(app, name: str) -> str:
    return f"{app.conf.key_prefix}:t:{name}"


def count(app, name: str) -> int:
    return int(app.client.get(key(app, name)) or 0)


def recorded(app, name: str) -> list:
    """What ``record`` was given, one ``[args, kwargs]`` per run."""
    return [message.loads(raw) for raw in app.client.lrange(key(app, name), 0, -1)]
