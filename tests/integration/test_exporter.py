"""``engine exporter``: fleet figures read from Redis, exact per queue, in a bounded number
of commands per scrape however many queues there are."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import exporter
from tests.apps.basic import add
from tests.conftest import ROOT, wait_for


class Exporter:
    def __init__(self, env: dict, log_path) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "exporter", "-A", "tests.apps.basic", "--port",
             "0", "--address", "127.0.0.1"], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        found = wait_for(lambda: self.proc.poll() is not None or re.search(
            r"exporter on http://[^:]+:(\d+)/metrics", log_path.read_text()),
            message="the exporter's log line")
        assert self.proc.poll() is None, log_path.read_text()
        self.url = f"http://127.0.0.1:{found.group(1)}/metrics"

    def scrape(self) -> dict[str, dict]:
        """name -> {labels tuple (sorted items): value}"""
        with urllib.request.urlopen(self.url, timeout=60) as response:
            text = response.read().decode()
        samples: dict[str, dict] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return samples

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log_file.close()


@pytest.fixture
def run_exporter(env, tmp_path):
    started = []

    def start() -> Exporter:
        started.append(Exporter(env, tmp_path / f"exporter-{len(started)}.log"))
        return started[-1]

    yield start
    for e in started:
        e.stop()


def q(name: str) -> tuple:
    return (("queue", name),)


def redis_now(client) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_figures_per_queue_match_redis(app, client, run_worker, run_exporter):
    broker, keys = app.broker, app.broker.keys
    # queue a: 5 sent, 2 delivered to a consumer and not acked
    for i in range(5):
        add.apply_async((i, i), queue="qa")
    broker.ensure_groups(["qa"])
    delivered = client.xreadgroup("engine", "someone", {keys.queue("qa"): ">"}, count=2)
    assert sum(len(entries) for _, entries in delivered) == 2
    # queue b: one delayed, one waiting with no consumer group yet, two dead letters
    add.apply_async((1, 1), queue="qb", countdown=3600)
    add.apply_async((2, 2), queue="qb")
    for reason in ("one", "two"):
        client.execute_command(*broker.dead_letter_command("qb", b"x", reason))
    client.sadd(keys.queues, "qempty")
    worker = run_worker("--pool", "solo", "-Q", "qc")    # serves another queue only
    ex = run_exporter()
    before = redis_now(client)
    samples = ex.scrape()
    after = redis_now(client)

    depth = samples["engine_queue_depth"]
    assert depth[(("priority", "0"), ("queue", "qa"))] == 3
    pending = client.xpending(keys.queue("qa"), "engine")["pending"]
    assert pending == 2
    assert depth[(("priority", "0"), ("queue", "qa"))] == client.xlen(keys.queue("qa")) - pending
    assert depth[(("priority", "0"), ("queue", "qb"))] == client.xlen(keys.queue("qb")) == 1
    assert depth[(("priority", "0"), ("queue", "qempty"))] == 0
    assert samples["engine_queue_unacked"][q("qa")] == 2
    assert samples["engine_queue_unacked"][q("qb")] == 0
    assert samples["engine_queue_delayed"][q("qb")] == 1
    assert samples["engine_queue_delayed"][q("qa")] == 0
    assert samples["engine_dead_letters"][q("qb")] == client.xlen(keys.dlq("qb")) == 2
    assert samples["engine_dead_letters"][q("qa")] == 0
    assert samples["engine_workers_online"][()] == 1
    assert samples["engine_exporter_redis_up"][()] == 1
    # the oldest undelivered entry of qa is its third: its age as Redis's clock tells it
    third = client.xrange(keys.queue("qa"), count=3)[2][0]
    born = int(third.split(b"-")[0]) / 1000
    age = samples["engine_queue_oldest_age_seconds"][q("qa")]
    assert before - born - 0.001 <= age <= after - born + 0.001
    assert samples["engine_queue_oldest_age_seconds"][q("qempty")] == 0
    worker.stop()
    wait_for(lambda: ex.scrape()["engine_workers_online"][()] == 0,
             message="the stopped worker to leave the count")


def test_commands_per_scrape_stay_under_the_bound(app, client, run_exporter):
    keys = app.broker.keys
    n = 1000
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        name = f"many{i}"
        pipe.sadd(keys.queues, name)
        pipe.xadd(keys.queue(name), {"m": b"x"})    # every queue has one waiting: worst case
        if i % 3 == 0:
            pipe.xgroup_create(keys.queue(name), "engine", id="0")
    pipe.execute()
    ex = run_exporter()
    samples = ex.scrape()       # the first scrape also opens the exporter's connection
    assert len(samples["engine_queue_depth"]) == n
    assert all(v == 1 for v in samples["engine_queue_depth"].values())
    assert all(v >= 0 for v in samples["engine_queue_oldest_age_seconds"].values())

    def processed() -> int:
        return int(client.info("stats")["total_commands_processed"])

    start = processed()
    ex.scrape()
    used = processed() - start - 1      # less the INFO that read 'start'
    assert 0 < used <= exporter.commands_bound(n), used
    assert exporter.commands_bound(n) == 4 + 5 * n


def test_depth_per_priority_level_equals_each_streams_xlen(app, client, run_exporter):
    broker, keys = app.broker, app.broker.keys
    # Given a queue with entries at priorities 0, 4 and 9 (one of level 4 delivered, not
    # acked) and another queue with level 2 only
    add.apply_async((0, 0), queue="qp")
    for i in range(3):
        add.apply_async((i, i), queue="qp", priority=4)
    add.apply_async((9, 9), queue="qp", priority=9)
    add.apply_async((2, 2), queue="qo", priority=2)
    broker.ensure_groups(["qp", "qo"], [("qp", 4), ("qp", 9), ("qo", 2)])
    got = client.xreadgroup("engine", "someone", {keys.queue("qp", 4): ">"}, count=1)
    assert len(got[0][1]) == 1
    ex = run_exporter()
    samples = ex.scrape()
    depth = {(dict(k)["queue"], dict(k)["priority"]): v
             for k, v in samples["engine_queue_depth"].items()}
    # Then each level is its own series, equal to its stream's XLEN less what is pending
    assert depth == {("qp", "0"): 1, ("qp", "4"): 2, ("qp", "9"): 1,
                     ("qo", "0"): 0, ("qo", "2"): 1}
    for (queue, level), value in depth.items():
        stream = keys.queue(queue, int(level))
        pending = client.xpending(stream, "engine")["pending"]
        assert value == client.xlen(stream) - pending
    assert samples["engine_queue_unacked"][q("qp")] == 1
    # And the oldest age is the queue's oldest undelivered entry at any level (its first)
    first = client.xrange(keys.queue("qp"), count=1)[0][0]
    born = int(first.split(b"-")[0]) / 1000
    seconds, micros = client.time()
    assert samples["engine_queue_oldest_age_seconds"][q("qp")] <= seconds + micros / 1e6 - born
    assert samples["engine_queue_oldest_age_seconds"][q("qp")] >= (
        samples["engine_queue_oldest_age_seconds"][q("qo")])

    # And one scrape stays within the bound with 2 queues and 3 levels above 0
    def processed() -> int:
        return int(client.info("stats")["total_commands_processed"])
    start = processed()
    ex.scrape()
    used = processed() - start - 1
    assert 0 < used <= exporter.commands_bound(2, 3) == 4 + 10 + 9, used
