"""``engine events``: the live terminal view of the fleet, and ``--dump``.

``state`` holds what the monitor knows (fed by the event stream and polls), ``view`` lays it
out for any terminal size (``layout`` fits each table to the width), ``screen`` is the
curses loop and ``keys`` the keys and the task list's selection. ``--dump`` prints the events
as JSON lines instead.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING

from engine import events as _events
from engine.monitor.state import FleetState

if TYPE_CHECKING:
    from engine.app import Engine

__all__ = ["FleetState", "command", "dump"]


def dump(app: "Engine", *, since: str = "$", out=None) -> None:
    """Print every event from ``since`` on as one JSON object a line, until interrupted."""
    out = out or sys.stdout
    reader = app.new_client()
    for _, event in _events.read(reader, app.broker.keys.events, last_id=since or "$",
                                 block_ms=1000, count=1000):
        if event:
            out.write(json.dumps(event, default=str, sort_keys=True) + "\n")
            out.flush()


def command(args) -> int:
    """``engine events``: the live view (q, Esc or Ctrl-C leaves it), or ``--dump``."""
    from engine.app import load_app
    from engine.connection import probe
    from engine.urls import redact
    app = load_app(args.app or "")
    probe(app.broker_url, transport_options=app.conf.get("broker_transport_options"))
    # Ctrl-C leaves, even when we were started with SIGINT ignored (a shell without job
    # control does that to what it runs in the background; Python then keeps it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.dump:
            dump(app, since=args.since)
        elif not (sys.stdin.isatty() and sys.stdout.isatty()):
            print("engine events: error: the live view needs a terminal (--dump prints "
                  "events as JSON lines)", file=sys.stderr)
            return 2
        else:
            from engine.monitor.screen import live
            live(app, app.main, redact(app.broker_url))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:   # ``engine events --dump | head``
        sys.stderr.close()
    return 0
