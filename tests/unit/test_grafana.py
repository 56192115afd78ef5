"""docs/grafana-engine.json and docs/alerts.yml: well-formed, and every PromQL expression in
them names only metrics (and labels) that engine's collectors actually expose. The names
come from the collectors themselves (the worker's ``WorkerCollector`` and the exporter's
``FleetCollector`` on the test Redis), rendered by prometheus_client as Prometheus would
scrape them, never from a list written here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine import exporter
from engine.worker.metrics import TaskFigures, WorkerCollector, WorkerMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: labels Prometheus itself adds to every scraped series, and the histograms' bucket label
SCRAPE_LABELS = {"instance", "job", "le"}
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label lists,
    matchers, ranges and Grafana variables left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _LABEL_LISTS.sub(" ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, start = found.group(), found.start()
        if start and (expr[start - 1].isdigit() or expr[start - 1] == "."):
            continue   # the exponent or unit of a number (1e3, 0.5)
        if expr[found.end():].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue   # a function or an aggregation
        names.add(word)
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression matches on ``{...}`` or groups by."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    found = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        found |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for _, names in _LABEL_LISTS.findall(expr):
        found |= {n.strip() for n in names.split(",") if n.strip()}
    return found


@pytest.fixture(scope="module")
def exposed(redis_server) -> tuple[set[str], set[str]]:
    """(every sample name, every label) engine serves: the worker's collector with one
    task's figures, the exporter's reading a real Redis with one queue."""
    import redis

    from engine.broker import Keys
    metrics = WorkerMetrics()
    figures = TaskFigures()
    figures.states["SUCCESS"] = 1
    figures.runtime.observe(0.01)
    figures.wait.observe(0.001)
    metrics.tasks[("tasks.add", "default")] = figures
    registry = CollectorRegistry(auto_describe=False)
    # the lane gauges' families are built whatever the lanes; no lane gives no samples
    registry.register(WorkerCollector(metrics, SimpleNamespace(inflight={}, lanes=[])))
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys("grafana-test")
    try:
        client.sadd(keys.queues, "default")
        client.xgroup_create(keys.queue("default"), "engine", id="0", mkstream=True)
        client.xadd(keys.queue("default"), {"m": b"x"})
        registry.register(exporter.FleetCollector(client, keys, lost_after=10.0))
        text = generate_latest(registry).decode()
    finally:
        client.delete(keys.queues, keys.queue("default"))
        client.close()
    names, labels = set(), set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(
            family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    assert "engine_queue_depth" in names and "engine_tasks_total" in names   # both read
    return names, labels


def dashboard() -> dict:
    return json.loads((DOCS / "grafana-engine.json").read_text())


def dashboard_exprs(board: dict) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) \
                else variable["query"]
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert found, query
            exprs.append(f"{found.group(1)}{{{found.group(2)}=\"\"}}")
    return exprs


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((DOCS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_expression_reader_finds_metric_and_label_names():
    expr = ('histogram_quantile(0.99, sum by (task, le) (rate(engine_x_bucket{queue=~"$q"}'
            '[$__rate_interval]))) / on() sum(engine_y) > 1e3 and absent(engine_z)')
    assert metric_names(expr) == {"engine_x_bucket", "engine_y", "engine_z"}
    assert label_names(expr) == {"task", "le", "queue"}


def test_every_dashboard_expression_names_only_exposed_metrics(exposed):
    names, labels = exposed
    board = dashboard()
    exprs = dashboard_exprs(board)
    used: set[str] = set()
    for expr in exprs:
        found = metric_names(expr)
        assert found, f"no metric in {expr!r}"
        assert found <= names, f"{expr!r} names {sorted(found - names)}, not exposed"
        assert label_names(expr) <= labels | SCRAPE_LABELS, expr
        used |= found
    # the panels asked for: throughput per state, runtime quantiles, busy vs slots, depth
    # per queue and priority, oldest age, dead letters, workers online
    for metric in ("engine_tasks_total", "engine_task_runtime_seconds_bucket",
                   "engine_worker_busy_slots", "engine_worker_slots", "engine_queue_depth",
                   "engine_queue_oldest_age_seconds", "engine_dead_letters",
                   "engine_workers_online"):
        assert metric in used, metric
    assert any("by (queue, priority)" in e and "engine_queue_depth" in e for e in exprs)
    assert any("by (state)" in e and "engine_tasks_total" in e for e in exprs)


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable():
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["title"] and board["uid"] and isinstance(board["panels"], list)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        grid = p["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for target in p["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var.startswith("__"), (var, p["title"])


def test_alert_rules_name_only_exposed_metrics(exposed):
    names, labels = exposed
    rules = alert_rules()
    alerts = {rule["alert"] for rule in rules}
    assert {"EngineQueueBacklogOld", "EngineDeadLettersGrowing", "EngineNoWorkers"} <= alerts
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                             "keep_firing_for"}, rule
        assert re.fullmatch(r"\d+[smhd]", rule.get("for", "0s")), rule
        found = metric_names(rule["expr"])
        assert found and found <= names, (rule["alert"], sorted(found - names))
        assert label_names(rule["expr"]) <= labels | SCRAPE_LABELS, rule["alert"]
