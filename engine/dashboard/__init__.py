"""``engine dashboard``: a web dashboard of workers, queues, dead letters and tasks.

The server (Starlette on uvicorn) lives in ``web``, Redis reads and actions in ``fleet``, the
memory of recent tasks in ``monitor``. Its libraries are the ``dashboard`` extra, imported
only here, so the engine itself never needs them.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket

from engine.exceptions import CannotListen, ConfigurationError

log = logging.getLogger("engine.dashboard")


def command(args: argparse.Namespace) -> int:
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError(f"the dashboard needs {exc.name}: "
                                 "pip install 'engine-tasks[dashboard]'") from None
    from engine.app import load_app
    from engine.dashboard.web import (allowed_hosts, create_app, is_loopback,
                                      parse_credentials, parse_prefix)

    try:
        credentials = parse_credentials(args.basic_auth)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if credentials is None and not is_loopback(args.address):
        if not args.insecure_no_auth:
            # refused before anything starts: anyone who reached it could shut workers down
            raise ConfigurationError(
                f"refusing to listen on {args.address} without a password: give --basic-auth "
                f"user:password (or ENGINE_DASHBOARD_AUTH), or --insecure-no-auth to run it "
                f"open anyway")
        log.warning("the dashboard listens on %s without a password (--insecure-no-auth): "
                    "anyone who reaches it can shut workers down", args.address)
    try:
        hosts = allowed_hosts(args.address, extra=args.allowed_host)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    app = load_app(args.app or "")
    given = args.url_prefix
    try:
        prefix = parse_prefix(app.conf.dashboard_url_prefix if given is None else given)
    except ValueError as exc:
        what = "--url-prefix" if given is not None else "dashboard_url_prefix"
        raise ConfigurationError(str(exc).replace("--url-prefix", what, 1)) from None
    web = create_app(app, credentials=credentials, hosts=hosts, prefix=prefix)
    host = f"[{args.address}]" if ":" in args.address else args.address
    _check_free(args.address, host, args.port)
    log.info("dashboard of %s on http://%s:%d%s/%s", app.main, host, args.port, prefix,
             " (password required)" if credentials else "")
    uvicorn.run(web, host=args.address, port=args.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=2, lifespan="on")
    return 0


def _check_free(address: str, host: str, port: int) -> None:
    """Bind and close the address first, so a busy port is one clear line (CannotListen)
    rather than uvicorn's log; uvicorn sets SO_REUSEADDR as ``create_server`` does."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        socket.create_server((address, port), family=family).close()
    except OSError as exc:
        busy = exc.errno == errno.EADDRINUSE
        hint = " (another dashboard? choose one with --port)" if busy else ""
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CannotListen(f"cannot listen on {host}:{port}: {why}{hint}") from None
