"""The shape of the worker module of testdrivenio's FastAPI + Celery tutorial project
(github.com/testdrivenio/fastapi-celery, project/worker.py, in its progress-reporting
variant): an app named after the module, URLs read from CELERY_* variables with a local
default, one task with an explicit name reporting PROGRESS. Written here in our words (the
repository states no licence); only the import differs from a Celery module."""

import os
import time

from engine import Engine as Celery


celery = Celery(__name__)
celery.conf.broker_url = os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379")
celery.conf.result_backend = os.environ.get("CELERY_RESULT_BACKEND",
                                            "redis://localhost:6379")


@celery.task(bind=True, name="create_task")
def create_task(self, task_type):
    steps = int(task_type)
    for step in range(steps):
        self.update_state(state="PROGRESS", meta={"current": step, "total": steps})
        time.sleep(0.5)
    return True
