"""The basic app plus a task that tells which modules its process has imported
(tests/integration/test_metrics.py: nothing of the metrics is imported when they are off)."""

import sys

from tests.apps.basic import app


@app.task
def imported(names):
    return {name: name in sys.modules for name in names}
