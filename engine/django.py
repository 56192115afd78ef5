"""Django: the app registry, every installed app's task module, on-commit sends, and the
database connections of worker processes.

Imported only when Django is used (``autodiscover_tasks()`` with no packages, a worker
loading an app while ``DJANGO_SETTINGS_MODULE`` is set, ``delay_on_commit``), never by the
engine's own import. What Celery's Django fixup does, in small: ``django.setup()`` before
task modules are imported in a worker, inherited connections dropped after a fork, and
``close_old_connections`` around every task (Django's rule for requests, so
``CONN_MAX_AGE`` and broken connections behave as in views).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import uuid
from typing import TYPE_CHECKING, Any

from engine import signals
from engine.exceptions import ConfigurationError

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.results import AsyncResult
    from engine.task import Task


def wanted() -> bool:
    """Whether this process runs under Django: its settings module is named (as
    ``manage.py`` and Celery's ``proj/celery.py`` layout do) and Django is installed."""
    return bool(os.environ.get("DJANGO_SETTINGS_MODULE")) and \
        importlib.util.find_spec("django") is not None


def _django():
    try:
        import django
    except ImportError:
        raise ConfigurationError("this needs Django (pip install django)") from None
    return django


def setup() -> None:
    """``django.setup()`` unless the app registry is ready (or being filled: a task module
    imported by Django itself while it populates waits for nothing)."""
    django = _django()
    from django.apps import apps
    if not apps.ready and not apps.loading:
        try:
            django.setup()
        except Exception as exc:   # ImproperlyConfigured and friends: one clear line
            raise ConfigurationError(f"Django setup failed: {type(exc).__name__}: {exc}") \
                from exc


def installed_apps() -> list[str]:
    """The import names of every INSTALLED_APPS entry, the registry made ready first."""
    setup()
    from django.apps import apps
    return [config.name for config in apps.get_app_configs()]


# -- sending on commit ----------------------------------------------------------------------
def on_commit_send(task: "Task", args: Any, kwargs: dict, *, using: str | None,
                   options: dict) -> "AsyncResult":
    """Register ``task.apply_async(args, kwargs, **options)`` with Django's
    ``transaction.on_commit`` (run at once outside a transaction, dropped on rollback).
    Everything that can be checked is checked now, at the call, not at the commit."""
    _django()
    from django.db import transaction
    from engine.results import AsyncResult
    allowed = _apply_async_options(type(task))
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"{task.name}: apply_async takes no option(s) "
                        f"{', '.join(sorted(unknown))}")
    if task.typing:
        task.check_arguments(args, kwargs)
    task_id = options.pop("task_id", None) or str(uuid.uuid4())
    transaction.on_commit(functools.partial(task.apply_async, args, kwargs, task_id=task_id,
                                            **options), using=using)
    return AsyncResult(task_id, task.app, task_name=task.name)


@functools.lru_cache(maxsize=None)
def _apply_async_options(cls: type) -> frozenset[str]:
    params = inspect.signature(cls.apply_async).parameters
    return frozenset(name for name, p in params.items() if p.kind is p.KEYWORD_ONLY)


# -- worker processes -------------------------------------------------------------------------
def setup_worker(app: "Engine") -> None:
    """In a process that loads the app for work (``load_app``): the registry ready before
    any task module is imported, and the connection hooks connected (once)."""
    setup()
    signals.worker_process_init.connect(_forget_inherited_connections,
                                        dispatch_uid="engine.django.fork")
    signals.task_prerun.connect(_close_old_connections, dispatch_uid="engine.django.prerun")
    signals.task_postrun.connect(_close_old_connections, dispatch_uid="engine.django.postrun")


def _forget_inherited_connections(**_: Any) -> None:
    # a forked child shares its parent's sockets: closing them here would end the parent's
    # sessions, so the child only forgets them and opens its own on first use
    from django.db import connections
    try:
        opened = connections.all(initialized_only=True)
    except TypeError:   # Django before 4.1
        opened = connections.all()
    for conn in opened:
        conn.connection = None


def _close_old_connections(sender: Any = None, **_: Any) -> None:
    if sender is not None and getattr(sender.request, "is_eager", False):
        return   # an eager run is inside the caller's own request or transaction
    from django.db import close_old_connections
    close_old_connections()
