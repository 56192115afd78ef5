"""Worker metrics (``engine run --metrics-port``): what a scrape says after a known mix of
outcomes on a prefork worker, and nothing imported when the port is not set."""

from __future__ import annotations

import datetime as dt
import re
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.worker.metrics import BUCKETS, Histogram, enqueued_at
from tests.apps.basic import add, echo, fail, flaky, sleep
from tests.conftest import wait_for

APP = "tests.apps.metrics"


def metrics_url(worker) -> str:
    found = wait_for(lambda: re.search(r"metrics on http://[^:]+:(\d+)/metrics", worker.log),
                     message="the metrics endpoint's log line")
    return f"http://127.0.0.1:{found.group(1)}/metrics"


def scrape(url: str) -> dict[str, list]:
    """Samples by name: [(labels, value), ...]."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def by(samples: dict, name: str, *keys: str) -> dict:
    return {tuple(labels[k] for k in keys): value for labels, value in samples.get(name, [])}


def test_a_scrape_counts_every_outcome_by_state(app, run_worker):
    worker = run_worker("--pool", "prefork", "-c", "2", "--metrics-port", "0", app=APP)
    url = metrics_url(worker)
    # busy slots are watched while tasks run: never above the slots
    seen: list[tuple[float, float]] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            samples = scrape(url)
            busy = by(samples, "engine_worker_busy_slots", "lane")
            slots = by(samples, "engine_worker_slots", "lane")
            seen.append((busy[("default",)], slots[("default",)]))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        sleeps = [sleep.delay(0.2) for _ in range(6)]
        adds = add.delay_many([(i, i) for i in range(40)])
        fails = [fail.delay(f"metrics {i}") for i in range(5)]
        flakies = [flaky.delay(f"metrics-flaky-{worker.pid}-{i}") for i in range(2)]
        expired = echo.apply_async(("late",), expires=dt.datetime.now(dt.timezone.utc)
                                   - dt.timedelta(seconds=60))
        assert [r.get(timeout=60) for r in adds] == [2 * i for i in range(40)]
        assert [r.get(timeout=60) for r in sleeps] == [0.2] * 6
        assert [r.get(timeout=60) for r in flakies] == [3, 3]
        for r in fails:
            with pytest.raises(Exception, match="metrics"):
                r.get(timeout=60)
        wait_for(lambda: expired.state == "REVOKED", message="the expired task's record")
    finally:
        done.set()
        watcher.join(60)
    assert seen and all(busy <= slots == 2 for busy, slots in seen), seen
    assert any(busy > 0 for busy, _ in seen), "no scrape saw a busy slot"

    samples = scrape(url)
    totals = by(samples, "engine_tasks_total", "task", "queue", "state")
    name = "tests.apps.basic."
    assert totals == {
        (name + "add", "default", "SUCCESS"): 40,
        (name + "sleep", "default", "SUCCESS"): 6,
        (name + "fail", "default", "FAILURE"): 5,
        (name + "flaky", "default", "RETRY"): 4,      # each runs 3 times: 2 retries
        (name + "flaky", "default", "SUCCESS"): 2,
        (name + "echo", "default", "REVOKED"): 1,     # expired: never ran
    }
    ran = {"add": 40, "sleep": 6, "fail": 5, "flaky": 6, "echo": 0}
    for histogram in ("engine_task_runtime_seconds", "engine_task_wait_seconds"):
        counts = by(samples, histogram + "_count", "task", "queue")
        assert counts == {(name + t, "default"): n for t, n in ran.items()}, histogram
        # the +Inf bucket is the count; buckets are cumulative
        buckets = [(labels["le"], v) for labels, v in samples[histogram + "_bucket"]
                   if labels["task"] == name + "sleep"]
        assert buckets[-1] == ("+Inf", 6)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    runtime_sums = by(samples, "engine_task_runtime_seconds_sum", "task", "queue")
    assert runtime_sums[(name + "sleep", "default")] >= 6 * 0.2
    assert by(samples, "engine_worker_busy_slots", "lane") == {("default",): 0}
    assert by(samples, "engine_worker_prefetched", "lane") == {("default",): 0}


def test_without_a_port_nothing_of_the_metrics_is_imported(app, run_worker):
    run_worker("--pool", "threads", "-c", "1", app=APP)   # tasks run in the worker's process
    from tests.apps.metrics import imported
    names = ["prometheus_client", "engine.worker.metrics"]
    assert imported.delay(names).get(timeout=60) == {n: False for n in names}


def test_with_a_port_the_worker_process_has_them(app, run_worker):
    worker = run_worker("--pool", "threads", "-c", "1", "--metrics-port", "0", app=APP)
    metrics_url(worker)
    from tests.apps.metrics import imported
    assert imported.delay(["prometheus_client"]).get(timeout=60) == {"prometheus_client": True}


def test_histogram_buckets_and_entry_id_time():
    h = Histogram()
    for value in (0.00005, 0.0001, 0.2, 99999.0):
        h.observe(value)
    buckets, total, count = h.cumulative()
    assert count == 4 and total == pytest.approx(99999.2001 + 0.00005)
    as_dict = dict(buckets)
    assert as_dict[str(BUCKETS[0])] == 2          # le=0.0001 holds 0.00005 and 0.0001
    assert as_dict["0.25"] == 3 and as_dict[str(BUCKETS[-1])] == 3 and as_dict["+Inf"] == 4
    assert BUCKETS[0] == 0.0001 and BUCKETS[-1] >= 3600
    assert enqueued_at(b"1700000000123-7") == 1700000000.123


def test_a_port_in_use_is_a_clear_error(app, run_worker):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = run_worker("--pool", "prefork", "-c", "1", "--metrics-port", str(port),
                            ready=False)
        assert worker.wait() == 2
        assert f"cannot serve metrics on 0.0.0.0:{port}" in worker.log
        assert "Traceback" not in worker.log
