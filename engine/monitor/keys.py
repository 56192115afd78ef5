"""The keys of ``engine events`` and the task list's selection."""

from __future__ import annotations

import curses
from typing import Sequence

QUIT, DOWN, UP, PAGE_DOWN, PAGE_UP, TOP, BOTTOM = (
    "quit", "down", "up", "page-down", "page-up", "top", "bottom")
ESC = 27

KEYS = {
    ord("q"): QUIT, ord("Q"): QUIT, ESC: QUIT,
    ord("j"): DOWN, curses.KEY_DOWN: DOWN, ord("k"): UP, curses.KEY_UP: UP,
    curses.KEY_NPAGE: PAGE_DOWN, ord(" "): PAGE_DOWN, curses.KEY_PPAGE: PAGE_UP,
    ord("g"): TOP, curses.KEY_HOME: TOP, ord("G"): BOTTOM, curses.KEY_END: BOTTOM,
}
#: the key help on the top line
HELP = "q quit  j/k move"


def action(key: int) -> str | None:
    return KEYS.get(key)


class Selection:
    """The selected task of the list (newest first). Until a key moves it, it follows the
    newest task; once moved it stays on its task as new ones arrive above it."""

    def __init__(self) -> None:
        self.task_id: str | None = None
        self.top = 0          # index of the first row shown
        self.page = 1         # rows shown, set by the last layout

    def index(self, ids: Sequence[str]) -> int:
        if self.task_id is not None and self.task_id in ids:
            return ids.index(self.task_id)
        self.task_id = None   # forgotten (or never set): the newest
        return 0

    def selected(self, ids: Sequence[str]) -> str | None:
        return ids[self.index(ids)] if ids else None

    def apply(self, what: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        index = self.index(ids)
        step = {DOWN: 1, UP: -1, PAGE_DOWN: self.page, PAGE_UP: -self.page}.get(what, 0)
        if what == TOP:
            self.task_id = None
            return
        index = len(ids) - 1 if what == BOTTOM else min(max(index + step, 0), len(ids) - 1)
        self.task_id = None if index == 0 and what != BOTTOM else ids[index]

    def window(self, ids: Sequence[str], rows: int) -> int:
        """The first row to show so that the selected one is among ``rows``."""
        self.page = max(rows, 1)
        index = self.index(ids)
        if index < self.top:
            self.top = index
        elif index >= self.top + self.page:
            self.top = index - self.page + 1
        self.top = max(min(self.top, max(len(ids) - self.page, 0)), 0)
        return self.top
