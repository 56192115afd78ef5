"""Execution pools: the alias table and ``resolve``, which turns a ``--pool`` word into a class.

``resolve`` accepts an alias below, ``custom`` (the class named by ``ENGINE_CUSTOM_POOL``, read
when called), ``package.module:Class``, or a name registered under the ``engine.pools``
entry-point group. Anything else is one ConfigurationError with a clear message.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from engine.exceptions import ConfigurationError
from pools.base import Job, Outcome, Pool, PoolOptions, Runner

ALIASES = {
    "prefork": "pools.prefork:PreforkPool",
    "threads": "pools.threads:ThreadsPool",
    "gevent": "pools.gevent:GeventPool",
    "solo": "pools.solo:SoloPool",
    "asyncio": "pools.asyncio:AsyncioPool",
}
CUSTOM_ENV = "ENGINE_CUSTOM_POOL"
ENTRY_POINT_GROUP = "engine.pools"

__all__ = ["ALIASES", "Job", "Outcome", "Pool", "PoolOptions", "Runner", "resolve", "describe"]


def describe(name: str) -> str:
    """The ``package.module:Class`` path a pool word stands for (without importing it)."""
    if name == "custom":
        path = os.environ.get(CUSTOM_ENV, "").strip()
        if not path:
            raise ConfigurationError(f"--pool custom needs {CUSTOM_ENV}=package.module:ClassName")
        return path
    if name in ALIASES:
        return ALIASES[name]
    if ":" in name:
        return name
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.value
    known = ", ".join([*ALIASES, "custom"])
    raise ConfigurationError(f"unknown pool {name!r}: use one of {known}, or package.module:Class")


def resolve(name: str) -> type[Pool]:
    """The Pool subclass for ``name``; raises ConfigurationError with one clear line."""
    path = describe(name)
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"pool class path {path!r} must look like package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import pool module {module_name!r}: {exc}") from None
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise ConfigurationError(f"module {module_name!r} has no {attr!r} (from pool {name!r})")
    if not (isinstance(cls, type) and issubclass(cls, Pool)):
        raise ConfigurationError(f"{path} is not a subclass of pools.base.Pool")
    return cls
