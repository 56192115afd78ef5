"""Fetches whose reply was lost: what a dropped connection hid from a fetch thread.

XREADGROUP with ``>`` moves the entries it returns to this consumer's pending list before
the reply leaves Redis. When the connection drops in between, the entries are this worker's
in Redis and in no buffer here; no survivor reclaims them (the worker is alive) and
resending the read only fetches newer ones. So a ``>`` read is never resent by the client
(``Broker.fetch``): the fetch thread sees the error, and ``Unread`` finds what the lost
reply held before the next read. Those entries were delivered once, to this consumer, and
their ids are above every id a ``>`` read gave this lane before (the group hands out ids in
increasing order); whatever else is pending here was seen by a read, or claimed (delivered
more than once), so nothing the lane holds is taken in twice. (Two lanes of one worker that
read one queue share its consumer: there, one lane may take in what the other just read,
which then runs twice, as a redelivery may.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from engine.broker import GROUP
from engine.wire import text

if TYPE_CHECKING:
    from engine.broker import Broker

#: pending entries asked for per XPENDING page
PAGE = 500


class Unread:
    """One fetch thread's record of where its ``>`` reads got to, per stream."""

    def __init__(self, broker: "Broker", consumer: str) -> None:
        self.broker = broker
        self.consumer = consumer
        #: stream -> the highest id a ``>`` read gave this thread (at first: the group's
        #: last delivered id when the thread began reading the stream)
        self.after: dict[str, bytes] = {}
        #: a ``>`` read failed on the connection: its reply may be lost
        self.lost = False

    def before(self, streams) -> None:
        """Before a ``>`` read of ``streams``: where each one stands (one XINFO GROUPS for
        each stream this thread has not read yet)."""
        missing = [stream for stream in streams if stream not in self.after]
        if not missing:
            return
        pipe = self.broker.client.pipeline(transaction=False)
        for stream in missing:
            pipe.xinfo_groups(stream)
        for stream, groups in zip(missing, pipe.execute(raise_on_error=False)):
            last = b"0-0"   # no stream or no group yet: it is made at 0 (ensure_groups)
            if isinstance(groups, list):
                for group in groups:
                    if text(group["name"]) == GROUP:
                        last = _b(group["last-delivered-id"])
            self.after[stream] = last

    def seen(self, batch: list) -> None:
        """A ``>`` read's batch arrived (entries in id order within each stream)."""
        for stream, entries in batch:
            if entries:
                self.after[text(stream)] = _b(entries[-1][0])

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            self.lost = True

    def recover(self) -> list:
        """What lost replies held, as XREADGROUP returns it (``[(stream, entries)]``)."""
        batch = []
        for stream, after in list(self.after.items()):
            entries = self._unread(stream, after)
            if entries:
                batch.append((stream, entries))
                self.after[stream] = _b(entries[-1][0])
        self.lost = False
        return batch

    def _unread(self, stream: str, after: bytes) -> list:
        client = self.broker.client
        ids: list[bytes] = []
        start = b"(" + after
        while True:
            rows = client.xpending_range(stream, GROUP, min=start, max="+", count=PAGE,
                                         consumername=self.consumer)
            ids += [_b(row["message_id"]) for row in rows if int(row["times_delivered"]) == 1]
            if len(rows) < PAGE:
                break
            start = b"(" + _b(rows[-1]["message_id"])
        if not ids:
            return []
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(stream, entry_id, entry_id)
        # an entry deleted meanwhile comes with no fields: intake acks it
        return [(entry_id, found[0][1] if found else None)
                for entry_id, found in zip(ids, pipe.execute())]


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
