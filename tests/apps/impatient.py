"""An app whose worker gives up on an unreachable broker after two retries (1 s + 2 s)."""

from engine import Engine

app = Engine("impatient", broker_connection_max_retries=2)


@app.task
def noop():
    return None
