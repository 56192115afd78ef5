"""The dashboard's event folding and guards, without Redis, processes or a browser."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from engine.broker import Keys  # noqa: E402
from engine.dashboard.monitor import Monitor  # noqa: E402
from engine.dashboard.web import allowed_hosts, parse_credentials  # noqa: E402

NOW = 1_700_000_000.0


def event(kind, task_id, ts, **fields):
    return {"type": kind, "ts": ts, "worker": "w1", "id": task_id, "task": "t.add", **fields}


def stub_app():
    # only the key names are used until start(); a real Engine would become the current app
    return SimpleNamespace(broker=SimpleNamespace(keys=Keys("t")))


@pytest.fixture
def monitor():
    return Monitor(stub_app())


def test_a_task_record_follows_its_events(monitor):
    # Given the events of a task that was retried once and then failed
    monitor.fold([event("task-received", "a", NOW, queue="default", retries=0),
                  event("task-started", "a", NOW + 1),
                  event("task-retried", "a", NOW + 2, retries=1, exception="E", message="m")])
    monitor.fold([event("task-failed", "a", NOW + 3, exception="x.Boom", message="<b>",
                        traceback="Traceback ...", runtime=0.5)])

    # Then its record holds the last state, the failure and every event
    record = monitor.task("a")
    assert (record["state"], record["retries"], record["queue"]) == ("FAILURE", 1, "default")
    assert (record["exception"], record["message"], record["traceback"]) == \
        ("x.Boom", "<b>", "Traceback ...")
    assert (record["received"], record["started"], record["ended"], record["runtime"]) == \
        (NOW, NOW + 1, NOW + 3, 0.5)
    assert [e["type"] for e in record["timeline"]] == [
        "task-received", "task-started", "task-retried", "task-failed"]
    assert monitor.version == 2


def test_throughput_counts_successes_and_failures_per_second(monitor):
    # Given two successes and a failure in one second, one success two seconds later
    monitor.fold([event("task-succeeded", "a", NOW + 0.1), event("task-succeeded", "b", NOW + 0.9),
                  event("task-failed", "c", NOW + 0.5), event("task-succeeded", "d", NOW + 2.2),
                  event("task-revoked", "e", NOW + 2.3)])

    # When the last five whole seconds are asked for
    series = monitor.throughput(seconds=5, now=NOW + 3.5)

    # Then each second has its counts (revocations are neither)
    assert series["t"] == [int(NOW) - 2 + i for i in range(5)]
    assert series["succeeded"] == [0, 0, 2, 0, 1]
    assert series["failed"] == [0, 0, 1, 0, 0]


def test_task_list_filters_and_pages_newest_first(monitor):
    # Given seven tasks, three of them failed, two named differently
    for i in range(7):
        name = "mail.send" if i < 2 else "t.add"
        kind = "task-failed" if i % 2 else "task-succeeded"
        monitor.fold([{**event(kind, f"id{i}", NOW + i), "task": name}])

    # Then filters combine and pages run newest first
    assert [t["id"] for t in monitor.task_list(per_page=3)["tasks"]] == ["id6", "id5", "id4"]
    last = monitor.task_list(per_page=3, page=3)
    assert ([t["id"] for t in last["tasks"]], last["pages"]) == (["id0"], 3)
    failed = monitor.task_list(state="FAILURE")
    assert [t["id"] for t in failed["tasks"]] == ["id5", "id3", "id1"]
    assert [t["id"] for t in monitor.task_list(state="FAILURE", name="MAIL")["tasks"]] == ["id1"]
    assert monitor.task_list(page=99)["page"] == 1


def test_oldest_tasks_are_forgotten_past_the_limit():
    monitor = Monitor(stub_app(), max_tasks=3)
    monitor.fold([event("task-succeeded", f"id{i}", NOW + i) for i in range(5)])
    assert [t["id"] for t in monitor.task_list()["tasks"]] == ["id4", "id3", "id2"]


def test_credentials_and_hosts():
    assert parse_credentials("admin:pa:ss") == ("admin", "pa:ss")
    assert parse_credentials(None) is None
    for bad in ("admin", "admin:"):
        with pytest.raises(ValueError):
            parse_credentials(bad)
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    # a specific address: itself and the loopback names, plus what the operator adds
    assert allowed_hosts("192.0.2.7", extra=["dash.example.com", "*.corp.example"]) == [
        "127.0.0.1", "localhost", "[::1]", "192.0.2.7", "dash.example.com", "*.corp.example"]
    assert allowed_hosts("2001:db8::7") == ["127.0.0.1", "localhost", "[::1]", "[2001:db8::7]"]
    # a wildcard bind: this machine's names and interface addresses, never "any host"
    wildcard = allowed_hosts("0.0.0.0")
    assert "*" not in wildcard and socket.gethostname().lower() in wildcard
    assert "localhost" in wildcard
    assert allowed_hosts("0.0.0.0", extra=["*"])[-1] == "*"
    with pytest.raises(ValueError, match="pattern"):
        allowed_hosts("0.0.0.0", extra=["dash.*.example"])
