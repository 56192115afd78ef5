"""Loading an app and its task modules: ``-A`` targets, ``include``, autodiscovery.

``load_app`` is what every command does with ``-A``: import the module, find the Engine
(in the module, or in its ``engine``/``celery`` submodule: Celery's ``proj/celery.py``
layout), then ``import_default_modules``. That makes Django's app registry ready when
``DJANGO_SETTINGS_MODULE`` is set (``engine.django``), imports ``include``, runs the
autodiscovery ``autodiscover_tasks`` put off, and sends ``import_modules``.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable

from engine import signals
from engine.exceptions import ConfigurationError

if TYPE_CHECKING:
    from engine.app import Engine


def discover(packages: Iterable[str] | Callable[[], Iterable[str]] | None,
             related_name: str = "tasks") -> None:
    """Import ``<package>.<related_name>`` for each package (all of Django's INSTALLED_APPS
    when None); a package without that module is skipped, an error inside one is not."""
    if packages is None:
        from engine import django
        packages = django.installed_apps()
    elif callable(packages):
        packages = packages()
    for package in packages:
        name = f"{package}.{related_name}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, package):
                raise


def import_default_modules(app: "Engine") -> None:
    from engine import django
    if django.wanted():
        django.setup_worker(app)
    for name in app.include:
        importlib.import_module(name)
    app.discover_pending()
    if signals.import_modules.receivers:
        signals.import_modules.send(sender=app)


def load_app(target: str) -> "Engine":
    """``module`` or ``module:attribute`` -> the Engine; ConfigurationError otherwise."""
    if not target:
        raise ConfigurationError("no app given: use -A module[:attribute] or set ENGINE_APP")
    module_name, _, attr = target.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")   # like python -m: the current directory is importable
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from None
        raise
    if attr:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}")
        from engine.app import Engine
        if not isinstance(obj, Engine):
            raise ConfigurationError(f"{target} is a {type(obj).__name__}, not an Engine app")
        app = obj
    else:
        found = _apps_in(module)
        # a package whose app lives in proj/engine.py (Celery's proj/celery.py layout,
        # either name) without proj/__init__.py importing it
        for submodule in ("engine", "celery"):
            if found or not hasattr(module, "__path__"):
                break
            try:
                found = _apps_in(importlib.import_module(f"{module_name}.{submodule}"))
            except ModuleNotFoundError as exc:
                if exc.name != f"{module_name}.{submodule}":
                    raise
        if not found:
            raise ConfigurationError(f"module {module_name!r} defines no Engine app "
                                     f"(use -A {module_name}:attribute)")
        app = found[0]
    app.import_default_modules()
    return app


def _apps_in(module: Any) -> list["Engine"]:
    from engine.app import Engine
    return [v for v in vars(module).values() if isinstance(v, Engine)]
