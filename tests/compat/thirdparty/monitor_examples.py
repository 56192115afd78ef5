"""The shape of Flower's example tasks module (github.com/mher/flower, examples/tasks.py,
BSD-3-Clause), written here in our words with the same app construction, names,
signatures and behaviour; only the import differs from a Celery module. The broker and
backend it names are not ours: ENGINE_BROKER_URL and ENGINE_RESULT_BACKEND override them,
as they override any URL set in code (tests/compat/README.md)."""

import time
from datetime import datetime

from engine import Engine as Celery


app = Celery("tasks", broker="amqp://", backend="amqp")


@app.task
def add(x, y):
    return x + y


@app.task
def sleep(seconds):
    time.sleep(seconds)


@app.task
def echo(msg, timestamp=False):
    if not timestamp:
        return msg
    return "%s: %s" % (datetime.now(), msg)


@app.task
def error(msg):
    raise Exception(msg)


if __name__ == "__main__":
    app.start()
