"""The seed example: one task, no configuration (the embedded Redis is used)."""

from engine import Engine

app = Engine("tasks")


@app.task
def hello(name):
    return f"hello {name}"


@app.task
def add(x, y):
    return x + y
