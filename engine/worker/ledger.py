"""What the worker owes Redis, gathered on the loop between two writes.

The supervisor and its parts note here every result record, interim status, ack and
other command (retries, dead letters, parked or requeued copies, successors) as they
happen; ``take`` hands the lot to the writer as one ``WriteBatch`` of plain command tuples,
in the order that keeps the guarantees: results first, then the other commands, then acks
and events (a crash between them re-runs a task, never loses a result). The commands are
built by the modules that own the keys (``engine.broker``, ``engine.results``); the ledger
only keeps them, and the writer has one way to send them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.broker import Broker

if TYPE_CHECKING:
    from engine.canvas.worker import Owed


@dataclass(slots=True)
class WriteBatch:
    """One write: what the loop gathered, as the writer sends it."""

    statuses: list[tuple[str, bytes]] = field(default_factory=list)   #: (task id, record)
    records: list[tuple[str, bytes]] = field(default_factory=list)    #: (task id, record)
    commands: list[tuple] = field(default_factory=list)               #: after the results
    acks: dict[str, list[bytes]] = field(default_factory=dict)        #: stream -> entry ids
    events: list | None = None      #: EventBuffer.take(packed=False), packed by the writer
    #: what canvas steps owe (``engine.canvas.worker.Owed``): successors and chord counts,
    #: written after the records and before the acks
    canvas: list = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.statuses) + len(self.records) + len(self.commands)
                + sum(len(ids) for ids in self.acks.values()) + (self.events is not None)
                + len(self.canvas))


class Ledger:
    """Owed writes, on the supervisor's loop only (not thread-safe)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._new()

    def _new(self) -> None:
        self.statuses: list[tuple[str, bytes]] = []
        self.records: list[tuple[str, bytes]] = []
        self.commands: list[tuple] = []
        self.acks: defaultdict[str, list[bytes]] = defaultdict(list)
        self.canvas: list = []
        self._owed = 0
        self._since: float | None = None   # monotonic time of the oldest owed write

    def __len__(self) -> int:
        return self._owed

    # -- noting --------------------------------------------------------------------------
    def deadline(self, delay: float) -> float | None:
        """When the oldest owed write will have waited ``delay`` (None: nothing is owed)."""
        if not self._owed:
            return None
        if self._since is None:
            self._since = time.monotonic()
        return self._since + delay

    def record(self, task_id: str, record: bytes) -> None:
        """A final result record (SUCCESS, FAILURE, REVOKED)."""
        self.records.append((task_id, record))
        self._owed += 1

    def status(self, task_id: str, record: bytes) -> None:
        """An interim state (STARTED, RETRY): replaced by the final record later."""
        self.statuses.append((task_id, record))
        self._owed += 1

    def ack(self, stream: str, entry_id: bytes) -> None:
        self.acks[stream].append(entry_id)
        self._owed += 1

    def dead_letter(self, queue: str, raw: bytes, reason: str) -> None:
        self.commands.append(self.broker.dead_letter_command(queue, raw, reason))
        self._owed += 1

    def push(self, queue: str, body: bytes, eta: float | None = None) -> None:
        """A copy of a message back on its queue, or in its delayed set until ``eta``."""
        self.commands.append(self.broker.push_command(queue, body, eta))
        self._owed += 1

    def delay(self, queue: str, body: bytes, eta: float) -> None:
        """Into the delayed set whatever the eta (a retry: a ZADD sent twice is one retry)."""
        self.commands.append(self.broker.delay_command(queue, body, eta))
        self._owed += 1

    def extend(self, commands: list[tuple]) -> None:
        """Commands built elsewhere that go with this write (successors, say)."""
        self.commands.extend(commands)
        self._owed += len(commands)

    def canvas_step(self, owed: "Owed") -> None:
        """What a canvas step owes (``engine.canvas.worker.settle``): its records now, its
        successors and chord count in the writer's canvas order."""
        self.records.extend(owed.records)
        self.canvas.append(owed)
        self._owed += len(owed.records) + 1

    # -- handing over ------------------------------------------------------------------
    def take(self, events: list | None = None) -> WriteBatch | None:
        """Everything noted since the last take, with ``events``; None when nothing is."""
        if not self._owed and events is None:
            return None
        batch = WriteBatch(self.statuses, self.records, self.commands, self.acks, events,
                           self.canvas)
        self._new()
        return batch
