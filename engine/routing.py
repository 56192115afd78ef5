"""``task_routes``: which queue (and which send options) a task goes to, Celery's way.

The setting is a dict (exact task names and globs such as ``"mail.*"`` mapped to a queue
name or an options dict), a router callable ``router(name, args, kwargs, options, task=None,
**kw)`` returning a dict, a queue name or None to fall through, a ``"pkg.mod:router"`` string
naming one, or a list of those tried in order. A dict's exact names win over its globs;
globs are tried in the order written.

Precedence, as Celery documents it: options given to ``apply_async`` win over the task's
own (``@app.task(queue=...)``), which win over what the routes say, which win over
``task_default_queue``. The app compiles the setting once per value it holds and asks
``Routes.lookup`` on its send path.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Mapping

from engine.config import import_object
from engine.exceptions import ConfigurationError

#: keys of a Celery route that only mean something to AMQP: accepted and ignored
AMQP_ONLY = frozenset({"exchange", "exchange_type", "routing_key", "delivery_mode"})
#: what a route may set besides the queue (apply_async's options)
ROUTABLE = frozenset({"countdown", "eta", "expires", "soft_time_limit", "time_limit",
                      "ignore_result", "headers"})

Router = Callable[..., Any]


class MapRouter:
    """A dict of routes: exact names looked up, then the glob (or ``re.Pattern``) keys."""

    __slots__ = ("exact", "patterns")

    def __init__(self, routes: Mapping[Any, Any]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern, Any]] = []
        for key, value in routes.items():
            if isinstance(key, re.Pattern):
                self.patterns.append((key, value))
            elif isinstance(key, str) and any(c in key for c in "*?["):
                self.patterns.append((re.compile(fnmatch.translate(key)), value))
            elif isinstance(key, str):
                self.exact[key] = value
            else:
                raise ConfigurationError(f"task_routes: key {key!r} is not a task name or glob")

    def __call__(self, name: str, args: Any = None, kwargs: Any = None, options: Any = None,
                 task: Any = None, **kw: Any) -> Any:
        route = self.exact.get(name)
        if route is not None:
            return route
        for pattern, route in self.patterns:
            if pattern.match(name):
                return route
        return None


class Routes:
    """The compiled ``task_routes``; ``by_name_only`` when no router looks at arguments
    (then one lookup serves a whole ``delay_many`` batch)."""

    __slots__ = ("routers", "by_name_only")

    def __init__(self, setting: Any) -> None:
        items = setting if isinstance(setting, (list, tuple)) else [setting]
        self.routers: list[Router] = [_router(item) for item in items if item is not None]
        self.by_name_only = all(isinstance(r, MapRouter) for r in self.routers)

    def lookup(self, name: str, args: Any, kwargs: Any, options: dict,
               task: Any = None) -> dict | None:
        """The first route a router gives, as an options dict; None when none matches."""
        for router in self.routers:
            legacy = getattr(router, "route_for_task", None)   # pre-4.0 Celery router class
            route = (legacy(name, args, kwargs) if legacy is not None
                     else router(name, args, kwargs, options, task=task))
            if route is None:
                continue
            if isinstance(route, str):
                return {"queue": route}
            if isinstance(route, Mapping):
                return {k: v for k, v in route.items() if k not in AMQP_ONLY}
            raise ConfigurationError(f"task_routes: router {router!r} returned {route!r} "
                                     f"for {name} (expected a dict, a queue name or None)")
        return None

    def resolve(self, name: str, task: Any, args: Any, kwargs: Any, queue: str | None,
                options: dict, *, default: str) -> str:
        """The queue: ``queue`` (apply_async's), else the task's own, else the route's,
        else ``default``. Other route options fill those ``options`` leaves unset."""
        if queue is None and task is not None:
            queue = task.queue
        route = self.lookup(name, args, kwargs, options, task)
        if route:
            routed = route.pop("queue", None)
            queue = queue or routed
            unknown = set(route) - ROUTABLE
            if unknown:
                raise ConfigurationError(f"task_routes gave {name} option(s) apply_async "
                                         f"does not take: {', '.join(sorted(unknown))}")
            for key, value in route.items():
                if options.get(key) is None:
                    options[key] = value
        return queue or default


def _router(item: Any) -> Router:
    if isinstance(item, Mapping):
        return MapRouter(item)
    if isinstance(item, str):
        item = import_object(item, "task_routes router")
        if isinstance(item, type):
            item = item()
    if callable(item) or hasattr(item, "route_for_task"):
        return item
    raise ConfigurationError(f"task_routes: {item!r} is not a dict, a router or a path to one")
