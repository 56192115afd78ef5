"""Log formats of every ``engine`` process: text for people, JSON (one object a line) for machines.

``configure`` installs one stderr handler on the root logger with either formatter; the CLI
calls it (``--log-format``, setting ``worker_log_format``). Worker log calls about a task
pass its context with ``extra=task_context(...)``: the JSON formatter writes those keys
(``task_id``, ``task``, ``queue``, ``worker``) on the line, and a task's traceback, which
comes back from a pool as text rather than as a live exception, rides in the ``traceback``
attribute so that both formats print it the way they print ``exc_info``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from engine.exceptions import ConfigurationError

TEXT = "text"
JSON = "json"
FORMATS = (TEXT, JSON)

#: record attributes copied onto a JSON line when a log call set them (``extra=``)
CONTEXT_KEYS = ("task_id", "task", "queue", "worker")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


def task_context(task_id: str, task: str, queue: str, worker: str,
                 traceback: str | None = None) -> dict[str, Any]:
    """The ``extra=`` of a log call about one task (with its traceback text, if any)."""
    context: dict[str, Any] = {"task_id": task_id, "task": task, "queue": queue,
                               "worker": worker}
    if traceback:
        context["traceback"] = traceback
    return context


class TextFormatter(logging.Formatter):
    """The classic one-line format; a task's traceback text follows the line, as
    ``exc_info`` would."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        traceback = getattr(record, "traceback", None)
        if traceback:
            line = f"{line}\n{traceback.rstrip()}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    the task context where the call gave it, ``traceback`` for an exception (``exc_info``
    or a task's traceback text), and ``process``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        traceback = getattr(record, "traceback", None)
        if record.exc_info:
            traceback = self.formatException(record.exc_info)
        elif record.stack_info:
            traceback = self.formatStack(record.stack_info)
        if traceback:
            line["traceback"] = traceback
        # default=str: a non-JSON value in the message args or extra never loses the line
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    if fmt == JSON:
        return JsonFormatter()
    if fmt == TEXT:
        return TextFormatter()
    raise ConfigurationError(f"unknown log format {fmt!r} (expected one of "
                             f"{', '.join(FORMATS)})")


def configure(level: str = "info", fmt: str = TEXT) -> None:
    """One stderr handler on the root logger in format ``fmt``, replacing any other."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
