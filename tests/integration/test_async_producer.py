"""The async producer API (engine/aio.py) inside a plain asyncio program and a Starlette
app, against a real worker: adelay, aapply_async, aget, agather, on redis.asyncio alone."""

import asyncio

import httpx
import pytest

from engine.exceptions import TimeLimitExceeded
from tests.apps.aio import aadd, add, asleep

APP = "tests.apps.aio"


@pytest.fixture
def aio(env):
    from tests.apps.aio import app
    app.close()
    yield app
    app.close()


def _sync_commands_sent(app):
    """Whether any command went through the app's blocking clients (a thread hop or a
    blocking call would have used them): each Wire keeps its used connections idle."""
    wires = [owner.wire for owner in (app._broker, app._backend) if owner is not None]
    pool = app._client.connection_pool if app._client is not None else None
    return any(w._idle for w in wires) or bool(pool and pool._created_connections)


def test_adelay_aget_and_agather_in_an_asyncio_program(aio, run_worker):
    run_worker("--pool", "threads", "-c", "4", app=APP)

    async def main():
        one = await add.adelay(2, 3)
        later = await aadd.aapply_async((4, 5), countdown=0.5)
        many = [await add.adelay(i, i) for i in range(20)]
        assert await one.aget(timeout=60) == 5
        assert await later.aget(timeout=60) == 9
        return await aio.agather(many, timeout=60)

    # Given a running event loop, When tasks are sent and awaited there
    assert asyncio.run(main()) == [2 * i for i in range(20)]
    # Then nothing went through the blocking clients
    assert not _sync_commands_sent(aio)
    # (and the check does see one)
    add.delay(1, 1).get(timeout=60)
    assert _sync_commands_sent(aio)


def test_aget_raises_the_tasks_exception_and_times_out(aio, run_worker):
    run_worker("--pool", "threads", "-c", "2", app=APP)

    async def main():
        failed = await asleep.aapply_async((60,), time_limit=0.5)
        with pytest.raises(TimeLimitExceeded):
            await failed.aget(timeout=60)
        slow = await asleep.adelay(30)
        with pytest.raises(TimeoutError):
            await slow.aget(timeout=0.2)
        with pytest.raises(TimeoutError):
            await aio.agather([slow], timeout=0.2)

    asyncio.run(main())


def test_the_async_path_sends_the_sync_paths_bytes(aio):
    # Given the same call sent once each way, with the same id
    add.apply_async((1, 2), task_id="same-id", time_limit=5)

    async def main():
        await add.aapply_async((1, 2), task_id="same-id", time_limit=5)

    asyncio.run(main())
    # Then the two stream entries carry the very same body
    entries = aio.client.xrange(aio.broker.keys.queue("default"))
    assert len(entries) == 2
    assert entries[0][1] == entries[1][1]
    assert aio.client.smembers(aio.broker.keys.queues) == {b"default"}


def test_a_client_per_loop(aio):
    async def get_client():
        return aio.aclient, aio.aclient

    a1, a2 = asyncio.run(get_client())
    b1, _ = asyncio.run(get_client())
    assert a1 is a2 and a1 is not b1
    with pytest.raises(RuntimeError):
        aio.aclient


def test_a_starlette_app_sends_and_waits(aio, run_worker):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def handler(request):
        x, y = int(request.query_params["x"]), int(request.query_params["y"])
        result = await aadd.adelay(x, y)
        return JSONResponse({"id": result.id, "value": await result.aget(timeout=60)})

    web = Starlette(routes=[Route("/add", handler)])
    run_worker("--pool", "asyncio", "-c", "10", app=APP)

    async def main():
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            replies = await asyncio.gather(*(http.get("/add", params={"x": i, "y": 1})
                                             for i in range(10)))
        return [r.json()["value"] for r in replies]

    assert asyncio.run(main()) == [i + 1 for i in range(10)]
    assert not _sync_commands_sent(aio)
