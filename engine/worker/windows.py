"""Rotating windows over a lane's streams, for a fetch thread whose room is smaller than the
number of streams it reads (``engine.worker.lanes``)."""

from __future__ import annotations

#: milliseconds a read over a window of a lane's streams blocks at least
WINDOW_BLOCK_MIN_MS = 20


class Windows:
    """Rotating windows over a lane's streams, for fetches whose room is smaller than the
    number of streams: each read covers ``room`` streams (COUNT 1 each, so it never
    overfills), the next one the following streams. Each blocks a share of
    ``block_ms`` (at least WINDOW_BLOCK_MIN_MS), so an idle sweep of every stream takes
    about ``block_ms`` when the windows are few."""

    def __init__(self, streams: list[str], block_ms: int) -> None:
        self.streams = streams
        self.start = 0
        self.sweep_ms = self.block_ms = block_ms

    def next(self, room: int) -> dict[str, str]:
        streams = self.streams
        n = len(streams)
        size = max(min(room, n), 1)
        window = [streams[(self.start + i) % n] for i in range(size)]
        self.start = (self.start + size) % n
        self.block_ms = max(self.sweep_ms * size // n, WINDOW_BLOCK_MIN_MS)
        return {stream: ">" for stream in window}
