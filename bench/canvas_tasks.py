"""The tasks of the canvas benchmarks (``bench/test_canvas.py``): no-op chord members, a
callback that counts what it was given, a chain step that adds one. Results are stored,
as a chord's members and a chain's handle need them."""

from engine import Engine

app = Engine("bench.canvas_tasks")   # broker and prefix from the environment


@app.task
def member():
    return None


@app.task
def count(results):
    return len(results)


@app.task
def step(x):
    return x + 1
