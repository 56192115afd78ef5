"""The full-screen loop of ``engine events`` (curses): draw, read a key, follow the stream.

curses restores the terminal however the loop ends (``q``, Esc, Ctrl-C or an error).
"""

from __future__ import annotations

import curses
import locale
import threading
from typing import TYPE_CHECKING

from engine.monitor import layout
from engine.monitor.keys import QUIT, Selection, action
from engine.monitor.state import FleetState, Poller
from engine.monitor.view import render

if TYPE_CHECKING:
    from engine.app import Engine

#: redraws per second (a key redraws at once)
REFRESH_PER_SECOND = 5
#: milliseconds curses waits after Esc for the rest of a key sequence (arrows send Esc [ A)
ESC_DELAY = 25

_STYLES = {"title": ("reverse", "bold"), "header": ("bold", "underline"), "dim": ("dim",),
           "bold": ("bold",), "label": ("dim",), "selected": ("reverse",),
           "green": ("green",), "red": ("red",), "yellow": ("yellow",)}
_COLORS = {"green": curses.COLOR_GREEN, "red": curses.COLOR_RED,
           "yellow": curses.COLOR_YELLOW}


def live(app: "Engine", title: str, where: str = "", *,
         refresh: float = REFRESH_PER_SECOND) -> None:
    """Run the full-screen view until ``q``, Esc or Ctrl-C."""
    locale.setlocale(locale.LC_ALL, "")
    if "utf" not in (locale.getpreferredencoding(False) or "").lower():
        layout.use_ascii()
    poller = Poller(app, FleetState())
    poller.turn()   # the recent past on the first screen
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop, 1.0 / refresh),
                              name="monitor-poller", daemon=True)
    thread.start()
    try:
        curses.wrapper(_loop, poller, (title, where), max(int(1000 / refresh), 1))
    finally:
        # not joined: a command it is retrying against a lost broker may take seconds,
        # and the daemon thread ends with the process
        stop.set()


def _attributes() -> dict[str, int]:
    attrs = {}
    colors = curses.has_colors()
    if colors:
        curses.use_default_colors()
        for n, (name, color) in enumerate(_COLORS.items(), start=1):
            curses.init_pair(n, color, -1)
    pairs = {name: n for n, name in enumerate(_COLORS, start=1)}
    flags = {"reverse": curses.A_REVERSE, "bold": curses.A_BOLD, "dim": curses.A_DIM,
             "underline": curses.A_UNDERLINE}
    for style, parts in _STYLES.items():
        value = 0
        for part in parts:
            if part in pairs:
                value |= curses.color_pair(pairs[part]) if colors else curses.A_BOLD
            else:
                value |= flags[part]
        attrs[style] = value
    return attrs


def _loop(window: "curses.window", poller: Poller, title: tuple[str, str],
          period_ms: int) -> None:
    try:
        curses.curs_set(0)
    except curses.error:   # a terminal that cannot hide the cursor
        pass
    window.keypad(True)
    curses.set_escdelay(ESC_DELAY)
    window.timeout(period_ms)
    attrs = _attributes()
    selection = Selection()
    state = poller.state
    while True:
        height, width = window.getmaxyx()
        with state.lock:
            lines = render(state, selection, width, height, title[0], where=title[1])
            poller.selected = selection.selected(state.task_ids())
        paint(window, lines, attrs)
        key = window.getch()
        if key == -1 or key == curses.KEY_RESIZE:
            continue
        what = action(key)
        if what == QUIT:
            return
        if what:
            with state.lock:
                selection.apply(what, state.task_ids())


def paint(window: "curses.window", lines: list[layout.Line], attrs: dict[str, int]) -> None:
    encoding = locale.getpreferredencoding(False) or "ascii"
    window.erase()
    height, width = window.getmaxyx()
    for y, line in enumerate(lines[:height]):
        x = 0
        for text, style in layout.clip(line, width):
            try:   # what the terminal's encoding lacks shows as "?"
                window.addstr(y, x, text.encode(encoding, "replace").decode(encoding),
                              attrs.get(style, 0))
            except curses.error:   # the bottom-right cell: written, then the cursor cannot move
                pass
            x += len(text)
    window.noutrefresh()
    curses.doupdate()
