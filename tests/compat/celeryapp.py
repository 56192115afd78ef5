"""The app the ported Celery integration cases run on (``engine run -A tests.compat.celeryapp``).

Celery's integration suite runs its worker on the queue ``celery`` with one slot; so does
this one (``tests/compat/conftest.py``), so that reply shapes naming the queue compare as
Celery's do.
"""

from engine import Engine

app = Engine("compat", include=["tests.compat.tasks"])
app.conf.task_default_queue = "celery"
# failures of these modules' exception types come back as those types
app.conf.result_exception_modules = ("tests.compat.tasks",)

# a class-based task is registered by the app that runs it (Celery's case registers it on
# its in-process worker's app)
from tests.compat.tasks import ClassBasedAutoRetryTask  # noqa: E402

app.register_task(ClassBasedAutoRetryTask)
