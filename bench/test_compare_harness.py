"""The comparison harness's own pieces (bench/compare), fast and without any rival installed:
the awaited completion count of the ``asleep`` workload and the ``--configs`` patterns.
Nothing about speed is asserted."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from engine.testing import RedisServer

HERE = Path(__file__).resolve().parent / "compare"
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import matrix  # noqa: E402
import report  # noqa: E402


@pytest.fixture
def tcp_redis(tmp_path, monkeypatch):
    """A private redis-server on a TCP port (adone() opens plain TCP streams)."""
    server = RedisServer(tmp_path, aof=False, tcp=True)
    server.start()
    url = server.url.replace("/0", "/3")       # a db other than 0: adone() must SELECT it
    monkeypatch.setenv("BENCH_REDIS", url)
    yield url
    server.stop()


def test_adone_counts_each_completion_once_and_marks_first_and_last(tcp_redis, monkeypatch):
    key = "bench:done:" + uuid.uuid4().hex[:8]
    monkeypatch.setattr(common, "KEY", key)
    monkeypatch.setattr(common, "N", 200)
    monkeypatch.setattr(common, "_client", None)

    async def body():
        await asyncio.sleep(0.001)
        await common.adone()

    async def main():
        await asyncio.gather(*[body() for _ in range(200)])

    asyncio.run(main())
    r = redis.Redis.from_url(tcp_redis)
    assert int(r.get(key)) == 200
    assert float(r.get(key + ":first")) <= float(r.get(key + ":last"))
    assert r.lrange(key + ":fin", 0, -1) == [b"1"]
    # nothing went to db 0
    assert redis.Redis.from_url(tcp_redis.replace("/3", "/0")).dbsize() == 0


@pytest.mark.parametrize("pattern, expected", [
    ("engine:asyncio", {"engine asyncio 2x20", "engine asyncio 2x10", "engine asyncio 2x500"}),
    ("engine:asyncio:2x500", {"engine asyncio 2x500"}),
    ("engine:asyncio:20", {"engine asyncio 2x20"}),
    ("engine:asyncio:1x20", set()),
    ("taskiq:async:2x100", {"taskiq async 2x100"}),
    ("arq", {"arq async 2x100", "arq async 2x10", "arq async 2x500"}),
])
def test_configs_patterns_pick_the_asyncio_rows(pattern, expected):
    rows = {c["label"] for w in ("noop", "latency", "asleep") for c in matrix.MATRIX[w]
            if matrix.wanted(c, pattern)}
    assert rows == expected


def test_asyncio_peers_are_compared_with_the_engine_asyncio_row_of_as_many_slots():
    configs = matrix.MATRIX["asleep"]
    for c in configs:
        if c["system"] in matrix.ASYNC_PEERS:
            assert report.engine_peer(c, configs)["label"] == "engine asyncio 2x500"
    noop = matrix.MATRIX["noop"]
    taskiq = next(c for c in noop if c["system"] == "taskiq")
    assert report.engine_peer(taskiq, noop)["pool"] == "asyncio"


def test_the_latency_floor_round_trips_through_a_bare_consumer(tcp_redis, capsys):
    import ceiling_driver
    # Given the floor's driver against a private Redis
    code = ceiling_driver.main(["--redis", tcp_redis, "--workload", "latency", "--n", "20",
                                "--pool", "bare", "--samples", "--json"])
    # Then every round trip came back with its echo, and its figures are the latency row's
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and "error" not in out, out
    assert len(out["latencies_ms"]) == 20
    assert 0 < out["min_ms"] <= out["p50_ms"] <= out["max_ms"]
    # and its consumer is gone with the driver (Redis sees its connection close)
    client, deadline = redis.Redis.from_url(tcp_redis), time.monotonic() + 30
    while [c for c in client.client_list() if c.get("cmd") == "xreadgroup"]:
        assert time.monotonic() < deadline, "the floor's consumer outlived its driver"
        time.sleep(0.05)


def test_the_floor_is_a_latency_row_and_its_ratio_is_information():
    # "redis-py" picks the ceiling on noop and the floor on latency
    labels = {w: [c["label"] for c in matrix.MATRIX[w] if matrix.wanted(c, "redis-py")]
              for w in ("noop", "latency")}
    assert labels == {"noop": ["redis-py ceiling"], "latency": ["redis-py floor"]}
    summary = {"latency": {"engine prefork -c 2": {"p50_ms": 1.0},
                           "huey process -c 2": {"p50_ms": 2.0},
                           "redis-py floor": {"p50_ms": 0.5}}}
    bars = {t["target"]: t for t in report.targets(summary)}
    assert bars["latency p50: engine / the redis-py floor"]["value"] == 2.0
    assert bars["latency p50: engine / the redis-py floor"]["met"] is None
    assert bars["latency p50: engine / huey (issue 22)"]["met"] is False
