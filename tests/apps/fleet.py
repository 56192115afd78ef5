"""An app whose ``engine run`` starts two supervisors (``worker_processes``), and one whose
setting is not a number."""

from engine import Engine

app = Engine("fleet", worker_processes=2)
bad = Engine("fleet-bad", worker_processes="many")


@app.task
def noop():
    return None
