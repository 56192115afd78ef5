"""Batch fetch from the private Redis by batch size: XREADGROUP COUNT b, then the acks the
worker sends for a batch (XACK + XDEL, pipelined), through the engine's own ``Broker``.

``pytest bench/test_fetch.py -s``: each round drains a fresh backlog of 10,000 engine-shaped
messages enqueued in ``setup``; prints messages/s per batch size.
"""

from __future__ import annotations

import time
import uuid

import pytest

from engine import message
from engine.broker import Broker
from engine.wire import fields_get

N = 10_000
BODY = message.encode_message(str(uuid.uuid4()), "engine.bench_tasks.noop", (), {},
                              ignore_result=True)


@pytest.mark.parametrize("batch", [1, 10, 100, 1000])
@pytest.mark.parametrize("ack", [True, False], ids=["fetch-decode-ack", "fetch-only"])
def test_fetch(benchmark, client, prefix, batch, ack):
    """XREADGROUP at each batch size, alone or with decode and XACK/XDEL as a worker does."""
    what = "fetched, decoded and acked" if ack else "read"
    benchmark.group = f"fetch{'' if ack else ' only'}: 10,000 messages, by batch size"
    broker = Broker(client, prefix=prefix)
    queue = f"fetch{'' if ack else 'only'}{batch}"
    stream = broker.keys.queue(queue)
    timings = []

    def setup():
        client.delete(stream)
        broker.ensure_groups([queue])
        broker.enqueue_many([(queue, BODY, None)] * N)

    def drain():
        t = time.perf_counter()
        got = 0
        while got < N:
            response = broker.fetch("bench", {stream: ">"}, count=batch, block_ms=None)
            if ack:
                ids = [entry_id for _, entries in response for entry_id, _ in entries]
                for _, entries in response:
                    for _, fields in entries:
                        message.decode_message(fields_get(fields, b"m"))
                broker.ack({stream: ids})
                got += len(ids)
            else:
                got += sum(len(entries) for _, entries in response)
        timings.append(time.perf_counter() - t)

    benchmark.pedantic(drain, setup=setup, rounds=3, iterations=1)
    best = min(timings)
    print(f"\nbatch {batch:>4}: {N / best:,.0f} messages/s {what} "
          f"({best / N * 1e6:.1f} µs each, best of {len(timings)})")
    benchmark.extra_info["messages_per_s"] = round(N / best)
