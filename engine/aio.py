"""The async producer side, on ``redis.asyncio``: send a task and wait for results from inside
a running event loop (a FastAPI/Starlette handler) without a thread hop or a blocking call.

Owns the asyncio clients: one per app per event loop (a client's connections belong to the
loop that made them), made on first use and dropped with their loop. The bytes sent are the
sync path's: the body from ``Engine._body`` (``engine.message.encode_message``), the commands
from ``Broker.enqueue_commands``. ``Task.adelay``/``aapply_async`` call ``send``; waiting
(``AsyncResult.aget``, ``Engine.agather``) is in ``engine.results`` on ``Engine.aclient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from engine.cluster import is_cluster_url, make_async_cluster_client
from engine.exceptions import BrokerUnavailable, ConfigurationError
from engine.results import AsyncResult

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.task import Task

# loop -> {id(app): client}; a loop that is gone takes its clients with it
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, redis.asyncio.Redis]]" \
    = weakref.WeakKeyDictionary()


def client(app: "Engine") -> redis.asyncio.Redis:
    """The app's asyncio client on the running loop (RuntimeError outside a loop)."""
    loop = asyncio.get_running_loop()
    per_app = _clients.setdefault(loop, {})
    found = per_app.get(id(app))
    if found is None:
        found = per_app[id(app)] = _connect(app)
    return found


def _connect(app: "Engine") -> redis.asyncio.Redis:
    conf = app.conf
    retry = Retry(ExponentialBackoff(cap=float(conf.broker_connection_backoff_max), base=0.1),
                  int(conf.broker_connection_retries))
    url = app.broker_url
    try:
        if is_cluster_url(url):
            return make_async_cluster_client(url, {"socket_connect_timeout": 5, "retry": retry})
        return redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=5, retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from None


@contextlib.contextmanager
def _sending(app: "Engine"):
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {app.conf.broker_url}: gave up after "
            f"{app.conf.broker_connection_retries} retries ({exc})") from exc


async def send(app: "Engine", task: "Task", args: Any, kwargs: dict, *,
               queue: str | None = None, countdown: float | None = None, eta: Any = None,
               expires: Any = None, soft_time_limit: float | None = None,
               time_limit: float | None = None, task_id: str | None = None,
               ignore_result: bool | None = None) -> AsyncResult:
    """``Engine.send`` on the running loop: the same body, the same commands."""
    queue = queue or task.queue or app.conf.task_default_queue
    task_id, body, when = app._body(task.name, args, kwargs, task=task, countdown=countdown,
                                    eta=eta, expires=expires, soft_time_limit=soft_time_limit,
                                    time_limit=time_limit, task_id=task_id,
                                    ignore_result=ignore_result)
    commands = app.broker.enqueue_commands(queue, body, eta=when)
    aclient = client(app)
    with _sending(app):
        if len(commands) == 1:
            await aclient.execute_command(*commands[0])
        else:
            async with aclient.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                await pipe.execute()
    return AsyncResult(task_id, app, task_name=task.name)
