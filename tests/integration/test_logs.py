"""Worker logs: ``--log-format json`` writes one JSON object a line; a task failure is an
ERROR line with its traceback and the task's context, a retry a WARNING."""

from __future__ import annotations

import json
import logging

import pytest

from engine import logs
from engine.exceptions import ConfigurationError
from tests.apps.basic import add, fail, flaky
from tests.conftest import wait_for


def json_lines(text: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (fails on the first line that is not one)."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(value, dict), f"line {number} is not an object: {line!r}"
        lines.append(value)
    return lines


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_json_logs_every_line_parses_and_a_failure_is_an_error_with_its_traceback(
        app, run_worker, pool):
    worker = run_worker("--pool", pool, "-c", "2", "--log-format", "json", "-n", "jsonlogs@%h")
    failed = fail.delay("boom in the task")
    retried = flaky.delay(f"flaky-{failed.id}")
    with pytest.raises(Exception, match="boom in the task"):
        failed.get(timeout=60)
    assert retried.get(timeout=60) == 3
    assert add.delay(1, 2).get(timeout=60) == 3

    def failure_line():
        return [line for line in json_lines(worker.log) if line.get("task_id") == failed.id
                and line["level"] == "ERROR"]

    (line,) = wait_for(failure_line, message="the failure's log line")
    assert worker.stop() == 0
    lines = json_lines(worker.log)
    assert all({"ts", "level", "logger", "message"} <= set(entry) for entry in lines)
    assert line["task"] == "tests.apps.basic.fail"
    assert line["queue"] == "default"
    assert line["worker"].startswith("jsonlogs@")
    assert line["logger"] == "engine.worker"
    assert "boom in the task" in line["message"]
    # the task's own traceback, as the pool reported it: the raising frame and the exception
    assert "raise CustomError(message)" in line["traceback"]
    assert "CustomError: boom in the task" in line["traceback"]
    retries = [entry for entry in lines if entry.get("task_id") == retried.id
               and "will retry" in entry["message"]]
    assert [entry["level"] for entry in retries] == ["WARNING", "WARNING"]
    assert all(entry["task"] == "tests.apps.basic.flaky" and entry["queue"] == "default"
               and entry["worker"] == line["worker"] for entry in retries)
    assert any("ready:" in entry["message"] for entry in lines)


def test_the_setting_worker_log_format_turns_json_on(app, run_worker):
    worker = run_worker("--pool", "solo", extra_env={"ENGINE_APP": "tests.apps.basic"},
                        app="tests.apps.json_logs")
    failed = fail.delay("from the setting")
    with pytest.raises(Exception, match="from the setting"):
        failed.get(timeout=60)
    assert worker.stop() == 0
    lines = json_lines(worker.log)
    (line,) = [entry for entry in lines if entry.get("task_id") == failed.id]
    assert line["level"] == "ERROR" and "CustomError: from the setting" in line["traceback"]


def test_text_format_prints_a_failure_with_its_traceback(app, run_worker):
    worker = run_worker("--pool", "threads", "-c", "1")
    failed = fail.delay("text boom")
    with pytest.raises(Exception, match="text boom"):
        failed.get(timeout=60)
    wait_for(lambda: "CustomError: text boom" in worker.log.split(f"[{failed.id}] failed")[-1],
             message="the traceback after the failure line")
    (failure,) = [line for line in worker.log.splitlines() if f"[{failed.id}] failed" in line]
    assert " ERROR " in failure


def test_formatter_unit(capsys):
    record = logging.LogRecord("engine.worker", logging.ERROR, __file__, 1, "a %s", ("b",),
                               None)
    for key, value in logs.task_context("id1", "t", "q", "w", "Traceback: x").items():
        setattr(record, key, value)
    line = json.loads(logs.JsonFormatter().format(record))
    assert (line["message"], line["level"], line["task_id"], line["traceback"]) == (
        "a b", "ERROR", "id1", "Traceback: x")
    try:
        raise KeyError("k")
    except KeyError:
        import sys
        exc_record = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (),
                                       sys.exc_info())
    line = json.loads(logs.JsonFormatter().format(exc_record))
    assert "KeyError: 'k'" in line["traceback"] and "task_id" not in line
    with pytest.raises(ConfigurationError):
        logs.formatter("xml")


def test_an_isolated_lane_process_logs_json_too(app, run_worker):
    # a gevent lane runs in an engine run child of its own: it must get the format
    worker = run_worker("--lane", "default=gevent:2", "--log-format", "json")
    failed = fail.delay("boom in the lane")
    with pytest.raises(Exception, match="boom in the lane"):
        failed.get(timeout=60)
    (line,) = wait_for(lambda: [entry for entry in json_lines(worker.log)
                                if entry.get("task_id") == failed.id],
                       message="the lane process's failure line")
    assert line["level"] == "ERROR" and "CustomError: boom in the lane" in line["traceback"]
    assert worker.stop() == 0
    json_lines(worker.log)
