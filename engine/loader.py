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
import traceback
from typing import TYPE_CHECKING, Any, Callable, Iterable

from engine import signals
from engine.exceptions import ConfigurationError
from engine.registry import APPS

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
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    except Exception as exc:   # a syntax error, a missing import, anything its import raised
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    if attr:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}")
        if not _is_app(obj):
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
        if len(found) > 1:
            names = list(found)
            raise ConfigurationError(
                f"module {module_name!r} defines {len(names)} Engine apps ({', '.join(names)}): "
                f"say which with " + " or ".join(f"-A {module_name}:{n}" for n in names))
        app = next(iter(found.values()))
    try:
        app.import_default_modules()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    return app


def _is_app(value: Any) -> bool:
    """Whether ``value`` is an Engine app: every app is in ``registry.APPS`` (this module is
    imported by ``engine.app``, so it does not import it back)."""
    return any(value is app for app in APPS)


def _apps_in(module: Any) -> dict[str, "Engine"]:
    """The module's apps by their first name (one app under two names is one app)."""
    found: dict[int, tuple[str, "Engine"]] = {}
    for name, value in vars(module).items():
        if _is_app(value):
            found.setdefault(id(value), (name, value))
    return dict(found.values())


def _import_failure(module_name: str, exc: BaseException) -> str:
    """One line for an app module (or a module it includes) that failed to import: the
    file, the line and the error, from the innermost frame outside the import machinery."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}, line {exc.lineno}"
        what = f"{type(exc).__name__}: {exc.msg}"
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if not f.filename.startswith("<frozen")]
        where = f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else "?"
        what = " ".join(traceback.format_exception_only(type(exc), exc)[-1].split())
    return (f"cannot import app module {module_name!r}: {where}: {what} "
            f"(-l debug shows the traceback)")
