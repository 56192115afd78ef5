"""The live monitor (``engine events``) driven in a pseudo-terminal and read back."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading

import pytest

from tests.conftest import ROOT, wait_for

ROWS, COLUMNS = 60, 180
#: CSI sequences, OSC strings and charset switches: what is left is the text on screen
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
_HOME = "\x1b[H"


class Terminal:
    """``engine events`` on a pty of ROWS x COLUMNS; ``frames`` are the screens it drew."""

    def __init__(self, env: dict) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        term_env = dict(env, TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(ROWS))
        term_env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "events", "-A", "tests.apps.basic"], env=term_env,
            cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.master = master
        self.raw = ""
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
                self.raw += data.decode("utf-8", errors="replace")

    def frames(self, last: int = 3) -> list[str]:
        """The text of the last complete screens (each redraw starts at the home position)."""
        with self._lock:
            parts = self.raw.split(_HOME)
        complete = parts[1:-1] if len(parts) > 2 else parts[1:]
        return [_ANSI.sub("", part) for part in complete[-last:]]

    def showing(self, *patterns: str) -> str | None:
        """A recent screen on which every regex in ``patterns`` matches."""
        for frame in reversed(self.frames()):
            if all(re.search(p, frame) for p in patterns):
                return frame
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def wait_screen(screen: Terminal, *patterns: str, message: str) -> str:
    """Wait for a screen matching every pattern; on failure show the last one."""
    try:
        return wait_for(lambda: screen.showing(*patterns), message=message)
    except AssertionError as exc:
        frames = screen.frames(1)
        raise AssertionError(f"{exc}\nlast screen:\n{frames[-1] if frames else screen.raw[-2000:]}")


@pytest.fixture
def terminal(env):
    started: list[Terminal] = []

    def start() -> Terminal:
        started.append(Terminal(env))
        return started[-1]

    yield start
    for t in started:
        t.close()


def test_monitor_shows_workers_queues_throughput_and_failures(app, run_worker, terminal):
    # Given a worker, a few messages waiting on a queue nobody serves, and the monitor
    worker = run_worker("--pool", "threads", "-c", "3", "-n", "mon1")
    for i in range(4):
        app.send_task("tests.apps.basic.add", (i, i), queue="idle")
    screen = terminal()
    # Then it shows the worker with its pool, concurrency and the RSS the worker measured
    frame = wait_screen(screen, r"mon1\W+default=threads\W+3\W+\d+\W+[\d.]+\W+(\d+%|…)\W+[\d.]+ MiB",
                        r"online", message="the worker row")
    # And the queues with their depth
    assert re.search(r"idle\W+4\W+0\W+0\W+0", frame), frame
    # When tasks succeed and one fails
    results = app.tasks["tests.apps.basic.add"].delay_many([(i, i) for i in range(20)])
    bad = app.tasks["tests.apps.basic.fail"].delay("kaboom on screen")
    app.gather(results, timeout=60)
    # Then the throughput and the failure (with its exception) appear
    frame = wait_screen(screen, r"CustomError: kaboom on screen", rf"{bad.id[:8]}",
                        r"succeeded 20\b", r"failed 1\b", r"[\d.]+ tasks/s",
                        message="the failure and the counters")
    assert "tests.apps.basic.fail" in frame
    # And, from two snapshots of the worker, its CPU use
    wait_screen(screen, r"mon1\W+default=threads\W+3\W+\d+\W+[\d.]+\W+\d+%\W+[\d.]+ MiB",
                message="a CPU percentage")
    # When the worker stops, the monitor says so
    assert worker.stop() == 0
    wait_screen(screen, r"mon1\W+offline", message="the worker offline")
    # And Ctrl-C leaves the monitor cleanly
    screen.proc.send_signal(signal.SIGINT)
    assert screen.proc.wait(60) == 0
