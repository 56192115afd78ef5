"""A real command on a pseudo-terminal, its screen read back through a terminal emulator.

``PtyScreen`` starts the command with a pty of ROWS x COLUMNS as its terminal (TERM
xterm-256color, what operators use) and feeds everything it writes into ``pyte``; tests read
the emulated screen (text and attributes) and type keys. Also used by
docs/img/monitor_screenshot.py.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from typing import Callable, Sequence

import pyte

from engine.testing import DEADLINE

#: what xterm sends for these keys (arrows in the application mode curses asks for)
KEYS = {"up": "\x1bOA", "down": "\x1bOB", "esc": "\x1b"}


class _Screen(pyte.Screen):
    """pyte's screen plus REP (CSI n b: repeat the last character), which ncurses uses."""

    last = ""

    def draw(self, data: str) -> None:
        super().draw(data)
        if data:
            self.last = data[-1]

    def repeat_last(self, count: int = 1, *args, **kwargs) -> None:
        if self.last:
            super().draw(self.last * max(count, 1))


class _Stream(pyte.ByteStream):
    csi = {**pyte.ByteStream.csi, "b": "repeat_last"}


class PtyScreen:
    def __init__(self, argv: Sequence[str], env: dict, *, rows: int, columns: int,
                 cwd=None) -> None:
        self.rows, self.columns = rows, columns
        self.screen = _Screen(columns, rows)
        self.stream = _Stream(self.screen)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        term_env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        term_env.update(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        self.proc = subprocess.Popen(list(argv), env=term_env, cwd=cwd, stdin=slave,
                                     stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.raw += data
                self.stream.feed(data)

    # -- reading the screen ------------------------------------------------------------
    def lines(self) -> list[str]:
        """The screen's rows, trailing blanks removed."""
        with self._lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def reversed_rows(self) -> list[int]:
        """Rows in reverse video from the first column to the last (a selected row)."""
        with self._lock:
            buffer, last = self.screen.buffer, self.columns - 1
            return [y for y in range(self.rows) if buffer[y][0].reverse and buffer[y][last].reverse]

    def cells(self) -> list[list]:
        """A copy of the screen: rows of (char, fg, bg, bold, reverse, underscore) for a
        renderer."""
        with self._lock:
            buffer = self.screen.buffer
            return [[(c.data, c.fg, c.bg, c.bold, c.reverse, c.underscore)
                     for c in (buffer[y][x] for x in range(self.columns))]
                    for y in range(self.rows)]

    def wait(self, condition: Callable[["PtyScreen"], object], message: str,
             timeout: float = DEADLINE) -> object:
        """Wait until ``condition(self)`` is truthy; on failure show the screen."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition(self)
            if value:
                return value
            if self.proc.poll() is not None:   # its last output read, nothing more comes
                self._thread.join(DEADLINE)
                value = condition(self)
                if value:
                    return value
                raise AssertionError(f"{message}: the command exited {self.proc.returncode}"
                                     f"\n{self.text()}\n{bytes(self.raw[-2000:])!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {message}; screen:\n{self.text()}")
            time.sleep(0.05)

    def showing(self, *patterns: str, message: str, timeout: float = DEADLINE) -> str:
        """Wait for a screen on which every regex matches; returns its text."""
        def match(screen: "PtyScreen") -> str | None:
            text = screen.text()
            return text if all(re.search(p, text, re.M) for p in patterns) else None
        return self.wait(match, message, timeout)

    def resize(self, rows: int, columns: int) -> None:
        """The terminal resized, as a window manager does: new size, then SIGWINCH."""
        with self._lock:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            self.screen.resize(rows, columns)
            self.rows, self.columns = rows, columns
        self.proc.send_signal(signal.SIGWINCH)

    def restored(self) -> bool:
        """Whether the terminal is as the command found it: line mode with echo again, and
        the alternate screen (if it entered one) left."""
        lflag = termios.tcgetattr(self.master)[3]
        raw = bytes(self.raw)
        return bool(lflag & termios.ICANON and lflag & termios.ECHO) and \
            raw.rfind(b"\x1b[?1049l") >= raw.rfind(b"\x1b[?1049h")

    # -- typing ------------------------------------------------------------------------
    def press(self, key: str) -> None:
        os.write(self.master, KEYS.get(key, key).encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)
