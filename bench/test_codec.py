"""The codec: task messages and result records, encode and decode (no Redis).

``pytest bench/test_codec.py`` -- groups ``message`` and ``result``; ops/s is per message.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from engine import message, results

TASK_ID = str(uuid.uuid4())
ARGS = {
    "empty": ((), {}),
    "small": ((2, 3, "hello", 1.5), {"flag": True}),
    "rich": ((dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.timezone.utc), uuid.uuid4(), {1, 2, 3}),
             {"when": dt.date(2026, 1, 1)}),
    "10KiB": (("x" * 10240,), {}),
}


@pytest.mark.parametrize("shape", list(ARGS))
def test_encode_message(benchmark, shape):
    benchmark.group = "message encode"
    args, kwargs = ARGS[shape]
    benchmark(message.encode_message, TASK_ID, "bench.task", args, kwargs, ignore_result=True)


@pytest.mark.parametrize("shape", list(ARGS))
def test_decode_message(benchmark, shape):
    benchmark.group = "message decode"
    args, kwargs = ARGS[shape]
    raw = message.encode_message(TASK_ID, "bench.task", args, kwargs)
    benchmark(message.decode_message, raw)


@pytest.mark.parametrize("shape", ["empty", "small"])
def test_load_job(benchmark, shape):
    """Wire bytes -> Job, what a pool child does per task."""
    benchmark.group = "message decode"
    args, kwargs = ARGS[shape]
    raw = message.encode_message(TASK_ID, "bench.task", args, kwargs)
    benchmark(message.load_job, raw, "default")


def test_encode_many_1000(benchmark):
    """1,000 bodies as ``send_many`` builds them (per call: divide by 1,000)."""
    benchmark.group = "message encode"
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    encode = message.encode_message

    def run():
        for task_id in ids:
            encode(task_id, "bench.noop", (), {}, ignore_result=True)
    benchmark(run)


@pytest.mark.parametrize("value", [None, 5, "x" * 1024], ids=["None", "int", "1KiB"])
def test_encode_record(benchmark, value):
    benchmark.group = "result encode"
    packed = message.dumps(value)
    benchmark(results.encode_record, results.SUCCESS, packed, task="bench.task",
              worker="w@host", runtime=0.001)


@pytest.mark.parametrize("value", [None, 5, "x" * 1024], ids=["None", "int", "1KiB"])
def test_decode_record(benchmark, value):
    benchmark.group = "result decode"
    raw = results.encode_record(results.SUCCESS, message.dumps(value), task="bench.task",
                                worker="w@host", runtime=0.001)
    benchmark(results.decode_record, raw)
